/**
 * Reading a store's history without opening it as a writer. `readSnapshot` takes a consistent
 * view of db + journal (through recovery, as every reader does) with no lock and no write, so it
 * works on a directory a running server holds; `historyEntries` streams the records of a
 * snapshot one at a time, labelling copies and, when asked, whether each record is still the
 * live version of its key.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RevisionOutOfRangeError, StoreError, StoreStateError } from './errors.js';
import { JOURNAL_FILE } from './files.js';
import { type PutFields, fromRawKey, toRawKey } from './object-index.js';
import { type RecoveredHistory, assertRevision, recoverHistory } from './recovery.js';
import { type RecordBytes, decodeRecord, locationOf, replayDbRecords } from './replay.js';
import { type Location, type RawRecord, decodeMetadata } from './schema.js';
import { LocalStorage } from './storage/local.js';
import { fileStream } from './storage/storage.js';

/** The directory does not exist, or is not a directory. */
export class StoreNotFoundError extends StoreError {
  constructor(message: string) {
    super('ENOENT', message);
  }
}

/** A consistent view of a store's history, read without the lock: see `readSnapshot`. */
export interface StoreSnapshot extends RecoveredHistory {
  dir: string;
  /** The db file's path, if the store has one. */
  dbFile: string | undefined;
  journalFile: string;
}

const SNAPSHOT_ATTEMPTS = 5;

/**
 * Reads a store's history the way recovery does, with no lock and no write, so it works on a
 * directory a running server holds. The db stays open until `closeSnapshot`, so the records can
 * be streamed again even after a checkpoint replaces the file. A db slot that vanished between
 * listing and opening (a concurrent checkpoint) makes it try again.
 */
export async function readSnapshot(dir: string): Promise<StoreSnapshot> {
  await assertStoreDirectory(dir);
  const storage = new LocalStorage(dir);
  for (let attempt = 1; ; attempt++) {
    try {
      const recovered = await recoverHistory(storage, { keepDb: true });
      return {
        ...recovered,
        dir,
        dbFile: recovered.dbName === undefined ? undefined : path.join(dir, recovered.dbName),
        journalFile: path.join(dir, JOURNAL_FILE),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === SNAPSHOT_ATTEMPTS) throw err;
      await sleep(20 * attempt);
    }
  }
}

/** Releases the db a snapshot holds open. */
export async function closeSnapshot(snapshot: StoreSnapshot): Promise<void> {
  await snapshot.db?.close();
  snapshot.db = undefined;
}

/** Throws StoreNotFoundError unless `dir` is an existing directory. */
export async function assertStoreDirectory(dir: string): Promise<void> {
  let stat;
  try {
    stat = await fs.stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreNotFoundError(`${dir}: no such directory`);
    throw err;
  }
  if (!stat.isDirectory()) throw new StoreNotFoundError(`${dir} is not a directory`);
}

export interface SnapshotRecord {
  rev: number;
  record: RawRecord;
}

/** The records of a snapshot in order, each made by `make`; the db is streamed, never held whole. */
async function* snapshotItems<T>(
  snapshot: StoreSnapshot,
  make: { put(rawKey: string, fields: PutFields, rev: number, bytes: RecordBytes): T; delete(rawKey: string, rev: number, bytes: RecordBytes, modifiedMs: number): T },
): AsyncGenerator<T> {
  if (snapshot.dbName !== undefined) {
    if (!snapshot.db) throw new StoreStateError(`${snapshot.dir}: the snapshot is closed`);
    yield* replayDbRecords(fileStream(snapshot.db), snapshot.dbFile!, make);
  }
  let rev = snapshot.dbRecords;
  for (const payload of snapshot.journalPayloads) {
    let item: T | undefined;
    decodeRecord(payload, snapshot.journalFile, rev++, { put: (...a) => void (item = make.put(...a)), delete: (...a) => void (item = make.delete(...a)) });
    yield item!;
  }
}

/**
 * A record's revision as users see it: a record kept from before a compacted history's start
 * shows the revision that wrote it (its version id), which is below the history's start.
 */
function shownRevision(fields: PutFields, rev: number): number {
  return fields.keptRevision >= 0 ? fields.keptRevision : rev;
}

/** Every record of a snapshot in order, decoded one at a time. */
export function snapshotRecords(snapshot: StoreSnapshot): AsyncGenerator<SnapshotRecord> {
  return snapshotItems<SnapshotRecord>(snapshot, {
    put: (rawKey, fields, rev) => ({ rev: shownRevision(fields, rev), record: { kind: 'put', rawKey, location: locationOf(fields) } }),
    delete: (rawKey, rev) => ({ rev, record: { kind: 'delete', rawKey } }),
  });
}

export interface RecordKey {
  rev: number;
  kind: 'put' | 'delete';
  rawKey: string;
}

