/**
 * The one decoder of history records, for db files and journal records alike. It walks a Db
 * message as it is decompressed and hands each record to the caller without building an object
 * per record (the hot loop of opening a store). Every `put`/`delete` occurrence is decoded and
 * checked, and protobuf's last-one-wins rules apply; errors name the file and the revision.
 */
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { StoreCorruptError } from './errors.js';
import type { PutFields } from './object-index.js';
import type { Location, RawRecord } from './schema.js';

/** Decompressed bytes are handed over in pieces of this size; large enough to be cheap. */
const READ_CHUNK = 1 << 20;

/** Where the encoded record being handed over lies; reused, valid only during the call. */
export interface RecordBytes {
  buf: Buffer;
  start: number;
  end: number;
}

export interface ReplayHandler {
  /** A put; `fields` is reused for the next record, so copy what must be kept. */
  put(rawKey: string, fields: PutFields, rev: number, bytes: RecordBytes): void;
  /** A delete; `modifiedMs` is its time (0 when the writer kept none, as the original). */
  delete(rawKey: string, rev: number, bytes: RecordBytes, modifiedMs: number): void;
}

function emptyFields(): PutFields {
  return { block: 0, offset: 0, size: 0, meta: undefined, buf: Buffer.alloc(0), md5At: -1, modifiedMs: 0, etag: undefined, keptRevision: -1 };
}

/** A Location of its own, copied out of the reused fields. */
export function locationOf(f: PutFields): Location {
  const location: Location = { block: f.block, offset: f.offset, size: f.size };
  if (f.meta !== undefined) location.metadata = Buffer.from(f.meta, 'latin1');
  if (f.md5At >= 0) location.md5 = Buffer.from(f.buf.subarray(f.md5At, f.md5At + 16));
  if (f.modifiedMs) location.modifiedMs = f.modifiedMs;
  if (f.etag !== undefined) location.etag = f.etag;
  return location;
}

/** Decodes one encoded HistoryRecord (a journal record) for `handler`. */
export function decodeRecord(payload: Uint8Array, where: string, rev: number, handler: ReplayHandler): void {
  const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const fields = emptyFields();
  fields.buf = buf;
  try {
    record(new Cursor(buf, buf.length), 0, buf.length, fields, where, rev, handler, { buf, start: 0, end: buf.length });
  } catch (err) {
    if (err instanceof StoreCorruptError) throw err;
    throw new StoreCorruptError(`${where}: revision ${rev} cannot be decoded: ${(err as Error).message}`);
  }
}

/** One encoded HistoryRecord as a RawRecord of its own. */
export function decodeRawRecord(payload: Uint8Array, where: string, rev: number): RawRecord {
  let result: RawRecord | undefined;
  decodeRecord(payload, where, rev, {
    put: (rawKey, f) => (result = f.keptRevision >= 0 ? { kind: 'put', rawKey, location: locationOf(f), revision: f.keptRevision } : { kind: 'put', rawKey, location: locationOf(f) }),
    delete: (rawKey, _rev, _bytes, modifiedMs) => (result = modifiedMs ? { kind: 'delete', rawKey, modifiedMs } : { kind: 'delete', rawKey }),
  });
  return result!;
}

