/** Storage in a local directory: the store's own files, through node:fs. */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { FileInfo, ReadableFile, Storage, WritableFile } from './storage.js';

/** Scratch space (spooled bodies, staged parts); emptied whenever a writer opens the store. */
export const SCRATCH_DIR = 'zipkv-tmp';

class LocalWritableFile implements WritableFile {
  constructor(
    readonly name: string,
    private readonly handle: fsp.FileHandle,
  ) {}

  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    let total = 0;
    for (const b of buffers) total += b.length;
    const { bytesWritten } = await this.handle.writev(buffers as Uint8Array[], position);
    if (bytesWritten >= total) return;
    // A short write (rare on files): finish the rest one buffer at a time.
    let skip = bytesWritten;
    let at = position + bytesWritten;
    for (const b of buffers) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      let rest = b.subarray(skip);
      skip = 0;
      while (rest.length > 0) {
        const { bytesWritten: n } = await this.handle.write(rest, 0, rest.length, at);
        rest = rest.subarray(n);
        at += n;
      }
    }
  }

  datasync(): Promise<void> {
    return this.handle.datasync();
  }

  sync(): Promise<void> {
    return this.handle.sync();
  }

  truncate(size: number): Promise<void> {
    return this.handle.truncate(size);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

class LocalReadableFile implements ReadableFile {
  constructor(
    readonly name: string,
    private readonly handle: fsp.FileHandle,
  ) {}

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.handle.read(buffer, offset, length, position)).bytesRead;
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

export class LocalStorage implements Storage {
  readonly root: string;

  constructor(dir: string) {
    this.root = path.resolve(dir);
  }

  private file(name: string): string {
    return path.join(this.root, name);
  }

  async list(): Promise<string[]> {
    try {
      return await fsp.readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async stat(name: string): Promise<FileInfo | undefined> {
    try {
      const st = await fsp.stat(this.file(name));
      return { size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async create(name: string, opts: { exclusive?: boolean } = {}): Promise<WritableFile> {
    const flags = opts.exclusive ? 'wx' : 'w';
    const file = this.file(name);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(file, flags, 0o600);
    } catch (err) {
      // The scratch directory is made on first use.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !name.startsWith(`${SCRATCH_DIR}/`)) throw err;
      await fsp.mkdir(path.dirname(file), { recursive: true });
      handle = await fsp.open(file, flags, 0o600);
    }
    return new LocalWritableFile(name, handle);
  }

  async openWrite(name: string): Promise<WritableFile> {
    return new LocalWritableFile(name, await fsp.open(this.file(name), 'r+'));
  }

  async openRead(name: string): Promise<ReadableFile> {
    return new LocalReadableFile(name, await fsp.open(this.file(name), 'r'));
  }

  readStream(name: string, opts: { highWaterMark?: number } = {}): Readable {
    return fs.createReadStream(this.file(name), { highWaterMark: opts.highWaterMark ?? 1024 * 1024 });
  }

  async copy(from: string, to: string): Promise<void> {
    await fsp.copyFile(this.file(from), this.file(to));
    await fsp.chmod(this.file(to), 0o600);
  }

  rename(from: string, to: string): Promise<void> {
    return fsp.rename(this.file(from), this.file(to));
  }

  remove(name: string): Promise<void> {
    return fsp.rm(this.file(name), { force: true });
  }

  async syncDir(): Promise<void> {
    const handle = await fsp.open(this.root, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  clearScratch(): Promise<void> {
    return fsp.rm(this.file(SCRATCH_DIR), { recursive: true, force: true });
  }
}
