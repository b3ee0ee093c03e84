/**
 * Multipart uploads. Parts live in the store's scratch directory, outside the history, until
 * the upload completes; completion streams them, in order, into one object through `put` (an
 * object must be contiguous in a block). The scratch directory is emptied whenever a writer
 * opens the store, so an upload interrupted by a restart leaves nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BodySizeMismatchError, DigestMismatchError, StoreError } from './errors.js';
import { MAX_OBJECT_SIZE, SCRATCH_DIR } from './files.js';
import type { ObjectInfo, Store } from './store.js';

export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PART_NUMBER = 10000;

export type UploadErrorCode = 'NoSuchUpload' | 'InvalidPart' | 'InvalidPartOrder' | 'EntityTooSmall' | 'EntityTooLarge';

/** A failure S3 reports with its own code; the S3 layer maps `code` one to one. */
export class UploadError extends StoreError {
  constructor(
    readonly s3Code: UploadErrorCode,
    message: string,
  ) {
    super(`E${s3Code.toUpperCase()}`, message);
  }
}

export interface Upload {
  id: string;
  key: string;
  metadata: Record<string, string>;
  initiated: Date;
  parts: Map<number, Part>;
}

export interface Part {
  number: number;
  /** Hex MD5 of the part. */
  etag: string;
  size: number;
  lastModified: Date;
}

export class MultipartUploads {
  private readonly uploads = new Map<string, Upload>();
  private readonly root: string;

  constructor(private readonly store: Store) {
    this.root = path.join(store.dir, SCRATCH_DIR, 'uploads');
  }

  async create(key: string, metadata: Record<string, string>): Promise<Upload> {
    const id = randomBytes(16).toString('hex');
    await fsp.mkdir(path.join(this.root, id), { recursive: true });
    const upload: Upload = { id, key, metadata, initiated: new Date(), parts: new Map() };
    this.uploads.set(id, upload);
    return upload;
  }

  /** The upload `id` for `key`; NoSuchUpload when there is none. */
  get(id: string, key?: string): Upload {
    const upload = this.uploads.get(id);
    if (!upload || (key !== undefined && upload.key !== key)) throw new UploadError('NoSuchUpload', `no upload ${id}`);
    return upload;
  }

  /** Uploads in key order, then by initiation time. */
  list(): Upload[] {
    return [...this.uploads.values()].sort((a, b) =>
      a.key === b.key ? a.initiated.getTime() - b.initiated.getTime() : Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)),
    );
  }

  /** Stores one part (replacing an earlier one with the same number). */
  async putPart(id: string, key: string, number: number, body: Readable, expectedSize?: number, expectedMd5?: Buffer): Promise<Part> {
    const upload = this.get(id, key);
    const dir = path.join(this.root, id);
    const tmp = path.join(dir, `${number}.${randomBytes(4).toString('hex')}.tmp`);
    const hash = createHash('md5');
    let size = 0;
    try {
      await pipeline(
        body,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            size += chunk.length;
            if (size > MAX_OBJECT_SIZE) throw new UploadError('EntityTooLarge', 'part larger than the largest object');
            hash.update(chunk);
            yield chunk;
          }
        },
        fs.createWriteStream(tmp),
      );
      const md5 = hash.digest();
      if (expectedSize !== undefined && size !== expectedSize) {
        throw new BodySizeMismatchError(expectedSize, size);
      }
      if (expectedMd5 && !md5.equals(expectedMd5)) {
        throw new DigestMismatchError();
      }
      if (this.uploads.get(id) !== upload) throw new UploadError('NoSuchUpload', `upload ${id} ended while a part was sent`);
      await fsp.rename(tmp, path.join(dir, String(number)));
      const part: Part = { number, etag: md5.toString('hex'), size, lastModified: new Date() };
      upload.parts.set(number, part);
      return part;
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  /** Part `number`'s file, for UploadPartCopy's source side and tests. */
  partFile(id: string, number: number): string {
    return path.join(this.root, id, String(number));
  }

  /**
   * Completes an upload from the client's list of (number, etag): checks it as S3 does, then
   * stores the parts as one object whose ETag is S3's multipart form (md5 of md5s, "-N").
   */
  async complete(id: string, key: string, list: Array<{ number: number; etag: string }>): Promise<ObjectInfo> {
    const upload = this.get(id, key);
    if (list.length === 0) throw new UploadError('InvalidPart', 'You must specify at least one part');
    const parts: Part[] = [];
    let previous = 0;
    for (const { number, etag } of list) {
      if (number <= previous) throw new UploadError('InvalidPartOrder', 'The list of parts was not in ascending order.');
      previous = number;
      const part = upload.parts.get(number);
      if (!part || part.etag !== etag.replace(/"/g, '').toLowerCase()) {
        throw new UploadError('InvalidPart', `Part ${number} was not uploaded, or its ETag does not match.`);
      }
      parts.push(part);
    }
    for (const part of parts.slice(0, -1)) {
      if (part.size < MIN_PART_SIZE) throw new UploadError('EntityTooSmall', `Part ${part.number} is smaller than the minimum of ${MIN_PART_SIZE} bytes.`);
    }
    const size = parts.reduce((n, p) => n + p.size, 0);
    if (size > MAX_OBJECT_SIZE) throw new UploadError('EntityTooLarge', `The object would be ${size} bytes; the limit is ${MAX_OBJECT_SIZE}.`);
    const etagHash = createHash('md5');
    for (const part of parts) etagHash.update(Buffer.from(part.etag, 'hex'));
    const etag = `${etagHash.digest('hex')}-${parts.length}`;
    // No more parts may arrive while the object is written.
    this.uploads.delete(id);
    try {
      const files = parts.map((p) => this.partFile(id, p.number));
      const body = Readable.from(
        (async function* () {
          for (const file of files) yield* fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
        })(),
      );
      return await this.store.put(key, body, { size, metadata: upload.metadata, etag });
    } catch (err) {
      this.uploads.set(id, upload); // the client may retry the completion
      throw err;
    } finally {
      if (!this.uploads.has(id)) await fsp.rm(path.join(this.root, id), { recursive: true, force: true });
    }
  }

  async abort(id: string, key: string): Promise<void> {
    this.get(id, key);
    this.uploads.delete(id);
    await fsp.rm(path.join(this.root, id), { recursive: true, force: true });
  }
}
