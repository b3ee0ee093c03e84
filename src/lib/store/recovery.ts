/**
 * Recovery: the one reconciliation of db + journal, used by every reader of a store (serve,
 * history, rebase, verify, stats), so that all of them see the same history.
 *
 * The journal is read first, then the directory is listed and the current db replayed. Read in
 * that order, a checkpoint running meanwhile (db written, then journal replaced) can only make
 * the db newer than the journal, never older: the journal's records that the db already holds
 * must then be the db's own records, byte for byte, and are skipped; the rest follow the db.
 * Recovery stops, with a warning, at a journal record that cannot be decoded or that points
 * outside the blocks (writes made without fsync, or a new block whose directory entry was not
 * yet synced when the machine crashed), at records of a commit whose append never finished, and
 * at a small body of the last commit whose bytes do not match their MD5: a commit syncs such
 * bodies at the same time as its journal records, so a power loss can keep the records and lose
 * some of the bytes; that commit was never acknowledged.
 */
import { createHash } from 'node:crypto';
import { currentDbSlot } from './db-file.js';
import { RevisionOutOfRangeError, StoreCorruptError } from './errors.js';
import { JOURNAL_FILE, blockFileName, dbFileName, listStore } from './files.js';
import { type JournalContents, SYNCED_WITH_JOURNAL_MAX, readJournal } from './journal.js';
import { type PutFields, fromRawKey } from './object-index.js';
import { type RecordBytes, type ReplayHandler, decodeRecord, replayDbStream } from './replay.js';
import { type FileInfo, type ReadableFile, type Storage, fileStream, readFully } from './storage/storage.js';

export interface RecoveryOptions {
  /** Hand over at most this many records (opening at a revision: revision + 1). */
  limit?: number;
  /** Receives every record recovery accepts, in order. */
  visit?: ReplayHandler;
  /**
   * A db record pointing outside the blocks is an error (serve); otherwise it is passed on, so
   * that history, verify and rebase can show or refuse it themselves.
   */
  strict?: boolean;
  /** Keep the db open (the result's `db`) for further passes; the caller closes it. */
  keepDb?: boolean;
}

export interface RecoveredHistory {
  root: string;
  dbSlot: number | undefined;
  /** The db's file name, if the store has one. */
  dbName: string | undefined;
  /** The db, still open, when asked for (`keepDb`): it stays readable if a checkpoint replaces it. */
  db: ReadableFile | undefined;
  /** The revision after the db's last record (all of them, also past `limit`). */
  dbRecords: number;
  /** The revision of the db's first record: not 0 once compaction moved the history's start. */
  firstRevision: number;
  /**
   * The first revision whose whole history is kept; the records before it (from
   * `firstRevision`) stand for the objects live at that point. The oldest state one can open
   * is the one after revision historyStart - 1.
   */
  historyStart: number;
  /** The db's next_backend_file. */
  dbNextBlockId: number;
  dbCompressedSize: number;
  /** Encoded journal records after the db's, as far as recovery accepts them. */
  journalPayloads: Uint8Array[];
  /** Records in the history: the db's plus the accepted journal records. */
  total: number;
  /** Block id -> size and time, listed after the journal was read. */
  blocks: Map<number, FileInfo>;
  /** The id the next new block gets: never one the db counts, a record uses, or the disk holds. */
  nextBlockId: number;
  /** db slots other than the current one (a crash between writing a db and removing the older). */
  staleDbSlots: number[];
  warnings: string[];
}

/**
 * The oldest revision a store can be opened at (or rebased to): 0 for a full history; for a
 * compacted one, the revision before its start, whose state is the records kept for it.
 */
export function oldestRevision(h: { historyStart: number }): number {
  return Math.max(0, h.historyStart - 1);
}

/** Throws RevisionOutOfRangeError unless the history holds `revision`. */
export function assertRevision(dir: string, revision: number, history: { total: number; historyStart: number }): void {
  if (!Number.isInteger(revision) || revision < oldestRevision(history) || revision >= history.total) {
    throw new RevisionOutOfRangeError(dir, revision, history);
  }
}

/** Why a put's location cannot be served from these blocks, or undefined when it can. */
export function locationProblem(loc: { block: number; offset: number; size: number }, blocks: ReadonlyMap<number, FileInfo>): string | undefined {
  if (loc.offset < 0 || loc.size < 0 || loc.block < 0) return 'has a negative block, offset or size';
  if (loc.size === 0) return undefined;
  const size = blocks.get(loc.block)?.size;
  if (size === undefined) return `points into ${blockFileName(loc.block)}, which does not exist`;
  if (loc.offset + loc.size > size) {
    return `points past the end of ${blockFileName(loc.block)} (${loc.offset}+${loc.size} > ${size} bytes)`;
  }
  return undefined;
}

