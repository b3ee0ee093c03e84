/**
 * Reading a store's history without opening it as a writer. `readSnapshot` takes a consistent
 * view of db + journal with no lock and no write, so it works on a directory a running server
 * holds; `historyEntries` / `readHistory` stream the records of a snapshot one at a time,
 * labelling copies and, when asked, whether each record is still the live version of its key.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { currentDbSlot, readDbFile } from './db-file.js';
import { StoreCorruptError, StoreError } from './errors.js';
import { JOURNAL_FILE, blockFileName, dbFileName, listStoreDir } from './files.js';
import { readJournal } from './journal.js';
import { fromRawKey, toRawKey } from './object-index.js';
import { type Location, type RawRecord, dbRecordSpans, decodeMetadata, decodeRawRecord, decodeRecordKey, scanDb } from './schema.js';

/** The directory does not exist, or is not a directory. */
export class StoreNotFoundError extends StoreError {
  constructor(message: string) {
    super('ENOENT', message);
  }
}

/** A revision the history does not hold. */
export class RevisionOutOfRangeError extends StoreError {
  constructor(dir: string, revision: number, total: number) {
    super(
      'ERANGE',
      total === 0
        ? `revision ${revision} is out of range: ${dir} holds no history`
        : `revision ${revision} is out of range: ${dir} holds revisions 0..${total - 1}`,
    );
  }
}

export interface StoreSnapshot {
  dir: string;
  /** The db file that was read, if the store has one. */
  dbFile: string | undefined;
  dbSlot: number | undefined;
  /** The uncompressed Db message. */
  db: Buffer | undefined;
  dbRecords: number;
  dbNextBackendFile: number;
  journalFile: string;
  /** The records the journal adds after the db's (revisions dbRecords, dbRecords + 1, ...). */
  journalRecords: RawRecord[];
  /** The same records, encoded, as the journal holds them. */
  journalPayloads: Uint8Array[];
  /** Block id -> file size, taken after the journal was read. */
  blocks: Map<number, number>;
  /** Records in the history (db + journal). */
  total: number;
  /** Things a reader should know: a torn journal tail, records recovery would ignore. */
  warnings: string[];
}

const SNAPSHOT_ATTEMPTS = 5;

/**
 * Reads db, then journal, then block sizes. A checkpoint between the db and the journal shows
 * as a journal whose base revision is beyond the db's record count (or a db file that vanished
 * between listing and reading): the read is then retried.
 */
