/**
 * The local directory in front of the upstream tier. With a cache size, sealed blocks that are
 * safely upstream may be evicted from the local disk; to the engine they are still there: they
 * are listed, stat'ed and read like any block, and their reads become ranged GETs upstream (with
 * a deadline, so a GET of an evicted object while upstream is down fails in seconds with 503).
 * Everything else (the journal, the db, blocks being written, scratch) is the local directory.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { RemoteBucket } from './remote.js';
import { type FileInfo, type ReadableFile, type Storage, type WritableFile, fileStream } from './storage.js';

/** How long a read of an evicted block may wait for upstream. */
export const REMOTE_READ_TIMEOUT_MS = 5000;

class RemoteFile implements ReadableFile {
  constructor(
    readonly name: string,
    private readonly remote: RemoteBucket,
    private readonly length: number,
  ) {}

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const n = Math.min(length, this.length - position);
    if (n <= 0) return 0;
    const bytes = await this.remote.getRange(this.name, position, n, REMOTE_READ_TIMEOUT_MS);
    buffer.set(bytes, offset);
    return n;
  }

  async size(): Promise<number> {
    return this.length;
  }

  async close(): Promise<void> {}
}

/** A local file whose reads mark it used (for least-recently-used eviction). */
class TouchedFile implements ReadableFile {
  constructor(
    private readonly file: ReadableFile,
    private readonly touch: () => void,
  ) {}

  get name(): string {
    return this.file.name;
  }

  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    this.touch();
    return this.file.read(buffer, offset, length, position);
  }

  size(): Promise<number> {
    return this.file.size();
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

export class TieredStorage implements Storage {
  /** Sealed blocks upstream (name -> size), as the last manifest written says. */
  private upstreamBlocks = new Map<string, number>();
  /** When each local block was last read (ms), for eviction. */
  private readonly lastUsed = new Map<string, number>();
  private upstreamTimeMs = 0;
  /** Blocks removed (compaction): never named again, even by a manifest written just before. */
  private readonly removed = new Set<string>();

  constructor(
    readonly local: Storage & { root: string },
    readonly remote: RemoteBucket,
  ) {}

  get root(): string {
    return this.local.root;
  }

  /** The blocks the last manifest upstream names, and when it was written. */
  setUpstreamBlocks(blocks: Record<string, number>, writtenMs: number): void {
    this.upstreamBlocks = new Map(Object.entries(blocks).filter(([name]) => !this.removed.has(name)));
    this.upstreamTimeMs = writtenMs;
  }

  isUpstream(name: string): boolean {
    return this.upstreamBlocks.has(name);
  }

  private localPath(name: string): string {
    return path.join(this.local.root, name);
  }

  /** Whether a block is only upstream (evicted, or never fetched by a restore). */
  isEvicted(name: string): boolean {
    return this.upstreamBlocks.has(name) && !fs.existsSync(this.localPath(name));
  }

  /** Local sealed blocks that are safely upstream, least recently read first. */
  evictionCandidates(localBlocks: Iterable<string>): string[] {
    return [...localBlocks].filter((n) => this.upstreamBlocks.has(n)).sort((a, b) => (this.lastUsed.get(a) ?? 0) - (this.lastUsed.get(b) ?? 0));
  }

  forgetUse(name: string): void {
    this.lastUsed.delete(name);
  }

  async list(): Promise<string[]> {
    const names = new Set(await this.local.list());
    for (const name of this.upstreamBlocks.keys()) names.add(name);
    return [...names];
  }

  async stat(name: string): Promise<FileInfo | undefined> {
    const info = await this.local.stat(name);
    if (info) return info;
    const size = this.upstreamBlocks.get(name);
    return size === undefined ? undefined : { size, mtimeMs: this.upstreamTimeMs };
  }

  create(name: string, opts?: { exclusive?: boolean }): Promise<WritableFile> {
    return this.local.create(name, opts);
  }

  openWrite(name: string): Promise<WritableFile> {
    return this.local.openWrite(name);
  }

  async openRead(name: string): Promise<ReadableFile> {
    try {
      const file = await this.local.openRead(name);
      if (!/^block\d+$/.test(name)) return file;
      return new TouchedFile(file, () => this.lastUsed.set(name, Date.now()));
    } catch (err) {
      const size = this.upstreamBlocks.get(name);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || size === undefined) throw err;
      return new RemoteFile(name, this.remote, size);
    }
  }

  readStream(name: string, opts?: { highWaterMark?: number }): Readable {
    const size = this.upstreamBlocks.get(name);
    if (size !== undefined && !fs.existsSync(this.localPath(name))) return fileStream(new RemoteFile(name, this.remote, size));
    return this.local.readStream(name, opts);
  }

  copy(from: string, to: string): Promise<void> {
    return this.local.copy(from, to);
  }

  rename(from: string, to: string): Promise<void> {
    return this.local.rename(from, to);
  }

  /** A block removed (compaction) is gone from here too; upstream, it goes once a manifest no longer names it. */
  async remove(name: string): Promise<void> {
    if (/^block\d+$/.test(name)) this.removed.add(name);
    this.upstreamBlocks.delete(name);
    this.lastUsed.delete(name);
    await this.local.remove(name);
  }

  /** Frees a block's local copy; it stays readable from upstream. */
  async evict(name: string): Promise<void> {
    if (!this.upstreamBlocks.has(name)) throw new Error(`${name} is not upstream: it cannot be evicted`);
    this.lastUsed.delete(name);
    await this.local.remove(name);
  }

  syncDir(): Promise<void> {
    return this.local.syncDir();
  }

  clearScratch(): Promise<void> {
    return this.local.clearScratch();
  }
}
