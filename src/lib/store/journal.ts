/**
 * The journal: every acknowledged change since the last db checkpoint, so that a reply never
 * waits for a db rewrite. File layout:
 *
 *   header  "ZKVJ" | u32 version (2) | u64 base revision      (16 bytes, little-endian)
 *           version 3, for a compacted history: + u64 first revision | u64 history start (32 bytes)
 *   record  u32 payload length | u32 CRC-32 of payload | payload (an encoded HistoryRecord)
 *
 * The high bit of a record's length marks the last record of a commit (version 2; in a version 1
 * journal every record stands alone). Records after the last marked one belong to a commit that
 * was never acknowledged.
 *
 * The base revision is the number of history records of the db the journal continues. After a
 * crash between writing a new db and replacing the journal, records below the db's length are
 * already in the db (recovery compares them). Recovery stops at the first torn or corrupt record.
 *
 * A compacted history's journal (version 3) also says where the db's records begin and where its
 * full history starts (Db.first_revision and the kept records before it): the original rewrites
 * a db it writes to without the fields it does not know, and the journal is then what keeps the
 * numbering of revisions (version ids).
 */
import zlib from 'node:zlib';
import { StoreCorruptError, durably } from './errors.js';
import { JOURNAL_FILE, TMP_SUFFIX } from './files.js';
import { type Storage, type WritableFile, readFully } from './storage/storage.js';

const MAGIC = 0x4a564b5a; // "ZKVJ" read as a little-endian u32
const VERSION = 2;
const VERSION_COMPACTED = 3;
const COMMIT_END = 0x80000000;
export const JOURNAL_HEADER_SIZE = 16;
const COMPACTED_HEADER_SIZE = 32;

/** Where a compacted history begins (see RecoveredHistory); zeros for a whole history. */
export interface JournalHistory {
  firstRevision: number;
  historyStart: number;
}
export const FRAME_HEADER_SIZE = 8;
/**
 * One commit appends at most this many records, and syncs the bodies of at most
 * SYNCED_WITH_JOURNAL_MAX bytes at the same time as the journal (one round of syncs instead of
 * two). A crash can then leave the last commit's records durable and some of their bytes not:
 * recovery checks the bytes of the last commit's small bodies against their MD5 and drops that
 * commit if one does not match (see recovery.ts); the cap bounds what it reads.
 */
export const MAX_COMMIT_RECORDS = 1024;
export const SYNCED_WITH_JOURNAL_MAX = 128 * 1024;

/** A record larger than this is not one the engine writes: treat it as damage. */
const MAX_RECORD_SIZE = 16 * 1024 * 1024;

export interface JournalContents {
  /** -1 when the file is too short to hold a header. */
  baseRevision: number;
  /** From a version 3 header (a compacted history); zeros otherwise. */
  history: JournalHistory;
  records: Uint8Array[];
  /** For each record: whether it ends a commit. */
  commitEnds: boolean[];
  /** Bytes after the last good record (a torn write or damage); 0 when the journal is clean. */
  ignoredBytes: number;
}

function header(baseRevision: number, history: JournalHistory | undefined): Buffer {
  // A whole history keeps the version 2 header, which earlier zipkv versions read too.
  const compacted = history !== undefined && history.historyStart > 0;
  const buf = Buffer.alloc(compacted ? COMPACTED_HEADER_SIZE : JOURNAL_HEADER_SIZE);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(compacted ? VERSION_COMPACTED : VERSION, 4);
  buf.writeBigUInt64LE(BigInt(baseRevision), 8);
  if (compacted) {
    buf.writeBigUInt64LE(BigInt(history.firstRevision), 16);
    buf.writeBigUInt64LE(BigInt(history.historyStart), 24);
  }
  return buf;
}

/**
 * Frames records: one commit (the last record marks its end), or with `eachACommit`, records
 * already committed one by one (a new journal's copy of acknowledged records).
 */
export function frameRecords(payloads: readonly Uint8Array[], eachACommit = false): Buffer {
  let total = 0;
  for (const p of payloads) total += FRAME_HEADER_SIZE + p.length;
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  payloads.forEach((p, i) => {
    const end = eachACommit || i === payloads.length - 1;
    out.writeUInt32LE((p.length | (end ? COMMIT_END : 0)) >>> 0, pos);
    out.writeUInt32LE(zlib.crc32(p), pos + 4);
    out.set(p, pos + FRAME_HEADER_SIZE);
    pos += FRAME_HEADER_SIZE + p.length;
  });
  return out;
}