export async function readSnapshot(dir: string): Promise<StoreSnapshot> {
  await assertStoreDirectory(dir);
  for (let attempt = 1; ; attempt++) {
    const last = attempt === SNAPSHOT_ATTEMPTS;
    const snapshot = await trySnapshot(dir, last);
    if (snapshot) return snapshot;
    if (last) break;
    await sleep(20 * attempt);
  }
  throw new StoreCorruptError(`${dir}: the db and journal kept changing while being read; try again`);
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

/** One attempt; undefined when a concurrent checkpoint got in the way. */
async function trySnapshot(dir: string, lastAttempt: boolean): Promise<StoreSnapshot | undefined> {
  const listing = await listStoreDir(dir);
  const dbSlot = currentDbSlot(listing.dbSlots, dir);
  const dbFile = dbSlot === undefined ? undefined : path.join(dir, dbFileName(dbSlot));
  let db: Buffer | undefined;
  let dbRecords = 0;
  let dbNextBackendFile = 0;
  if (dbFile) {
    try {
      db = await readDbFile(dbFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    // A limit of 0 counts the records without decoding them.
    ({ records: dbRecords, nextBackendFile: dbNextBackendFile } = scanDb(db, dbFile, () => undefined, 0));
  }

  const journalFile = path.join(dir, JOURNAL_FILE);
  const journal = await readJournal(dir);
  const warnings: string[] = [];
  if (journal && journal.baseRevision > dbRecords) {
    if (!lastAttempt) return undefined;
    if (journal.records.length > 0) {
      throw new StoreCorruptError(
        `${journalFile} continues revision ${journal.baseRevision}, but the db holds only ${dbRecords} records: ` +
          'the db is older than the journal (was a db file replaced or removed?)',
      );
    }
  }
  const blocks = await blockSizes(dir);
  const journalRecords: RawRecord[] = [];
  const journalPayloads: Uint8Array[] = [];
  if (journal && journal.baseRevision >= 0 && journal.baseRevision <= dbRecords) {
    // The same rules as recovery, so the history shown is the one the server serves.
    let rev = journal.baseRevision;
    for (let i = 0; i < journal.records.length; i++, rev++) {
      if (rev < dbRecords) continue; // already folded into the db
      const payload = journal.records[i]!;
      let record: RawRecord;
      try {
        record = decodeRawRecord(payload, 0, payload.length, journalFile, rev);
      } catch (err) {
        warnings.push(`${(err as Error).message}; recovery ignores it and ${journal.records.length - i - 1} later records`);
        break;
      }
      const problem = record.kind === 'put' ? locationProblem(record.location, blocks) : undefined;
      if (problem) {
        warnings.push(`${journalFile}: revision ${rev} ${problem}; recovery stops before it`);
        break;
      }
      journalRecords.push(record);
      journalPayloads.push(payload);
    }
  }
  if (journal && journal.ignoredBytes > 0) {
    warnings.push(
      `${journalFile}: ${journal.ignoredBytes} bytes at the end are not a complete record ` +
        '(a write in progress, or a torn write); ignored',
    );
  }
  return {
    dir,
    dbFile,
    dbSlot,
    db,
    dbRecords,
    dbNextBackendFile,
    journalFile,
    journalRecords,
    journalPayloads,
    blocks,
    total: dbRecords + journalRecords.length,
    warnings,
  };
}

async function blockSizes(dir: string): Promise<Map<number, number>> {
  const listing = await listStoreDir(dir);
  const sizes = new Map<number, number>();
  await Promise.all(
    [...listing.blocks].map(async ([id, name]) => {
      try {
        sizes.set(id, (await fs.stat(path.join(dir, name))).size);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }),
  );
  return sizes;
}

/** Why a put's location cannot be served from these blocks, or undefined when it can. */
export function locationProblem(loc: Location, blocks: ReadonlyMap<number, number>): string | undefined {
  if (loc.offset < 0 || loc.size < 0 || loc.block < 0) return 'has a negative block, offset or size';
  if (loc.size === 0) return undefined;
  const size = blocks.get(loc.block);
  if (size === undefined) return `points into ${blockFileName(loc.block)}, which does not exist`;
  if (loc.offset + loc.size > size) {
    return `points past the end of ${blockFileName(loc.block)} (${loc.offset}+${loc.size} > ${size} bytes)`;
  }
  return undefined;
}

/** The id the next block would get: never one the db counts or one on disk. */
export function nextBlockIdOf(snapshot: StoreSnapshot): number {
  let next = snapshot.dbNextBackendFile;
  for (const id of snapshot.blocks.keys()) next = Math.max(next, id + 1);
  return next;
}

export interface SnapshotRecord {
  rev: number;
  record: RawRecord;
}

/** Every record of a snapshot in order, decoded one at a time. */
export function* snapshotRecords(snapshot: StoreSnapshot): Generator<SnapshotRecord> {
  let rev = 0;
  if (snapshot.db && snapshot.dbFile) {
    const { db, dbFile } = snapshot;
    for (const span of dbRecordSpans(db, dbFile)) {
      yield { rev, record: decoding(dbFile, rev, () => decodeRawRecord(db, span.start, span.end, dbFile, rev)) };
      rev++;
    }
  }
  for (const record of snapshot.journalRecords) yield { rev: rev++, record };
}

/** The revision, kind and raw key of every record, leaving locations undecoded (much cheaper). */
export function* snapshotKeys(snapshot: StoreSnapshot): Generator<{ rev: number; kind: 'put' | 'delete'; rawKey: string }> {
  let rev = 0;
  if (snapshot.db && snapshot.dbFile) {
    const { db, dbFile } = snapshot;
    for (const span of dbRecordSpans(db, dbFile)) {
      const { kind, rawKey } = decoding(dbFile, rev, () => decodeRecordKey(db, span.start, span.end, dbFile, rev));
      yield { rev: rev++, kind, rawKey };
    }
  }
  for (const record of snapshot.journalRecords) yield { rev: rev++, kind: record.kind, rawKey: record.rawKey };
}

/** Runs a decoder, reporting a malformed record (protobufjs throws a bare RangeError) as corruption. */
function decoding<T>(file: string, rev: number, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    if (err instanceof StoreCorruptError) throw err;
    throw new StoreCorruptError(`${file}: revision ${rev} cannot be decoded: ${(err as Error).message}`);
  }
}

/** The first `count` records of a snapshot, encoded as on disk (rebase copies them verbatim). */
export function* snapshotPayloads(snapshot: StoreSnapshot, count: number): Generator<Uint8Array> {
  let rev = 0;
  if (snapshot.db && snapshot.dbFile) {
    for (const span of dbRecordSpans(snapshot.db, snapshot.dbFile)) {
      if (rev++ >= count) return;
      yield snapshot.db.subarray(span.start, span.end);
    }
  }
  for (const payload of snapshot.journalPayloads) {
    if (rev++ >= count) return;
    yield payload;
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
export function* historyEntries(snapshot: StoreSnapshot, opts: HistoryOptions = {}): Generator<HistoryEntry> {
  const rawKey = opts.key === undefined ? undefined : toRawKey(opts.key);
  const rawPrefix = opts.prefix === undefined ? undefined : toRawKey(opts.prefix);
  const keyMatches = (raw: string) => (rawKey === undefined || raw === rawKey) && (rawPrefix === undefined || raw.startsWith(rawPrefix));
  const from = opts.from ?? 0;
  const to = opts.to ?? Infinity;
  const lastRevOfKey = opts.live ? lastRevisions(snapshot, keyMatches) : undefined;
  const tail = opts.tail === undefined ? undefined : new Ring<HistoryEntry>(opts.tail);
  const records: Iterable<LocatedRecord> = opts.locations === false && opts.op === undefined ? snapshotKeys(snapshot) : locatedRecords(snapshot);

  for (const record of records) {
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
function* locatedRecords(snapshot: StoreSnapshot): Generator<LocatedRecord> {
  // Every put is observed, whatever the filters, so that copies of earlier puts are recognised.
  const copies = new CopyDetector();
  for (const { rev, record } of snapshotRecords(snapshot)) {
    if (record.kind === 'delete') yield { rev, kind: 'delete', rawKey: record.rawKey };
    else yield { rev, kind: 'put', rawKey: record.rawKey, location: record.location, copyOf: copies.observe(record.location, rev) };
  }
}

/** The same entries, reading the snapshot first when given a directory. */
export async function* readHistory(source: string | StoreSnapshot, opts: HistoryOptions = {}): AsyncGenerator<HistoryEntry> {
  const snapshot = typeof source === 'string' ? await readSnapshot(source) : source;
  yield* historyEntries(snapshot, opts);
}

const NON_ASCII = /[^\x00-\x7f]/;

/** Raw keys hold UTF-8 bytes as latin1 characters: an ASCII key is already the key. */
function keyOf(raw: string): string {
  return NON_ASCII.test(raw) ? fromRawKey(raw) : raw;
}

/** Raw key -> revision of its last record, for the keys `wanted` accepts. */
function lastRevisions(snapshot: StoreSnapshot, wanted: (raw: string) => boolean): Map<string, number> {
  const last = new Map<string, number>();
  for (const { rev, rawKey } of snapshotKeys(snapshot)) {
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

export function describeRevision(snapshot: StoreSnapshot, rev: number): RevisionDetail {
  if (!Number.isInteger(rev) || rev < 0 || rev >= snapshot.total) {
    throw new RevisionOutOfRangeError(snapshot.dir, rev, snapshot.total);
  }
  const copies = new CopyDetector();
  let found: { record: RawRecord; copyOf: number | undefined } | undefined;
  let lastRevOfKey = rev;
  for (const item of snapshotRecords(snapshot)) {
    const copyOf = item.record.kind === 'put' ? copies.observe(item.record.location, item.rev) : undefined;
    if (item.rev === rev) found = { record: item.record, copyOf };
    else if (found && item.record.rawKey === found.record.rawKey) lastRevOfKey = item.rev;
  }
  const { record, copyOf } = found!;
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
