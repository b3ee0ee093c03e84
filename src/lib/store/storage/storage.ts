/**
 * The one seam between the engine and the bytes: block files, db files, the journal and the
 * scratch area are named files in a `Storage`. The local directory is the first implementation;
 * a fault-injecting wrapper (tests) and a remote tier sit behind the same interface, so the
 * commit path never knows which one it writes to.
 *
 * Names are flat (`block0000000003`, `db0000000001`, `zipkv-journal`), except the scratch area,
 * whose files are `zipkv-tmp/<name>`.
 */
import { Readable } from 'node:stream';

/** A file open for writing at positions of the writer's choosing. */
export interface WritableFile {
  readonly name: string;
  /** Writes `buffers` back to back from `position`; short writes are completed. */
  writev(buffers: readonly Uint8Array[], position: number): Promise<void>;
  /** fdatasync: the written bytes and the size survive a crash. */
  datasync(): Promise<void>;
  /** fsync: also the file's other metadata. */
  sync(): Promise<void>;
  truncate(size: number): Promise<void>;
  close(): Promise<void>;
}

/** A file open for positional reads. */
export interface ReadableFile {
  readonly name: string;
  /** Reads up to `length` bytes at `position` into `buffer[offset..]`; 0 at the end. */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  size(): Promise<number>;
  close(): Promise<void>;
}

export interface FileInfo {
  size: number;
  mtimeMs: number;
}

export interface Storage {
  /** Where the files are, for messages (a directory path, a URL). */
  readonly root: string;
  /** Names of the files at the top level (not the scratch area). */
  list(): Promise<string[]>;
  /** Size and modification time; undefined when there is no such file. */
  stat(name: string): Promise<FileInfo | undefined>;
  /** A new empty file; with `exclusive`, fails if the name exists (EEXIST). */
  create(name: string, opts?: { exclusive?: boolean }): Promise<WritableFile>;
  /** An existing file, for writing where it ends (no truncation). */
  openWrite(name: string): Promise<WritableFile>;
  openRead(name: string): Promise<ReadableFile>;
  /** A stream of the whole file. */
  readStream(name: string, opts?: { highWaterMark?: number }): Readable;
  /** Copies a file's bytes to a new name (replacing it), without syncing. */
  copy(from: string, to: string): Promise<void>;
  /** Atomically replaces `to` with `from`. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing one is not an error. */
  remove(name: string): Promise<void>;
  /** Makes created, renamed and removed names durable (fsync of the directory). */
  syncDir(): Promise<void>;
  /** Removes everything in the scratch area. */
  clearScratch(): Promise<void>;
}

/** Reads exactly `length` bytes at `position`, or fails naming the file. */
export async function readFully(file: ReadableFile, buffer: Uint8Array, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await file.read(buffer, done, length - done, position + done);
    if (n === 0) throw new Error(`${file.name} ends before offset ${position + length}`);
    done += n;
  }
}

/** A stream of a file's bytes from `start`, read in pieces as the consumer asks for them. */
export function fileStream(file: ReadableFile, start = 0, end = Infinity, pieceSize = 1024 * 1024): Readable {
  let position = start;
  return new Readable({
    highWaterMark: pieceSize,
    read(wanted) {
      const length = Math.min(end - position, Math.max(wanted, pieceSize));
      if (length <= 0) return void this.push(null);
      const buf = Buffer.allocUnsafe(length);
      file.read(buf, 0, length, position).then(
        (n) => {
          position += n;
          this.push(n === 0 ? null : buf.subarray(0, n));
        },
        (err: Error) => this.destroy(err),
      );
    },
  });
}