/** The revision, kind and raw key of every record, leaving locations aside (much cheaper). */
export function snapshotKeys(snapshot: StoreSnapshot): AsyncGenerator<RecordKey> {
  return snapshotItems<RecordKey>(snapshot, {
    put: (rawKey, fields, rev) => ({ rev: shownRevision(fields, rev), kind: 'put', rawKey }),
    delete: (rawKey, rev) => ({ rev, kind: 'delete', rawKey }),
  });
}

/** The first `count` records of a snapshot, encoded as on disk (rebase copies them verbatim). */
export async function* snapshotPayloads(snapshot: StoreSnapshot, count: number): AsyncGenerator<Uint8Array> {
  const bytesOf = (b: RecordBytes) => b.buf.subarray(b.start, b.end);
  for await (const { rev, bytes } of snapshotItems(snapshot, {
    put: (_k, _f, rev, bytes) => ({ rev, bytes: bytesOf(bytes) }),
    delete: (_k, rev, bytes) => ({ rev, bytes: bytesOf(bytes) }),
  })) {
    if (rev >= count) return;
    yield bytes;
  }
}

/**
 * The format has no copy flag: a copy (x-amz-copy-source) is a put pointing at the source's
 * bytes. Fresh bytes always land somewhere new (blocks are append-only and block ids are never
 * reused), so a put is a copy exactly when an earlier put with size > 0 had the same block,
 * offset and size. A 0-byte put has no bytes to share: a copy of an empty object cannot be
 * told from a new one, and is reported as a put.
 */
export class CopyDetector {
  /**
   * The places of earlier puts' bytes, keyed by block:offset:size as nested maps of small
   * integers (block -> offset -> size and first revision): a few dozen bytes per put, where a
   * string key per put would cost several times that and dominate the time of a long history.
   */
  private readonly seen = new Map<number, Map<number, { size: number; rev: number }>>();

  /** The revision whose bytes this put reuses, or undefined when its bytes are its own. */
  observe(loc: Location, rev: number): number | undefined {
    if (loc.size <= 0) return undefined;
    let offsets = this.seen.get(loc.block);
    if (!offsets) this.seen.set(loc.block, (offsets = new Map()));
    const earlier = offsets.get(loc.offset);
    if (earlier !== undefined && earlier.size === loc.size) return earlier.rev;
    offsets.set(loc.offset, { size: loc.size, rev });
    return undefined;
  }
}

export type Operation = 'put' | 'copy' | 'delete';

export interface HistoryEntry {
  rev: number;
  kind: 'put' | 'delete';
  /** `copy` for a put that reuses an earlier put's bytes (see CopyDetector). */
  op: Operation;
  key: string;
  location?: Location;
  /** Whether this put is still the live version of its key; set only when asked for. */
  live?: boolean;
}

export interface HistoryFilter {
  key?: string;
  prefix?: string;
  /** First revision shown (inclusive). */
  from?: number;
  /** Last revision shown (inclusive). */
  to?: number;
  op?: Operation;
  /** Only the last N records that pass the other filters. */
  tail?: number;
}

export interface HistoryOptions extends HistoryFilter {
  /** Fill `live` in: costs a first pass over the history, with memory per key. */
  live?: boolean;
  /**
   * Decode locations and tell copies from puts (default true). The original's output shows
   * only revision, kind and key: leaving this off then skips most of the decoding, and the
   * memory of remembering every put's location. Ignored when filtering on `op`.
   */
  locations?: boolean;
}

/** The entries of a snapshot that pass the filter, in order; streams unless `tail` is set. */
export async function* historyEntries(snapshot: StoreSnapshot, opts: HistoryOptions = {}): AsyncGenerator<HistoryEntry> {
  const rawKey = opts.key === undefined ? undefined : toRawKey(opts.key);
  const rawPrefix = opts.prefix === undefined ? undefined : toRawKey(opts.prefix);
  const keyMatches = (raw: string) => (rawKey === undefined || raw === rawKey) && (rawPrefix === undefined || raw.startsWith(rawPrefix));
  const from = opts.from ?? 0;
  const to = opts.to ?? Infinity;
  const lastRevOfKey = opts.live ? await lastRevisions(snapshot, keyMatches) : undefined;
  const tail = opts.tail === undefined ? undefined : new Ring<HistoryEntry>(opts.tail);
  const records: AsyncIterable<LocatedRecord> = opts.locations === false && opts.op === undefined ? snapshotKeys(snapshot) : locatedRecords(snapshot);

  for await (const record of records) {
    const { rev } = record;
    if (rev > to) break;
    if (rev < from || !keyMatches(record.rawKey)) continue;
    const op: Operation = record.kind === 'delete' ? 'delete' : record.copyOf !== undefined ? 'copy' : 'put';
    if (opts.op !== undefined && op !== opts.op) continue;
    const entry: HistoryEntry = { rev, kind: record.kind, op, key: keyOf(record.rawKey) };
    if (record.location) entry.location = record.location;
    if (lastRevOfKey) entry.live = record.kind === 'put' && lastRevOfKey.get(record.rawKey) === rev;
    if (tail) tail.push(entry);
    else yield entry;
  }
  if (tail) yield* tail.items();
}