/** A small body of the journal's tail whose bytes recovery checks. */
interface BodyToCheck {
  rev: number;
  block: number;
  offset: number;
  size: number;
  md5: Buffer;
}

/** The index of the first body whose bytes do not match their MD5, or undefined. */
async function firstBodyMismatch(storage: Storage, checks: ReadonlyArray<BodyToCheck | undefined>): Promise<number | undefined> {
  const files = new Map<number, ReadableFile>();
  try {
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      if (!check) continue;
      let file = files.get(check.block);
      if (!file) files.set(check.block, (file = await storage.openRead(blockFileName(check.block))));
      const bytes = Buffer.allocUnsafe(check.size);
      await readFully(file, bytes, check.size, check.offset);
      if (!createHash('md5').update(bytes).digest().equals(check.md5)) return i;
    }
    return undefined;
  } finally {
    await Promise.all([...files.values()].map((f) => f.close()));
  }
}

export async function recoverHistory(storage: Storage, opts: RecoveryOptions = {}): Promise<RecoveredHistory> {
  const limit = opts.limit ?? Infinity;
  const visit = opts.visit;
  const root = storage.root;
  const journalWhere = `${root}/${JOURNAL_FILE}`;
  const warnings: string[] = [];

  let journal: JournalContents | undefined = await readJournal(storage);
  const listing = await listStore(storage);
  const blocks = new Map<number, FileInfo>();
  await Promise.all(
    [...listing.blocks].map(async ([id, name]) => {
      const info = await storage.stat(name);
      if (info) blocks.set(id, info);
    }),
  );
  let maxReferenced = -1;
  const noteBlock = (f: PutFields) => {
    if (f.size > 0 && f.block > maxReferenced) maxReferenced = f.block;
  };

  const dbSlot = currentDbSlot(listing.dbSlots, root);
  const dbName = dbSlot === undefined ? undefined : dbFileName(dbSlot);
  let db: ReadableFile | undefined;
  let dbRecords = 0;
  let firstRevision = 0;
  let historyStart = 0;
  let dbNextBlockId = 0;
  let dbCompressedSize = 0;
  if (dbName) {
    const where = `${root}/${dbName}`;
    db = await storage.openRead(dbName);
    try {
      dbCompressedSize = await db.size();
      // Journal records the db already holds: compared with the db's own as it is replayed.
      const overlapFrom = journal && journal.baseRevision >= 0 ? journal.baseRevision : Infinity;
      const overlapTo = journal ? overlapFrom + journal.records.length : 0;
      const compare = (rev: number, bytes: RecordBytes) => {
        if (rev < overlapFrom || rev >= overlapTo) return;
        const payload = journal!.records[rev - overlapFrom]!;
        if (Buffer.compare(payload, bytes.buf.subarray(bytes.start, bytes.end)) !== 0) {
          throw new StoreCorruptError(
            `${journalWhere}: record ${rev - overlapFrom} is not revision ${rev} of the db, as the journal's base revision (${overlapFrom}) says: ` +
              'the journal header or the db is damaged',
          );
        }
      };
      const replayed = await replayDbStream(
        fileStream(db),
        where,
        {
          put(rawKey, fields, rev, bytes) {
            compare(rev, bytes);
            if (opts.strict) {
              const problem = locationProblem(fields, blocks);
              if (problem) throw new StoreCorruptError(`${where}: revision ${rev} (${fromRawKey(rawKey)}) ${problem}`);
            }
            noteBlock(fields);
            visit?.put(rawKey, fields, rev, bytes);
          },
          delete(rawKey, rev, bytes, modifiedMs) {
            compare(rev, bytes);
            visit?.delete(rawKey, rev, bytes, modifiedMs);
          },
        },
        limit,
      );
      dbRecords = replayed.records;
      firstRevision = replayed.firstRevision;
      historyStart = replayed.historyStart;
      dbNextBlockId = replayed.nextBlockId;
    } catch (err) {
      await db.close();
      throw err;
    }
    if (!opts.keepDb) {
      await db.close();
      db = undefined;
    }
  }

  // A compacted history's journal continues a db that begins at a later revision. A db that no
  // longer says so was rewritten by a tool that drops the fields it does not know (the original
  // zipkvserver, after writes to a compacted directory): its records are now the whole history,
  // numbered from 0, and an empty journal has nothing to add to it.
  if (journal && journal.history.historyStart > 0 && historyStart === 0 && journal.records.length === 0 && dbName !== undefined) {
    warnings.push(
      `${root}/${dbName}: the db no longer says where its history begins (it began at revision ${journal.history.historyStart}, ` +
        'as the journal says): another tool, such as the original zipkvserver, rewrote it; its records are taken as the whole history, from revision 0',
    );
    journal = undefined;
  }

  // Even an empty journal says how many records the db had when it was started: a db with
  // fewer (cut short at a gzip member boundary, or replaced by an older one) lost writes.
  if (journal && journal.baseRevision > dbRecords) {
    await db?.close();
    throw new StoreCorruptError(
      `${journalWhere} continues revision ${journal.baseRevision}, but the db holds only ${dbRecords} records: ` +
        'the db is older than the journal (was a db file replaced or removed?)',
    );
  }

  let journalPayloads: Uint8Array[] = [];
  if (journal && journal.baseRevision >= 0) {
    // First the records that decode and point inside the blocks, then the check of the last
    // commit's bytes, and only then are they handed over.
    const checks: Array<BodyToCheck | undefined> = [];
    const ends: boolean[] = [];
    let stopped = false;
    for (let i = 0, rev = journal.baseRevision; i < journal.records.length && !stopped; i++, rev++) {
      if (rev < dbRecords) continue; // compared above
      const payload = journal.records[i]!;
      const later = journal.records.length - i - 1;
      let check: BodyToCheck | undefined;
      try {
        decodeRecord(payload, journalWhere, rev, {
          put(_rawKey, fields, r) {
            const problem = locationProblem(fields, blocks);
            if (problem) {
              warnings.push(`${journalWhere}: revision ${r} ${problem}; recovery stops before it and ignores ${later} later records`);
              stopped = true;
              return;
            }
            if (fields.size > 0 && fields.size <= SYNCED_WITH_JOURNAL_MAX && fields.md5At >= 0) {
              const md5 = Buffer.from(fields.buf.subarray(fields.md5At, fields.md5At + 16));
              check = { rev: r, block: fields.block, offset: fields.offset, size: fields.size, md5 };
            }
          },
          delete() {},
        });
      } catch (err) {
        warnings.push(`${(err as Error).message}; recovery ignores it and ${later} later records`);
        stopped = true;
      }
      if (stopped) break;
      journalPayloads.push(payload);
      checks.push(check);
      ends.push(journal.commitEnds[i]!);
    }
    // Records after the last commit's end belong to a commit whose append never finished: it
    // was never acknowledged.
    let complete = ends.lastIndexOf(true) + 1;
    if (complete < journalPayloads.length) {
      warnings.push(`${journalWhere}: ignored ${journalPayloads.length - complete} records of a commit that was never completed (never acknowledged)`);
      journalPayloads = journalPayloads.slice(0, complete);
    }
    // The last commit's small bodies were synced at the same time as its records: a crash of
    // the machine can have kept the records and lost some bytes. Earlier commits were complete
    // before the next began, so only the last one is checked.
    const lastStart = complete < 2 ? 0 : ends.lastIndexOf(true, complete - 2) + 1;
    let bad: number | undefined;
    try {
      bad = await firstBodyMismatch(storage, checks.slice(lastStart, complete));
    } catch (err) {
      await db?.close();
      throw err;
    }
    if (bad !== undefined) {
      complete = lastStart;
      warnings.push(
        `${journalWhere}: the bytes of revision ${checks[lastStart + bad]!.rev} do not match their MD5: its commit (from revision ` +
          `${dbRecords + lastStart}) was cut short by a crash of the machine and never acknowledged; recovery stops before it`,
      );
      journalPayloads = journalPayloads.slice(0, complete);
    }
    let rev = dbRecords;
    for (const payload of journalPayloads) {
      decodeRecord(payload, journalWhere, rev++, {
        put(rawKey, fields, r, bytes) {
          noteBlock(fields);
          if (r < limit) visit?.put(rawKey, fields, r, bytes);
        },
        delete(rawKey, r, bytes, modifiedMs) {
          if (r < limit) visit?.delete(rawKey, r, bytes, modifiedMs);
        },
      });
    }
    if (journal.ignoredBytes > 0) {
      warnings.push(`${journalWhere}: ignored ${journal.ignoredBytes} bytes of a torn or damaged tail after revision ${dbRecords + journalPayloads.length - 1}`);
    }
  } else if (journal && journal.ignoredBytes > 0) {
    warnings.push(`${journalWhere}: ignored ${journal.ignoredBytes} bytes, too short for a journal header (damaged?)`);
  }

  let maxExisting = -1;
  for (const id of listing.blocks.keys()) maxExisting = Math.max(maxExisting, id);
  return {
    root,
    dbSlot,
    dbName,
    db,
    dbRecords,
    firstRevision,
    historyStart,
    dbNextBlockId,
    dbCompressedSize,
    journalPayloads,
    total: dbRecords + journalPayloads.length,
    blocks,
    nextBlockId: Math.max(dbNextBlockId, maxExisting + 1, maxReferenced + 1),
    staleDbSlots: listing.dbSlots.filter((slot) => slot !== dbSlot),
    warnings,
  };
}
