/**
 * Reads: looking objects up, listing them in S3's order, and reading their bytes. Everything
 * here works on the in-memory index and the block files; nothing waits for a writer.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlockReader } from './blocks.js';
import { type BodyCache, CACHED_BODY_MAX } from './body-cache.js';
import { type IndexEntry, type ObjectIndex, fromRawKey, toRawKey } from './object-index.js';
import { decodeMetadata } from './schema.js';

/** What a client sees of an object. */
export interface ObjectInfo {
  key: string;
  size: number;
  /** Unquoted ETag; for objects the original wrote, computed on first use (see `etagOf`). */
  etag: string | undefined;
  lastModified: Date;
  metadata: Record<string, string>;
  /** Opaque handle for reads. */
  readonly entry: IndexEntry;
  /** The revision that wrote this version (its version id), when known. */
  version?: number;
}

export interface ListOptions {
  prefix?: string;
  /** Exclusive start key (S3's marker / start-after / continuation). */
  after?: string;
  delimiter?: string;
  limit: number;
}

export interface ListResult {
  objects: ObjectInfo[];
  commonPrefixes: string[];
  truncated: boolean;
  /** The last key or common prefix returned, when truncated. */
  nextMarker?: string;
}

export class ObjectReader {
  constructor(
    private readonly index: ObjectIndex,
    private readonly blocks: BlockReader,
    /** Block id -> file time in seconds: the write time of objects the original wrote. */
    private readonly blockTimes: ReadonlyMap<number, number>,
    private readonly cache: BodyCache,
  ) {}

  /** The live object under `key`, or undefined. */
  head(key: string): ObjectInfo | undefined {
    const entry = this.index.get(toRawKey(key));
    return entry && this.info(key, entry);
  }

  /** The ETag of an object; for one the original wrote (no stored MD5), hashes it once. */
  async etagOf(info: ObjectInfo): Promise<string> {
    if (info.etag !== undefined) return info.etag;
    const hash = createHash('md5');
    await pipeline(this.createReadStream(info), hash);
    const md5 = hash.digest('hex');
    info.entry.md5 = md5;
    this.index.rememberMd5(toRawKey(info.key), info.entry, md5);
    info.etag = md5;
    return md5;
  }

  /** Bytes [start, end] (inclusive) of an object, or all of it. */
  createReadStream(info: ObjectInfo, start = 0, end = info.size - 1): Readable {
    const { entry } = info;
    const [from, length] = clampRange(entry.size, start, end);
    if (length === 0) return Readable.from([]);
    return this.blocks.stream(entry.block, entry.offset + from, length);
  }

  /** Gives back a chunk of `createReadStream` nothing holds any more (see BlockReader.recycle). */
  recycle(chunk: Uint8Array): void {
    this.blocks.recycle(chunk);
  }

  /** Bytes [start, end] (inclusive) of an object as one buffer: for small reads. */
  async read(info: ObjectInfo, start = 0, end = info.size - 1): Promise<Buffer> {
    const { block, offset, size } = info.entry;
    const [from, length] = clampRange(size, start, end);
    if (size > CACHED_BODY_MAX) return this.blocks.read(block, offset + from, length);
    // A small object is read, and kept, whole: the next read of any part of it is a memory copy.
    let body = this.cache.get(block, offset, size);
    if (!body) {
      body = await this.blocks.read(block, offset, size);
      this.cache.set(block, offset, [body]);
    }
    return from === 0 && length === size ? body : body.subarray(from, from + length);
  }

  /** A page of keys in UTF-8 byte order, with S3's delimiter roll-up. */
  list(opts: ListOptions): ListResult {
    const prefix = toRawKey(opts.prefix ?? '');
    const after = opts.after === undefined ? undefined : toRawKey(opts.after);
    const delimiter = opts.delimiter ? toRawKey(opts.delimiter) : undefined;
    const result: ListResult = { objects: [], commonPrefixes: [], truncated: false };
    if (opts.limit <= 0) return result;
    let count = 0;
    let last: string | undefined;
    // Raw keys are strings of byte values 0..255, so appending U+0100 sorts after every key
    // that starts with a given string.
    let from = after !== undefined && after >= prefix ? after : prefix;
    let skipEqual = after !== undefined && after >= prefix;
    scan: for (;;) {
      for (const raw of this.index.keysFrom(from)) {
        if (skipEqual && raw === from) continue;
        if (!raw.startsWith(prefix)) break scan;
        if (delimiter) {
          const at = raw.indexOf(delimiter, prefix.length);
          if (at >= 0) {
            const common = raw.slice(0, at + delimiter.length);
            from = common + '\u0100';
            skipEqual = false;
            if (after !== undefined && common <= after) continue scan;
            if (count === opts.limit) {
              result.truncated = true;
              break scan;
            }
            result.commonPrefixes.push(fromRawKey(common));
            last = common;
            count++;
            continue scan;
          }
        }
        if (count === opts.limit) {
          result.truncated = true;
          break scan;
        }
        result.objects.push(this.info(fromRawKey(raw), this.index.get(raw)!));
        last = raw;
        count++;
      }
      break;
    }
    if (result.truncated && last !== undefined) result.nextMarker = fromRawKey(last);
    return result;
  }

  info(key: string, entry: IndexEntry, version?: number): ObjectInfo {
    const mtime = entry.mtime || this.blockTimes.get(entry.block) || 0;
    return {
      version,
      key,
      size: entry.size,
      etag: entry.etag ?? entry.md5,
      lastModified: new Date(mtime * 1000),
      metadata: decodeMetadata(entry.metadataBytes()),
      entry,
    };
  }
}

/**
 * The part of [start, end] (inclusive) that lies within an object of `size` bytes, as
 * [offset, length]: a read never runs into the bytes of the next object in the block.
 */
function clampRange(size: number, start: number, end: number): [number, number] {
  const from = Math.max(0, Math.floor(start));
  const to = Math.min(size - 1, Math.floor(end));
  return to < from ? [from, 0] : [from, to - from + 1];
}
