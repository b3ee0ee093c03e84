/**
 * The on-disk schema (proto/db.proto, proto/metadata.proto) loaded with protobufjs, and the
 * engine's own view of a history record. Records and metadata are encoded here through
 * protobufjs; history records are decoded by replay.ts, the hot loop of opening a store.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import protobuf from 'protobufjs';

const protoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../proto');
const root = protobuf.loadSync([path.join(protoDir, 'db.proto'), path.join(protoDir, 'metadata.proto')]);

const HistoryRecordType = root.lookupType('zipkv.HistoryRecord');
const MetadataType = root.lookupType('zipkv.Metadata');
const LocationType = root.lookupType('zipkv.Location');

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
  /** `revision`: only on a record that stands for an object kept from before a compacted history's start. */
  | { kind: 'put'; key: string; location: Location; revision?: number }
  | { kind: 'delete'; key: string; modifiedMs?: number };

/** A record as scanned from disk: the key is kept as raw UTF-8 bytes in a latin1 string. */
export type RawRecord =
  | { kind: 'put'; rawKey: string; location: Location; revision?: number }
  | { kind: 'delete'; rawKey: string; modifiedMs?: number };

export function encodeHistoryRecord(record: HistoryRecord): Uint8Array {
  const message =
    record.kind === 'put'
      ? {
          put: {
            filename: record.key,
            revision: record.revision,
            // Always present, even when empty: the original's reader dereferences it.
            location: locationMessage(record.location),
          },
        }
      : { delete: { filename: record.key, modifiedMs: record.modifiedMs } };
  return HistoryRecordType.encode(HistoryRecordType.fromObject(message)).finish();
}

/**
 * Encodes a record scanned from disk, with its key's bytes as they were (a key the original
 * stored need not be valid UTF-8): compaction rewrites records this way.
 */
export function encodeRawRecord(record: RawRecord): Uint8Array {
  const key = Buffer.from(record.rawKey, 'latin1');
  const writer = protobuf.Writer.create();
  if (record.kind === 'put') {
    const location = LocationType.encode(LocationType.fromObject(locationMessage(record.location))).finish();
    writer.uint32((1 << 3) | 2).fork();
    writer.uint32((1 << 3) | 2).bytes(key);
    writer.uint32((2 << 3) | 2).bytes(location);
    if (record.revision !== undefined) writer.uint32((3 << 3) | 0).sint64(record.revision);
    writer.ldelim();
  } else {
    writer.uint32((2 << 3) | 2).fork();
    writer.uint32((1 << 3) | 2).bytes(key);
    if (record.modifiedMs) writer.uint32((2 << 3) | 0).sint64(record.modifiedMs);
    writer.ldelim();
  }
  return writer.finish();
}

function locationMessage(location: Location): Record<string, unknown> {
  return {
    backendFile: location.block,
    offset: location.offset,
    size: location.size,
    metadata: location.metadata,
    md5: location.md5,
    modifiedMs: location.modifiedMs,
    etag: location.etag,
  };
}

/** Encodes a whole Db message (used by tests; checkpoints append, compaction and rebase stream). */
export function encodeDb(nextBlockId: number, history: HistoryRecord[], firstRevision = 0): Uint8Array {
  const writer = protobuf.Writer.create();
  writeFirstRevision(writer, firstRevision);
  writeNextBackendFile(writer, nextBlockId);
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

/** Field 4 of Db (zipkv): written before any record, and only when it is not 0. */
export function writeFirstRevision(writer: protobuf.Writer, value: number): void {
  if (value !== 0) writer.uint32((4 << 3) | 0).sint64(value);
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
