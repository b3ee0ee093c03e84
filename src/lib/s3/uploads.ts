/**
 * Multipart uploads: what an upload is, the rules for its parts, its limits and its expiry.
 * The engine only keeps bodies aside for us (`store.stage`), commits staged bodies as one object
 * (`store.putStaged`) and frees them (`store.discardStaged`); everything else is policy, here.
 *
 * Uploads live in memory. Their parts are staged bodies in the store's scratch area, which the
 * store empties whenever a writer opens it, so an upload interrupted by a restart is gone.
 *
 * Every change to an upload's records is made synchronously, after the awaits that lead to it,
 * so no request sees half of one: a part that finishes replaces the record of its number in one
 * step (and discards the body it replaced), and an upload that ends (completed, aborted or
 * expired) stops taking parts at once. A part still in flight when its upload ended discards
 * its own staged body when it finishes and answers NoSuchUpload.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { MAX_OBJECT_SIZE } from '../store/files.js';
import type { ObjectInfo, StagedBody, Store } from '../store/store.js';
import { s3Error } from './errors.js';

const MiB = 1024 * 1024;

/** Every part but the last must be at least this long (S3's rule). */
export const MIN_PART_SIZE = 5 * MiB;
/**
 * Part numbers are 1..MAX_PART_NUMBER (S3's rule). A number has one record, so this also caps
 * an upload at 10,000 parts, S3's limit.
 */
export const MAX_PART_NUMBER = 10_000;
/** An upload neither completed nor aborted is dropped, with its parts, this long after it began. */
export const DEFAULT_UPLOAD_EXPIRY_MS = 7 * 24 * 3600 * 1000;
/**
 * Uploads open at once. S3 sets no such limit, but each open upload holds disk (its staged
 * parts) and memory until it ends, and abandoned ones only go at expiry: the cap keeps a client
 * that starts uploads and never finishes them from filling the disk.
 */
export const DEFAULT_MAX_UPLOADS = 1000;

export interface UploadOptions {
  /** How long an upload may stay open (default 7 days). */
  expiryMs?: number;
  /** How many uploads may be open at once (default 1000). */
  maxUploads?: number;
}

export interface Part {
  number: number;
  /** Hex MD5 of the part. */
  etag: string;
  size: number;
  lastModified: Date;
  body: StagedBody;
}

export interface Upload {
  id: string;
  key: string;
  metadata: Record<string, string>;
  initiated: Date;
  /** When the upload expires (ms since the epoch). */
  expiresAt: number;
  parts: Map<number, Part>;
  /** Set while CompleteMultipartUpload writes the object: no part may change meanwhile. */
  completing: boolean;
}

const noSuchUpload = (id: string, why?: string) =>
  s3Error('NoSuchUpload', why === undefined ? undefined : `The specified upload does not exist: it ${why}.`, { UploadId: id });