interface LocatedRecord {
  rev: number;
  kind: 'put' | 'delete';
  rawKey: string;
  location?: Location;
  copyOf?: number;
}

/** Every record with its location, puts labelled with the revision they copy, if any. */
async function* locatedRecords(snapshot: StoreSnapshot): AsyncGenerator<LocatedRecord> {
  // Every put is observed, whatever the filters, so that copies of earlier puts are recognised.
  const copies = new CopyDetector();
  for await (const { rev, record } of snapshotRecords(snapshot)) {
    if (record.kind === 'delete') yield { rev, kind: 'delete', rawKey: record.rawKey };
    else yield { rev, kind: 'put', rawKey: record.rawKey, location: record.location, copyOf: copies.observe(record.location, rev) };
  }
}

const NON_ASCII = /[^\x00-\x7f]/;

/** Raw keys hold UTF-8 bytes as latin1 characters: an ASCII key is already the key. */
function keyOf(raw: string): string {
  return NON_ASCII.test(raw) ? fromRawKey(raw) : raw;
}

/** Raw key -> revision of its last record, for the keys `wanted` accepts. */
async function lastRevisions(snapshot: StoreSnapshot, wanted: (raw: string) => boolean): Promise<Map<string, number>> {
  const last = new Map<string, number>();
  for await (const { rev, rawKey } of snapshotKeys(snapshot)) {
    if (wanted(rawKey)) last.set(rawKey, rev);
  }
  return last;
}

/** A fixed-size buffer of the last N items pushed. */
class Ring<T> {
  private readonly buf: T[] = [];
  private next = 0;
  constructor(private readonly capacity: number) {}

  push(item: T): void {
    if (this.capacity <= 0) return;
    if (this.buf.length < this.capacity) this.buf.push(item);
    else this.buf[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
  }

  *items(): Generator<T> {
    if (this.buf.length < this.capacity) {
      yield* this.buf;
      return;
    }
    for (let i = 0; i < this.capacity; i++) yield this.buf[(this.next + i) % this.capacity]!;
  }
}

/** One revision in detail. */
export interface RevisionDetail extends HistoryEntry {
  live: boolean;
  /** For a copy, the revision whose bytes it reuses. */
  copyOf?: number;
  metadata: Record<string, string>;
  /** Hex MD5 of the bytes, when the writer stored one (zipkv does, the original did not). */
  md5?: string;
  etag?: string;
  modified?: Date;
  /** The key's last revision (a later put or delete, or this one). */
  lastRevOfKey: number;
}

export async function describeRevision(snapshot: StoreSnapshot, rev: number): Promise<RevisionDetail> {
  // Before a compacted history's start, only the kept records (shown under their own revisions) exist.
  if (rev >= snapshot.historyStart || rev < 0) assertRevision(snapshot.dir, rev, snapshot);
  const copies = new CopyDetector();
  let found: { record: RawRecord; copyOf: number | undefined } | undefined;
  let lastRevOfKey = rev;
  for await (const item of snapshotRecords(snapshot)) {
    const copyOf = item.record.kind === 'put' ? copies.observe(item.record.location, item.rev) : undefined;
    if (item.rev === rev) found = { record: item.record, copyOf };
    else if (found && item.record.rawKey === found.record.rawKey) lastRevOfKey = item.rev;
  }
  if (!found) throw new RevisionOutOfRangeError(snapshot.dir, rev, snapshot);
  const { record, copyOf } = found;
  const detail: RevisionDetail = {
    rev,
    kind: record.kind,
    op: record.kind === 'delete' ? 'delete' : copyOf !== undefined ? 'copy' : 'put',
    key: fromRawKey(record.rawKey),
    live: record.kind === 'put' && lastRevOfKey === rev,
    metadata: {},
    lastRevOfKey,
  };
  if (record.kind === 'put') {
    const loc = record.location;
    detail.location = loc;
    detail.metadata = decodeMetadata(loc.metadata);
    if (copyOf !== undefined) detail.copyOf = copyOf;
    if (loc.md5 && loc.md5.length === 16) detail.md5 = Buffer.from(loc.md5).toString('hex');
    if (loc.etag) detail.etag = loc.etag;
    if (loc.modifiedMs) detail.modified = new Date(loc.modifiedMs);
  }
  return detail;
}