class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    public end: number,
  ) {}

  /** A varint's low 32 bits, unsigned (protobuf reads longer varints the same way). */
  uint32(): number {
    const buf = this.buf;
    let value = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new RangeError('varint runs past the end');
      const byte = buf[this.pos++]!;
      if (shift < 32) value |= (byte & 0x7f) << shift;
      shift += 7;
      if (byte < 0x80) return value >>> 0;
    }
    throw new RangeError('varint longer than 10 bytes');
  }

  sint32(): number {
    const n = this.uint32();
    return ((n >>> 1) ^ -(n & 1)) | 0;
  }

  /** A zigzag 64-bit varint as a number (exact up to 2^53). */
  sint64(): number {
    const buf = this.buf;
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new RangeError('varint runs past the end');
      const byte = buf[this.pos++]!;
      const bits = byte & 0x7f;
      if (shift < 28) lo |= bits << shift;
      else if (shift === 28) {
        lo |= bits << 28;
        hi |= bits >>> 4;
      } else hi |= bits << (shift - 32);
      shift += 7;
      if (byte < 0x80) {
        lo >>>= 0;
        hi >>>= 0;
        const mask = -(lo & 1);
        const zlo = (((lo >>> 1) | (hi << 31)) ^ mask) >>> 0;
        const zhi = ((hi >>> 1) ^ mask) | 0;
        return zhi * 4294967296 + zlo;
      }
    }
    throw new RangeError('varint longer than 10 bytes');
  }

  /** Start of a length-delimited field's bytes; `pos` moves past them. */
  lengthDelimited(): number {
    const len = this.uint32();
    const start = this.pos;
    if (start + len > this.end) throw new RangeError('length-delimited field runs past the end');
    this.pos = start + len;
    return start;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.uint32();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 3:
        for (;;) {
          const tag = this.uint32();
          if ((tag & 7) === 4) return;
          this.skip(tag & 7);
        }
      case 5:
        this.advance(4);
        return;
      default:
        throw new RangeError(`invalid wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.end) throw new RangeError('field runs past the end');
    this.pos += n;
  }
}

/** What `peekVarint` returns when the varint is not complete in the bytes seen so far. */
const INCOMPLETE = -1;

/** The varint at `pos` (its low 32 bits; `out.pos` is set past it), or INCOMPLETE. */
function peekVarint(buf: Buffer, pos: number, out: { pos: number }): number {
  let value = 0;
  for (let i = 0, shift = 0; i < 10; i++, shift += 7) {
    if (pos >= buf.length) return INCOMPLETE;
    const byte = buf[pos++]!;
    if (shift < 32) value |= (byte & 0x7f) << shift;
    if (byte < 0x80) {
      out.pos = pos;
      return value >>> 0;
    }
  }
  throw new RangeError('varint longer than 10 bytes');
}

/**
 * Replays a Db message fed in pieces (as a gzip stream decompresses): each complete top-level
 * field is decoded as soon as its last byte arrives, so no copy of the whole history is made.
 */
export class DbReplayer {
  nextBlockId = 0;
  /** The revision after the last record seen (also past `limit`): first_revision + records. */
  records = 0;
  /** The revision of the first record (Db.first_revision: not 0 in a compacted history). */
  firstRevision = 0;
  /**
   * The first revision whose whole history is kept: the records before it stand for the
   * objects live at that point (each carries its own revision).
   */
  get historyStart(): number {
    return this.firstRevision + this.keptCount;
  }
  /** Records seen, and how many of the first ones carry their own revision. */
  private seen = 0;
  private keptCount = 0;
  private carry: Buffer | undefined;
  private readonly fields: PutFields = emptyFields();
  private readonly bytes: RecordBytes = { buf: Buffer.alloc(0), start: 0, end: 0 };
  private readonly next = { pos: 0 };

  constructor(
    private readonly where: string,
    private readonly handler: ReplayHandler,
    private readonly limit = Infinity,
  ) {}

  push(chunk: Buffer): void {
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    let consumed = 0;
    try {
      consumed = this.scan(buf);
    } catch (err) {
      throw this.corrupt(err);
    }
    this.carry = consumed < buf.length ? Buffer.from(buf.subarray(consumed)) : undefined;
  }

  /** The stream ended: a field left incomplete is a truncated db. */
  finish(): DbSummary {
    if (this.carry) throw this.corrupt(new RangeError(`the last ${this.carry.length} bytes are an incomplete field`));
    return { nextBlockId: this.nextBlockId, records: this.records, firstRevision: this.firstRevision, historyStart: this.historyStart };
  }

  corrupt(err: unknown): StoreCorruptError {
    if (err instanceof StoreCorruptError) return err;
    return new StoreCorruptError(`${this.where}: cannot decode the history after revision ${this.records - 1}: ${(err as Error).message}`);
  }

  /** Decodes the complete top-level fields at the start of `buf`; returns the bytes used. */
  private scan(buf: Buffer): number {
    const inner = new Cursor(buf, 0);
    const next = this.next;
    this.fields.buf = buf;
    const bytes = this.bytes;
    bytes.buf = buf;
    let pos = 0;
    while (pos < buf.length) {
      const tag = peekVarint(buf, pos, next);
      if (tag === INCOMPLETE) break;
      const field = tag >>> 3;
      const wireType = tag & 7;
      let end: number;
      if (wireType === 2) {
        const len = peekVarint(buf, next.pos, next);
        if (len === INCOMPLETE || next.pos + len > buf.length) break;
        end = next.pos + len;
        if (field === 3) {
          // Past `limit`, a record is decoded only while the kept run may go on (to find where
          // the full history starts), and not handed over.
          if (this.records < this.limit || this.seen === this.keptCount) {
            bytes.start = next.pos;
            bytes.end = end;
            this.fields.keptRevision = -1;
            if (this.records < this.limit) record(inner, next.pos, end, this.fields, this.where, this.records, this.handler, bytes);
            else {
              // Records past the limit are not checked: one that does not decode ends the run.
              try {
                record(inner, next.pos, end, this.fields, this.where, this.records, IGNORE, bytes);
              } catch {
                this.fields.keptRevision = -1;
              }
            }
            if (this.fields.keptRevision >= 0) {
              if (this.seen !== this.keptCount) {
                throw new StoreCorruptError(`${this.where}: revision ${this.records} carries its own revision, but follows the history's start`);
              }
              this.keptCount++;
            }
          }
          this.records++;
          this.seen++;
        }
      } else if (wireType === 0) {
        const tagEnd = next.pos;
        const value = peekVarint(buf, next.pos, next);
        if (value === INCOMPLETE) break;
        end = next.pos;
        if (field === 2) this.nextBlockId = ((value >>> 1) ^ -(value & 1)) | 0;
        else if (field === 4) {
          if (this.seen > 0) throw new StoreCorruptError(`${this.where}: first_revision comes after records`);
          const c = new Cursor(buf, end);
          c.pos = tagEnd;
          this.firstRevision = c.sint64();
          if (!Number.isSafeInteger(this.firstRevision) || this.firstRevision < 0) {
            throw new StoreCorruptError(`${this.where}: first_revision ${this.firstRevision} is not a revision`);
          }
          this.records = this.firstRevision;
        }
      } else if (wireType === 1 || wireType === 5) {
        end = next.pos + (wireType === 1 ? 8 : 4);
        if (end > buf.length) break;
      } else {
        // Groups (never written by either program): skip them only when complete.
        const c = new Cursor(buf, buf.length);
        c.pos = next.pos;
        try {
          c.skip(wireType);
        } catch (err) {
          if (err instanceof RangeError && /past the end/.test(err.message)) break;
          throw err;
        }
        end = c.pos;
      }
      pos = end;
    }
    return pos;
  }
}

