/**
 * The on-disk schema (proto/db.proto, proto/metadata.proto) loaded with protobufjs, and the
 * engine's own view of a history record. Encoding goes through protobufjs; decoding of the
 * history, the hot part of opening a store, is a hand-written loop over protobufjs' Reader so
 * that no object is built per record beyond what the caller keeps.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import protobuf from 'protobufjs';
import { StoreCorruptError } from './errors.js';

const protoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../proto');
const root = protobuf.loadSync([path.join(protoDir, 'db.proto'), path.join(protoDir, 'metadata.proto')]);

const DbType = root.lookupType('zipkv.Db');
const HistoryRecordType = root.lookupType('zipkv.HistoryRecord');
const MetadataType = root.lookupType('zipkv.Metadata');

/** Where an object's bytes are, and the facts kept about it. */
export interface Location {
  block: number;
  offset: number;
  size: number;
  /** A serialized Metadata message, kept as bytes: it is decoded only when a client asks. */
  metadata?: Uint8Array;
  md5?: Uint8Array;
  modifiedMs?: number;
  etag?: string;
}

export type HistoryRecord =
  | { kind: 'put'; key: string; location: Location }
  | { kind: 'delete'; key: string };

/** A record as scanned from disk: the key is kept as raw UTF-8 bytes in a latin1 string. */
export type RawRecord =
  | { kind: 'put'; rawKey: string; location: Location }
  | { kind: 'delete'; rawKey: string };

export function encodeHistoryRecord(record: HistoryRecord): Uint8Array {
  const message =
    record.kind === 'put'
      ? {
          put: {
            filename: record.key,
            // Always present, even when empty: the original's reader dereferences it.
            location: {
              backendFile: record.location.block,
              offset: record.location.offset,
              size: record.location.size,
              metadata: record.location.metadata,
              md5: record.location.md5,
              modifiedMs: record.location.modifiedMs,
              etag: record.location.etag,
            },
          },
        }
      : { delete: { filename: record.key } };
  return HistoryRecordType.encode(HistoryRecordType.fromObject(message)).finish();
}

/** Encodes a whole Db message (used by rebase and tests; checkpoints append instead). */
export function encodeDb(nextBackendFile: number, history: HistoryRecord[]): Uint8Array {
  const writer = protobuf.Writer.create();
  writeNextBackendFile(writer, nextBackendFile);
  for (const record of history) writeHistoryEntry(writer, encodeHistoryRecord(record));
  return writer.finish();
}

/** Field 3 of Db: one history record, as it appears inside the Db message. */
export function writeHistoryEntry(writer: protobuf.Writer, encodedRecord: Uint8Array): void {
  writer.uint32((3 << 3) | 2).bytes(encodedRecord);
}

/** Field 2 of Db. Repeating it later in the stream overrides it (protobuf's last-one-wins). */
export function writeNextBackendFile(writer: protobuf.Writer, value: number): void {
  writer.uint32((2 << 3) | 0).sint32(value);
}

export function newWriter(): protobuf.Writer {
  return protobuf.Writer.create();
}

export function encodeMetadata(entries: Record<string, string>): Uint8Array | undefined {
  if (Object.keys(entries).length === 0) return undefined;
  return MetadataType.encode(MetadataType.fromObject({ metadata: entries })).finish();
}

export function decodeMetadata(bytes: Uint8Array | undefined): Record<string, string> {
  if (!bytes || bytes.length === 0) return {};
  const decoded = MetadataType.toObject(MetadataType.decode(bytes)) as { metadata?: Record<string, string> };
  return decoded.metadata ?? {};
}

/** A decoded Db through protobufjs' reflection; used by tests to check what the original reads. */
export function decodeDbReflect(bytes: Uint8Array): Record<string, unknown> {
  return DbType.toObject(DbType.decode(bytes), { longs: Number, defaults: false, oneofs: true });
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

/**
 * Calls `onRecord` for every history record of a Db message in `buf`, in order, and returns the
 * last next_backend_file seen. `where` names the file in error messages.
 */
export function scanDb(
  buf: Uint8Array,
  where: string,
  onRecord: (record: RawRecord, rev: number) => void,
  limit = Infinity,
): { nextBackendFile: number; records: number } {
  const reader = protobuf.Reader.create(buf);
  let nextBackendFile = 0;
  let rev = 0;
  try {
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      const field = tag >>> 3;
      if (field === 2 && (tag & 7) === WIRE_VARINT) {
        nextBackendFile = reader.sint32();
      } else if (field === 3 && (tag & 7) === WIRE_LEN) {
        const len = reader.uint32();
        const start = reader.pos;
        const end = start + len;
        if (end > reader.len) throw new RangeError('record runs past the end');
        if (rev < limit) onRecord(decodeRawRecord(buf, start, end, where, rev), rev);
        reader.pos = end;
        rev++;
      } else {
        reader.skipType(tag & 7);
      }
    }
  } catch (err) {
    if (err instanceof StoreCorruptError) throw err;
    throw new StoreCorruptError(`${where}: cannot decode the history after revision ${rev - 1}: ${(err as Error).message}`);
  }
  return { nextBackendFile, records: rev };
}