/** Reads the journal; undefined when there is none. */
export async function readJournal(storage: Storage): Promise<JournalContents | undefined> {
  let file;
  try {
    file = await storage.openRead(JOURNAL_FILE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const buf = Buffer.allocUnsafe(await file.size());
    await readFully(file, buf, buf.length, 0);
    return parseJournal(buf, `${storage.root}/${JOURNAL_FILE}`);
  } finally {
    await file.close();
  }
}

export function parseJournal(buf: Buffer, where: string): JournalContents {
  if (buf.length < JOURNAL_HEADER_SIZE) {
    // Journals are created whole (written aside, then renamed): this is damage, holding nothing.
    return { baseRevision: -1, history: { firstRevision: 0, historyStart: 0 }, records: [], commitEnds: [], ignoredBytes: buf.length };
  }
  const version = buf.readUInt32LE(4);
  if (buf.readUInt32LE(0) !== MAGIC || (version !== 1 && version !== VERSION && version !== VERSION_COMPACTED)) {
    throw new StoreCorruptError(`${where}: not a zipkv journal (bad magic or version)`);
  }
  if (version === VERSION_COMPACTED && buf.length < COMPACTED_HEADER_SIZE) {
    return { baseRevision: -1, history: { firstRevision: 0, historyStart: 0 }, records: [], commitEnds: [], ignoredBytes: buf.length };
  }
  const baseRevision = Number(buf.readBigUInt64LE(8));
  const history =
    version === VERSION_COMPACTED
      ? { firstRevision: Number(buf.readBigUInt64LE(16)), historyStart: Number(buf.readBigUInt64LE(24)) }
      : { firstRevision: 0, historyStart: 0 };
  if (history.firstRevision > history.historyStart || history.historyStart > baseRevision) {
    throw new StoreCorruptError(`${where}: a damaged header (first revision ${history.firstRevision}, history start ${history.historyStart}, base ${baseRevision})`);
  }
  const records: Uint8Array[] = [];
  const commitEnds: boolean[] = [];
  let pos = version === VERSION_COMPACTED ? COMPACTED_HEADER_SIZE : JOURNAL_HEADER_SIZE;
  while (pos + FRAME_HEADER_SIZE <= buf.length) {
    const word = buf.readUInt32LE(pos);
    const len = version === 1 ? word : word & ~COMMIT_END;
    const crc = buf.readUInt32LE(pos + 4);
    const end = pos + FRAME_HEADER_SIZE + len;
    if (len > MAX_RECORD_SIZE || end > buf.length) break;
    const payload = buf.subarray(pos + FRAME_HEADER_SIZE, end);
    if (zlib.crc32(payload) !== crc) break;
    records.push(payload);
    commitEnds.push(version === 1 || (word & COMMIT_END) !== 0);
    pos = end;
  }
  return { baseRevision, history, records, commitEnds, ignoredBytes: buf.length - pos };
}

/** Appends framed records; one writer per store, and callers serialise appends. */
export class JournalWriter {
  private constructor(
    private readonly file: WritableFile,
    private readonly where: string,
    private position: number,
    readonly baseRevision: number,
    private readonly headerSize: number,
  ) {}

  /**
   * Makes a journal after `baseRevision` records holding `records` (those written since), and
   * puts it in place of the previous one. The new file is opened, written and synced before it
   * replaces the old one, so the writer is never left on a file that is not the journal: if
   * anything fails before the rename, the previous journal is still the journal.
   */
  static async create(
    storage: Storage,
    baseRevision: number,
    records: readonly Uint8Array[],
    durable: boolean,
    history?: JournalHistory,
  ): Promise<JournalWriter> {
    const tmp = JOURNAL_FILE + TMP_SUFFIX;
    const where = `${storage.root}/${JOURNAL_FILE}`;
    const frames = frameRecords(records, true);
    const head = header(baseRevision, history);
    let file: WritableFile | undefined;
    try {
      file = await storage.create(tmp);
      await file.writev([head, frames], 0);
      if (durable) await durably(`${storage.root}/${tmp}`, 'fdatasync', () => file!.datasync());
      await storage.rename(tmp, JOURNAL_FILE);
    } catch (err) {
      await file?.close().catch(() => undefined);
      await storage.remove(tmp).catch(() => undefined);
      throw err;
    }
    if (durable) {
      try {
        await durably(storage.root, 'fsync', () => storage.syncDir());
      } catch (err) {
        await file.close().catch(() => undefined);
        throw err;
      }
    }
    return new JournalWriter(file, where, head.length + frames.length, baseRevision, head.length);
  }

  /** Bytes in the file, header included, up to the last durable append. */
  get length(): number {
    return this.position;
  }

  /** Bytes of records since the header. */
  get recordBytes(): number {
    return this.position - this.headerSize;
  }

  /**
   * Appends records and, when durable, fdatasyncs them. A failed write is cut back to the
   * previous end, so a partly written frame never hides the records appended after it.
   */
  async append(payloads: readonly Uint8Array[], durable: boolean): Promise<void> {
    const frames = frameRecords(payloads);
    const start = this.position;
    try {
      await this.file.writev([frames], start);
    } catch (err) {
      await durably(this.where, 'truncating after a failed write', () => this.file.truncate(start));
      throw err;
    }
    if (durable) await durably(this.where, 'fdatasync', () => this.file.datasync());
    this.position = start + frames.length;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
