/**
 * Reference decoders for tests: an independent decoding of the db format, written over
 * protobufjs' Reader (and its reflection), against which the engine's one decoder (replay.ts)
 * is checked field for field.
 */
import path from 'node:path';
import protobuf from 'protobufjs';
import { StoreCorruptError } from '../../src/lib/store/errors.js';
import type { Location, RawRecord } from '../../src/lib/store/schema.js';
import { repoRoot } from './paths.js';

const root = protobuf.loadSync([path.join(repoRoot, 'proto/db.proto'), path.join(repoRoot, 'proto/metadata.proto')]);
const DbType = root.lookupType('zipkv.Db');

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
): { nextBlockId: number; records: number; firstRevision: number; historyStart: number } {
  const reader = protobuf.Reader.create(buf);
  let nextBlockId = 0;
  let firstRevision = 0;
  let rev = 0;
  let seen = 0;
  // Leading puts carrying their own revision (a compacted history's kept records).
  let kept = 0;
  try {
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      const field = tag >>> 3;
      if (field === 2 && (tag & 7) === WIRE_VARINT) {
        nextBlockId = reader.sint32();
      } else if (field === 4 && (tag & 7) === WIRE_VARINT) {
        if (seen > 0) throw new StoreCorruptError(`${where}: first_revision comes after records`);
        firstRevision = longToNumber(reader.sint64());
        if (!Number.isSafeInteger(firstRevision) || firstRevision < 0) throw new StoreCorruptError(`${where}: first_revision ${firstRevision} is not a revision`);
        rev = firstRevision;
      } else if (field === 3 && (tag & 7) === WIRE_LEN) {
        const len = reader.uint32();
        const start = reader.pos;
        const end = start + len;
        if (end > reader.len) throw new RangeError('record runs past the end');
        let record: RawRecord | undefined;
        if (rev < limit) record = decodeRawRecord(buf, start, end, where, rev);
        else if (seen === kept) {
          // Past the limit only to find where the kept run ends; an undecodable record ends it.
          try {
            record = decodeRawRecord(buf, start, end, where, rev);
          } catch {
            record = undefined;
          }
        }
        if (record?.kind === 'put' && record.revision !== undefined) {
          if (seen !== kept) throw new StoreCorruptError(`${where}: revision ${rev} carries its own revision, but follows the history's start`);
          kept++;
        }
        if (rev < limit) onRecord(record!, rev);
        reader.pos = end;
        rev++;
        seen++;
      } else {
        reader.skipType(tag & 7);
      }
    }
  } catch (err) {
    if (err instanceof StoreCorruptError) throw err;
    throw new StoreCorruptError(`${where}: cannot decode the history after revision ${rev - 1}: ${(err as Error).message}`);
  }
  return { nextBlockId, records: rev, firstRevision, historyStart: firstRevision + kept };
}

function longToNumber(v: unknown): number {
  // protobufjs returns a Long when long.js is present; Number() on it goes through a string.
  return typeof v === 'number' ? v : (v as { toNumber(): number }).toNumber();
}

/** Decodes one HistoryRecord message occupying buf[start, end). */
function decodeRawRecord(buf: Uint8Array, start: number, end: number, where: string, rev: number): RawRecord {
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
  let revision: number | undefined;
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if (field === 3 && (tag & 7) === WIRE_VARINT) {
      revision = longToNumber(reader.sint64());
      if (!Number.isSafeInteger(revision) || revision < 0) throw new StoreCorruptError(`${where}: revision ${rev} carries ${revision}, not a revision`);
    } else if (field === 1 && (tag & 7) === WIRE_LEN) {
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
  return revision === undefined ? { kind: 'put', rawKey, location } : { kind: 'put', rawKey, location, revision };
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
      case 6:
        location.modifiedMs = longToNumber(reader.sint64());
        break;
      case 7: location.etag = reader.string(); break;
      default: reader.skipType(tag & 7);
    }
  }
  return location;
}


/** Decompresses a db file and counts its records and next_backend_file with the reference decoder. */
export async function readDbSummary(file: string): Promise<{ nextBlockId: number; records: number; firstRevision: number; historyStart: number }> {
  const { gunzipSync } = await import('node:zlib');
  const { readFile } = await import('node:fs/promises');
  return scanDb(gunzipSync(await readFile(file)), file, () => undefined, 0);
}