export class MultipartUploads {
  readonly expiryMs: number;
  readonly maxUploads: number;
  private readonly uploads = new Map<string, Upload>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly store: Store,
    opts: UploadOptions = {},
  ) {
    this.expiryMs = opts.expiryMs ?? DEFAULT_UPLOAD_EXPIRY_MS;
    this.maxUploads = opts.maxUploads ?? DEFAULT_MAX_UPLOADS;
    if (!(Number.isSafeInteger(this.expiryMs) && this.expiryMs > 0)) throw new RangeError('the upload expiry must be a positive number of milliseconds');
    if (!(Number.isSafeInteger(this.maxUploads) && this.maxUploads > 0)) throw new RangeError('the cap on open uploads must be a positive integer');
    // Expired uploads are also dropped when they are next used; the sweep frees the disk of
    // those nobody uses again. A tenth of the expiry, within 100 ms..1 min.
    const every = Math.min(Math.max(Math.floor(this.expiryMs / 10), 100), 60_000);
    this.sweeper = setInterval(() => void this.sweep(), every);
    this.sweeper.unref();
  }

  /** Stops the sweep (the store's scratch area is emptied when it is next opened). */
  close(): void {
    clearInterval(this.sweeper);
  }

  create(key: string, metadata: Record<string, string>): Upload {
    void this.sweep(); // expired uploads leave at once, and do not count against the cap
    if (this.uploads.size >= this.maxUploads) {
      // 503, not 4xx: the request is well formed and would succeed once other uploads end
      // (completed, aborted or expired); the limit is this server's capacity, as S3's SlowDown
      // is, and clients treat a 503 as "try again later" rather than as their mistake.
      throw s3Error(
        'ServiceUnavailable',
        `Too many multipart uploads in progress (at most ${this.maxUploads}): complete or abort some, or wait for them to expire.`,
      );
    }
    const now = Date.now();
    const upload: Upload = {
      id: randomBytes(16).toString('hex'),
      key,
      metadata,
      initiated: new Date(now),
      expiresAt: now + this.expiryMs,
      parts: new Map(),
      completing: false,
    };
    this.uploads.set(upload.id, upload);
    return upload;
  }

  /**
   * The open upload `id` of `key`; NoSuchUpload when there is none, when it belongs to another
   * key, when it has expired (it is dropped now) or while it is being completed.
   */
  get(id: string, key: string): Upload {
    const upload = this.uploads.get(id);
    if (!upload || upload.key !== key) throw noSuchUpload(id);
    // A completion under way reads the parts: it is never cut short, not even by the expiry.
    if (upload.completing) throw noSuchUpload(id, 'is being completed');
    if (this.expired(upload)) {
      void this.end(upload);
      throw noSuchUpload(id, 'has expired');
    }
    return upload;
  }

  /** Open uploads in key order (UTF-8 bytes), then by initiation time. */
  list(): Upload[] {
    void this.sweep();
    return [...this.uploads.values()]
      .filter((u) => !u.completing)
      .sort((a, b) =>
        a.key === b.key ? a.initiated.getTime() - b.initiated.getTime() : Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)),
      );
  }

  /**
   * Stages part `number` (1..MAX_PART_NUMBER) and records it, replacing an earlier part of the
   * same number (whose staged body is discarded). `size` and `expectedMd5` are checked by the
   * store.
   */
  async putPart(id: string, key: string, number: number, body: Readable | Uint8Array, opts: { size?: number; expectedMd5?: Buffer } = {}): Promise<Part> {
    const upload = this.get(id, key);
    const staged = await this.store.stage(body, opts);
    // From the check to the record nothing awaits: the part replaces its number's record in one
    // step, or is discarded because its upload ended meanwhile.
    if (this.uploads.get(id) !== upload || upload.completing || this.expired(upload)) {
      const ended = upload.completing ? 'was being completed while the part was sent' : 'ended while the part was sent';
      await Promise.all([this.uploads.get(id) === upload && !upload.completing ? this.end(upload) : undefined, this.discard(staged)]);
      throw noSuchUpload(id, ended);
    }
    const part: Part = { number, etag: staged.md5.toString('hex'), size: staged.size, lastModified: new Date(), body: staged };
    const replaced = upload.parts.get(number);
    upload.parts.set(number, part);
    if (replaced) await this.discard(replaced.body);
    return part;
  }

  /**
   * Completes an upload from the client's list of (number, etag): checks it as S3 does, then
   * stores the parts as one object whose ETag is S3's multipart form (md5 of the md5s, "-N").
   * On success the upload ends and all its staged parts are discarded; on failure it stays as it
   * was, so that the client can retry.
   */
  async complete(id: string, key: string, list: ReadonlyArray<{ number: number; etag: string }>): Promise<ObjectInfo> {
    const upload = this.get(id, key);
    if (list.length === 0) throw s3Error('InvalidPart', 'You must specify at least one part.');
    const parts: Part[] = [];
    let previous = 0;
    for (const { number, etag } of list) {
      if (number <= previous) throw s3Error('InvalidPartOrder', 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
      previous = number;
      const part = upload.parts.get(number);
      if (!part || part.etag !== etag.replace(/"/g, '').toLowerCase()) {
        throw s3Error('InvalidPart', `One or more of the specified parts could not be found: part ${number} was not uploaded, or its ETag does not match.`);
      }
      parts.push(part);
    }
    for (const part of parts.slice(0, -1)) {
      if (part.size < MIN_PART_SIZE) {
        throw s3Error('EntityTooSmall', `Part ${part.number} is ${part.size} bytes; every part but the last must be at least ${MIN_PART_SIZE} bytes.`, {
          PartNumber: String(part.number),
          ProposedSize: String(part.size),
          MinSizeAllowed: String(MIN_PART_SIZE),
        });
      }
    }
    const size = parts.reduce((n, p) => n + p.size, 0);
    if (size > MAX_OBJECT_SIZE) throw s3Error('EntityTooLarge', `The object would be ${size} bytes; the limit is ${MAX_OBJECT_SIZE}.`);
    const etagHash = createHash('md5');
    for (const part of parts) etagHash.update(Buffer.from(part.etag, 'hex'));
    const etag = `${etagHash.digest('hex')}-${parts.length}`;
    // No part may be replaced (and its body discarded) while the object is written.
    upload.completing = true;
    let info: ObjectInfo;
    try {
      info = await this.store.putStaged(key, parts.map((p) => p.body), { metadata: upload.metadata, etag });
    } catch (err) {
      upload.completing = false;
      throw err;
    }
    await this.end(upload);
    return info;
  }

  /** Ends the upload at once; resolves when its staged parts are freed. */
  async abort(id: string, key: string): Promise<void> {
    await this.end(this.get(id, key));
  }

  /** Drops every expired upload (except one being completed) and frees its parts. */
  async sweep(): Promise<void> {
    const ending: Array<Promise<void>> = [];
    for (const upload of this.uploads.values()) {
      if (!upload.completing && this.expired(upload)) ending.push(this.end(upload));
    }
    await Promise.all(ending);
  }

  private expired(upload: Upload): boolean {
    return Date.now() >= upload.expiresAt;
  }

  /**
   * Ends an upload: it is gone at once (synchronously, before the first await), and the
   * returned promise resolves once its staged parts are freed.
   */
  private async end(upload: Upload): Promise<void> {
    this.uploads.delete(upload.id);
    const bodies = [...upload.parts.values()].map((p) => p.body);
    upload.parts.clear();
    await Promise.all(bodies.map((b) => this.discard(b)));
  }

  /**
   * Frees a staged body. A failure is not the request's: the upload has ended (or the part was
   * replaced) either way, and a body that cannot be removed now goes when the store next opens.
   */
  private async discard(body: StagedBody): Promise<void> {
    await this.store.discardStaged(body).catch(() => undefined);
  }
}
