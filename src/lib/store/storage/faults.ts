/**
 * A Storage that fails on demand, for tests: wraps another Storage and makes chosen calls throw
 * the error a real file system gives (EIO from fsync, EMFILE from open, ENOSPC from write...).
 * Every call the engine makes goes through the Storage interface, so every call site can be
 * made to fail.
 */
import type { Readable } from 'node:stream';
import type { FileInfo, ReadableFile, Storage, WritableFile } from './storage.js';

export type FaultOp =
  | 'list'
  | 'stat'
  | 'create'
  | 'openWrite'
  | 'openRead'
  | 'readStream'
  | 'copy'
  | 'rename'
  | 'remove'
  | 'syncDir'
  | 'clearScratch'
  | 'write'
  | 'datasync'
  | 'sync'
  | 'truncate'
  | 'read';

export interface FaultRule {
  op: FaultOp;
  /** Only calls on a name that matches (for rename, the source or the target). */
  name?: RegExp;
  /** Let this many matching calls through first. */
  after?: number;
  /** How many calls fail once the rule fires (default: every later one). */
  times?: number;
  /** Fail only every n-th matching call (an intermittent fault). */
  every?: number;
  /** errno code of the error thrown (default EIO). */
  code?: string;
}

interface ActiveRule extends FaultRule {
  seen: number;
  fired: number;
}

/** An error shaped like the one node:fs throws. */
export function ioError(code: string, op: string, name: string): NodeJS.ErrnoException {
  const err = new Error(`${code}: injected failure, ${op} '${name}'`) as NodeJS.ErrnoException;
  err.code = code;
  err.syscall = op;
  err.path = name;
  return err;
}

export class FaultyStorage implements Storage {
  private rules: ActiveRule[] = [];
  /** Files open for writing, by the name they now have. */
  readonly open = new Set<FaultyWritableFile>();
  /** Calls that failed, as "op name", in order. */
  readonly failures: string[] = [];

  constructor(private readonly inner: Storage) {}

  get root(): string {
    return this.inner.root;
  }

  /** Adds a rule; returns this for chaining. */
  fail(rule: FaultRule): this {
    this.rules.push({ ...rule, seen: 0, fired: 0 });
    return this;
  }

  /** Removes every rule (a disk that works again). */
  heal(): void {
    this.rules = [];
  }

  /** Throws if a rule says this call fails. */
  check(op: FaultOp, ...names: string[]): void {
    for (const rule of this.rules) {
      if (rule.op !== op) continue;
      if (rule.name && !names.some((n) => rule.name!.test(n))) continue;
      rule.seen++;
      if (rule.seen <= (rule.after ?? 0)) continue;
      if (rule.every !== undefined && rule.seen % rule.every !== 0) continue;
      if (rule.fired >= (rule.times ?? Infinity)) continue;
      rule.fired++;
      this.failures.push(`${op} ${names.join(' ')}`);
      throw ioError(rule.code ?? 'EIO', op, names[0] ?? '');
    }
  }

  async list(): Promise<string[]> {
    this.check('list', '.');
    return this.inner.list();
  }

  async stat(name: string): Promise<FileInfo | undefined> {
    this.check('stat', name);
    return this.inner.stat(name);
  }

  async create(name: string, opts?: { exclusive?: boolean }): Promise<WritableFile> {
    this.check('create', name);
    return new FaultyWritableFile(this, await this.inner.create(name, opts), name);
  }

  async openWrite(name: string): Promise<WritableFile> {
    this.check('openWrite', name);
    return new FaultyWritableFile(this, await this.inner.openWrite(name), name);
  }

  async openRead(name: string): Promise<ReadableFile> {
    this.check('openRead', name);
    return new FaultyReadableFile(this, await this.inner.openRead(name));
  }

  readStream(name: string, opts?: { highWaterMark?: number }): Readable {
    const stream = this.inner.readStream(name, opts);
    try {
      this.check('readStream', name);
    } catch (err) {
      stream.destroy(err as Error);
    }
    return stream;
  }

  async copy(from: string, to: string): Promise<void> {
    this.check('copy', from, to);
    return this.inner.copy(from, to);
  }

  async rename(from: string, to: string): Promise<void> {
    this.check('rename', from, to);
    await this.inner.rename(from, to);
    // An open file follows its name, so rules on the new name apply to it.
    for (const file of this.open) if (file.name === from) file.name = to;
  }

  async remove(name: string): Promise<void> {
    this.check('remove', name);
    return this.inner.remove(name);
  }

  async syncDir(): Promise<void> {
    this.check('syncDir', '.');
    return this.inner.syncDir();
  }

  async clearScratch(): Promise<void> {
    this.check('clearScratch', '.');
    return this.inner.clearScratch();
  }
}

class FaultyWritableFile implements WritableFile {
  constructor(
    private readonly faults: FaultyStorage,
    private readonly inner: WritableFile,
    public name: string,
  ) {
    faults.open.add(this);
  }

  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    this.faults.check('write', this.name);
    return this.inner.writev(buffers, position);
  }

  async datasync(): Promise<void> {
    this.faults.check('datasync', this.name);
    return this.inner.datasync();
  }

  async sync(): Promise<void> {
    this.faults.check('sync', this.name);
    return this.inner.sync();
  }

  async truncate(size: number): Promise<void> {
    this.faults.check('truncate', this.name);
    return this.inner.truncate(size);
  }

  close(): Promise<void> {
    this.faults.open.delete(this);
    return this.inner.close();
  }
}

class FaultyReadableFile implements ReadableFile {
  constructor(
    private readonly faults: FaultyStorage,
    private readonly inner: ReadableFile,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    this.faults.check('read', this.name);
    return this.inner.read(buffer, offset, length, position);
  }

  size(): Promise<number> {
    return this.inner.size();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