/** What replaying a whole db tells besides its records. */
export interface DbSummary {
  nextBlockId: number;
  /** The revision after the last record. */
  records: number;
  firstRevision: number;
  historyStart: number;
}

const IGNORE: ReplayHandler = { put() {}, delete() {} };

/**
 * Replays the history in `buf` (a whole Db message) up to `limit` records. Returns the last
 * next_backend_file seen and the number of records in the message.
 */
export function replayDb(buf: Buffer, where: string, handler: ReplayHandler, limit = Infinity): DbSummary {
  const replayer = new DbReplayer(where, handler, limit);
  replayer.push(buf);
  return replayer.finish();
}

/**
 * Replays a gzipped db while it is decompressed. Any valid gzip is accepted (one member or
 * several: each checkpoint appends one).
 */
export async function replayDbStream(
  source: Readable,
  where: string,
  handler: ReplayHandler,
  limit = Infinity,
): Promise<DbSummary> {
  const replayer = new DbReplayer(where, handler, limit);
  const gunzip = zlib.createGunzip({ chunkSize: READ_CHUNK });
  source.on('error', (err) => gunzip.destroy(err));
  source.pipe(gunzip);
  try {
    for await (const chunk of gunzip) replayer.push(chunk as Buffer);
  } catch (err) {
    throw gzipError(err, where);
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  return replayer.finish();
}

/** One HistoryRecord in buf[start, end). */
function record(c: Cursor, start: number, end: number, f: PutFields, where: string, rev: number, handler: ReplayHandler, bytes: RecordBytes): void {
  // Every `put` / `delete` occurrence is decoded (and checked) in turn; the last one wins.
  let kind = 0;
  let rawKey = '';
  let pos = start;
  while (pos < end) {
    c.pos = pos;
    c.end = end;
    const tag = c.uint32();
    const field = tag >>> 3;
    if ((field === 1 || field === 2) && (tag & 7) === 2) {
      const len = c.uint32();
      const subStart = c.pos;
      const subEnd = subStart + len;
      if (subEnd > end) throw new StoreCorruptError(`${where}: revision ${rev} runs past its record`);
      kind = field;
      rawKey = part(c, subStart, subEnd, field === 1, f, where, rev);
      pos = subEnd;
    } else {
      c.skip(tag & 7);
      pos = c.pos;
    }
  }
  if (kind === 0) throw new StoreCorruptError(`${where}: revision ${rev} is neither a put nor a delete`);
  if (kind === 2) handler.delete(rawKey, rev, bytes, f.modifiedMs);
  else handler.put(rawKey, f, rev, bytes);
}

/** A PutRecord (its location goes to `f`) or a DeleteRecord in buf[start, end); returns the key. */
function part(c: Cursor, start: number, end: number, isPut: boolean, f: PutFields, where: string, rev: number): string {
  c.pos = start;
  c.end = end;
  let rawKey = '';
  let locStart = -1;
  let locEnd = -1;
  if (!isPut) f.modifiedMs = 0;
  // The last part wins, its revision (or none) with it.
  f.keptRevision = -1;
  while (c.pos < end) {
    const tag = c.uint32();
    const field = tag >>> 3;
    if (field === 1 && (tag & 7) === 2) {
      const s = c.lengthDelimited();
      rawKey = c.buf.toString('latin1', s, c.pos);
    } else if (isPut && field === 2 && (tag & 7) === 2) {
      locStart = c.lengthDelimited();
      locEnd = c.pos;
    } else if (isPut && field === 3 && (tag & 7) === 0) {
      f.keptRevision = c.sint64();
      if (!Number.isSafeInteger(f.keptRevision) || f.keptRevision < 0) throw new StoreCorruptError(`${where}: revision ${rev} carries ${f.keptRevision}, not a revision`);
    } else if (!isPut && field === 2 && (tag & 7) === 0) {
      f.modifiedMs = c.sint64();
    } else c.skip(tag & 7);
  }
  if (!isPut) return rawKey;
  if (locStart < 0) throw new StoreCorruptError(`${where}: revision ${rev} is a put without a location`);
  location(c, locStart, locEnd, f);
  return rawKey;
}

function location(c: Cursor, start: number, end: number, f: PutFields): void {
  f.block = 0;
  f.offset = 0;
  f.size = 0;
  f.meta = undefined;
  f.md5At = -1;
  f.modifiedMs = 0;
  f.etag = undefined;
  c.pos = start;
  c.end = end;
  while (c.pos < end) {
    const tag = c.uint32();
    switch (tag >>> 3) {
      case 1:
        f.block = c.sint32();
        break;
      case 2:
        f.offset = c.sint32();
        break;
      case 3:
        f.size = c.sint32();
        break;
      case 4: {
        const s = c.lengthDelimited();
        f.meta = c.pos > s ? c.buf.toString('latin1', s, c.pos) : undefined;
        break;
      }
      case 5: {
        const s = c.lengthDelimited();
        f.md5At = c.pos - s === 16 ? s : -1;
        break;
      }
      case 6:
        f.modifiedMs = c.sint64();
        break;
      case 7: {
        const s = c.lengthDelimited();
        f.etag = c.pos > s ? c.buf.toString('utf8', s, c.pos) : undefined;
        break;
      }
      default:
        c.skip(tag & 7);
    }
  }
}

/**
 * The records of a gzipped db as an async sequence, `make` turning each into what the caller
 * keeps. Records are decoded a decompressed piece at a time, so memory stays bounded.
 */
export async function* replayDbRecords<T>(
  source: Readable,
  where: string,
  make: { put(rawKey: string, fields: PutFields, rev: number, bytes: RecordBytes): T; delete(rawKey: string, rev: number, bytes: RecordBytes, modifiedMs: number): T },
): AsyncGenerator<T> {
  let batch: T[] = [];
  const replayer = new DbReplayer(where, {
    put: (rawKey, fields, rev, bytes) => void batch.push(make.put(rawKey, fields, rev, bytes)),
    delete: (rawKey, rev, bytes, modifiedMs) => void batch.push(make.delete(rawKey, rev, bytes, modifiedMs)),
  });
  const gunzip = zlib.createGunzip({ chunkSize: READ_CHUNK });
  source.on('error', (err) => gunzip.destroy(err));
  source.pipe(gunzip);
  try {
    for await (const chunk of gunzip) {
      replayer.push(chunk as Buffer);
      const ready = batch;
      batch = [];
      yield* ready;
    }
    replayer.finish();
  } catch (err) {
    throw gzipError(err, where);
  } finally {
    source.destroy();
    gunzip.destroy();
  }
}

/** A zlib failure reported as a corrupt db; other errors pass through. */
function gzipError(err: unknown, where: string): unknown {
  if (err instanceof StoreCorruptError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return new StoreCorruptError(`${where}: not a valid gzip file (${(err as Error).message}); the db is corrupt or truncated`);
  }
  return err;
}