/** Decodes one HistoryRecord message occupying buf[start, end). */
export function decodeRawRecord(buf: Uint8Array, start: number, end: number, where: string, rev: number): RawRecord {
  const reader = protobuf.Reader.create(buf);
  reader.pos = start;
  reader.len = end;
  let result: RawRecord | undefined;
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if ((field === 1 || field === 2) && (tag & 7) === WIRE_LEN) {
      const len = reader.uint32();
      const subEnd = reader.pos + len;
      if (subEnd > end) throw new StoreCorruptError(`${where}: revision ${rev} runs past its record`);
      result = field === 1 ? decodePut(buf, reader.pos, subEnd, where, rev) : decodeDelete(buf, reader.pos, subEnd);
      reader.pos = subEnd;
    } else {
      reader.skipType(tag & 7);
    }
  }
  if (!result) throw new StoreCorruptError(`${where}: revision ${rev} is neither a put nor a delete`);
  return result;
}

function latin1(buf: Uint8Array, start: number, end: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

function decodeDelete(buf: Uint8Array, start: number, end: number): RawRecord {
  const reader = protobuf.Reader.create(buf);
  reader.pos = start;
  reader.len = end;
  let rawKey = '';
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (tag >>> 3 === 1 && (tag & 7) === WIRE_LEN) {
      const len = reader.uint32();
      rawKey = latin1(buf, reader.pos, reader.pos + len);
      reader.pos += len;
    } else reader.skipType(tag & 7);
  }
  return { kind: 'delete', rawKey };
}

function decodePut(buf: Uint8Array, start: number, end: number, where: string, rev: number): RawRecord {
  const reader = protobuf.Reader.create(buf);
  reader.pos = start;
  reader.len = end;
  let rawKey = '';
  let location: Location | undefined;
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if (field === 1 && (tag & 7) === WIRE_LEN) {
      const len = reader.uint32();
      rawKey = latin1(buf, reader.pos, reader.pos + len);
      reader.pos += len;
    } else if (field === 2 && (tag & 7) === WIRE_LEN) {
      const len = reader.uint32();
      location = decodeLocation(buf, reader.pos, reader.pos + len);
      reader.pos += len;
    } else reader.skipType(tag & 7);
  }
  if (!location) throw new StoreCorruptError(`${where}: revision ${rev} is a put without a location`);
  return { kind: 'put', rawKey, location };
}

function decodeLocation(buf: Uint8Array, start: number, end: number): Location {
  const reader = protobuf.Reader.create(buf);
  reader.pos = start;
  reader.len = end;
  const location: Location = { block: 0, offset: 0, size: 0 };
  while (reader.pos < end) {
    const tag = reader.uint32();
    switch (tag >>> 3) {
      case 1: location.block = reader.sint32(); break;
      case 2: location.offset = reader.sint32(); break;
      case 3: location.size = reader.sint32(); break;
      case 4: location.metadata = reader.bytes(); break;
      case 5: location.md5 = reader.bytes(); break;
      case 6: {
        // protobufjs returns a Long when long.js is present; Number() on it goes through a string.
        const ms = reader.sint64() as unknown as number | { toNumber(): number };
        location.modifiedMs = typeof ms === 'number' ? ms : ms.toNumber();
        break;
      }
      case 7: location.etag = reader.string(); break;
      default: reader.skipType(tag & 7);
    }
  }
  return location;
}

/** Where one encoded HistoryRecord lies inside a Db message. */
export interface RecordSpan {
  start: number;
  end: number;
}

/**
 * The history entries of a Db message one at a time, as spans of `buf`, without decoding them:
 * streaming readers decode each with `decodeRawRecord`, and rebase copies them verbatim.
 * Errors are reported as by `scanDb`.
 */
export function* dbRecordSpans(buf: Uint8Array, where: string): Generator<RecordSpan> {
  const reader = protobuf.Reader.create(buf);
  let rev = 0;
  for (;;) {
    let span: RecordSpan | undefined;
    try {
      while (reader.pos < reader.len && !span) {
        const tag = reader.uint32();
        if (tag >>> 3 === 3 && (tag & 7) === WIRE_LEN) {
          const len = reader.uint32();
          const start = reader.pos;
          if (start + len > reader.len) throw new RangeError('record runs past the end');
          reader.pos = start + len;
          span = { start, end: start + len };
        } else {
          reader.skipType(tag & 7);
        }
      }
    } catch (err) {
      throw new StoreCorruptError(`${where}: cannot decode the history after revision ${rev - 1}: ${(err as Error).message}`);
    }
    if (!span) return;
    yield span;
    rev++;
  }
}

/** The kind and raw key of one HistoryRecord in buf[start, end), leaving its Location undecoded. */
export function decodeRecordKey(
  buf: Uint8Array,
  start: number,
  end: number,
  where: string,
  rev: number,
): { kind: 'put' | 'delete'; rawKey: string } {
  const reader = protobuf.Reader.create(buf);
  reader.pos = start;
  reader.len = end;
  let result: { kind: 'put' | 'delete'; rawKey: string } | undefined;
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if ((field === 1 || field === 2) && (tag & 7) === WIRE_LEN) {
      const subEnd = reader.uint32() + reader.pos;
      if (subEnd > end) throw new StoreCorruptError(`${where}: revision ${rev} runs past its record`);
      let rawKey = '';
      while (reader.pos < subEnd) {
        const subTag = reader.uint32();
        if (subTag >>> 3 === 1 && (subTag & 7) === WIRE_LEN) {
          const len = reader.uint32();
          if (reader.pos + len > subEnd) throw new StoreCorruptError(`${where}: revision ${rev} has a key running past its record`);
          rawKey = latin1(buf, reader.pos, reader.pos + len);
          reader.pos += len;
        } else reader.skipType(subTag & 7);
      }
      result = { kind: field === 1 ? 'put' : 'delete', rawKey };
    } else {
      reader.skipType(tag & 7);
    }
  }
  if (!result) throw new StoreCorruptError(`${where}: revision ${rev} is neither a put nor a delete`);
  return result;
}
