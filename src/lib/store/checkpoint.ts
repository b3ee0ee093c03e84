/**
 * Checkpoints: folding the journal into the next db slot, so that the journal stays short and
 * every db is one the original reads.
 *
 * A checkpoint runs beside the writes, in two steps. First, in the background, the next db is
 * written: the current db plus the records acknowledged so far, with the open block rolled so
 * that every block the db counts is complete. Writes go on meanwhile, appending to the current
 * journal. Then, between two commits, a new journal holding only the records the new db lacks
 * replaces the old one: that file is small, so writes pause only for its fsync. A crash at any
 * point leaves a db and a journal that recovery reconciles (see recovery.ts).
 */
import { writeNextDb } from './db-file.js';
import { FRAME_HEADER_SIZE, type JournalHistory, JournalWriter } from './journal.js';
import type { RecoveredHistory } from './recovery.js';
import { dbFileName } from './files.js';
import { durably } from './errors.js';
import type { Storage } from './storage/storage.js';

export const DEFAULT_CHECKPOINT_BYTES = 8 * 1024 * 1024;

export interface HistoryLogOptions {
  durable: boolean;
  /** Journal size that calls for a checkpoint, at least; it also grows with the db. */
  checkpointBytes: number;
}

/** The db + journal pair of a writer: where acknowledged records go, and how they are folded. */
export class HistoryLog {
  /** Records in the history. */
  private count: number;
  /** Encoded records in the journal and not yet in the db. */
  private unfolded: Uint8Array[];
  /** Records a checkpoint under way is writing into the next db. */
  private folding: Uint8Array[] = [];
  private dbSlot: number | undefined;
  private dbCompressedSize: number;
  /** See RecoveredHistory: where the db's records begin, and where its full history begins. */
  private firstRevision: number;
  private historyStartRevision: number;
  /** The next block id the current db records. */
  private dbNextBlockId: number;
  private journal: JournalWriter | undefined;
  /**
   * Changes when the journal file is replaced: odd while a replacement is under way (the file
   * under the journal's name may be either), even once it is done. A reader of the file by name
   * (the upstream tier) trusts what it read only if this was the same even number before and after.
   */
  journalEpoch = 0;
  /** Length of the journal file up to the end of the last accepted commit. */
  private acceptedBytes = 0;

  private constructor(
    private readonly storage: Storage,
    recovered: RecoveredHistory,
    private readonly opts: HistoryLogOptions,
  ) {
    this.count = recovered.total;
    this.unfolded = [...recovered.journalPayloads];
    this.dbSlot = recovered.dbSlot;
    this.dbCompressedSize = recovered.dbCompressedSize;
    this.dbNextBlockId = recovered.dbNextBlockId;
    this.firstRevision = recovered.firstRevision;
    this.historyStartRevision = recovered.historyStart;
  }

  /**
   * Takes over a recovered history for writing: removes a stale db slot, folds what the journal
   * holds into a new db, and starts a fresh journal.
   */
  static async open(storage: Storage, recovered: RecoveredHistory, nextBlockId: number, opts: HistoryLogOptions): Promise<HistoryLog> {
    // Two adjacent slots: a crash came between writing the newer db and removing the older.
    // The newer one has just been read in full; the older one must go now. Left behind, the
    // original would open it (it takes the lowest slot), and after the next checkpoint the two
    // remaining slots would no longer be adjacent, so no reader could tell which is current.
    if (recovered.staleDbSlots.length > 0) {
      await Promise.all(recovered.staleDbSlots.map((slot) => storage.remove(dbFileName(slot))));
      if (opts.durable) await durably(storage.root, 'fsync', () => storage.syncDir());
    }
    const log = new HistoryLog(storage, recovered, opts);
    if (log.unfolded.length > 0 || (log.dbSlot !== undefined && log.dbNextBlockId !== nextBlockId)) {
      await log.replaceJournal(await log.writeDb(nextBlockId));
    } else {
      await log.newJournal(log.count, []);
    }
    return log;
  }

  /** Records in the history (the next revision is this number). */
  get records(): number {
    return this.count;
  }

  /**
   * The history as it is now, for a reader that streams it: the current db's name and the
   * records after it (held in memory). The db file stays readable once opened, even if a
   * checkpoint replaces it meanwhile.
   */
  view(): { dbName: string | undefined; tail: Uint8Array[]; records: number; historyStart: number } {
    return {
      dbName: this.dbSlot === undefined ? undefined : dbFileName(this.dbSlot),
      tail: [...this.folding, ...this.unfolded],
      records: this.count,
      historyStart: this.historyStartRevision,
    };
  }

  /** What a new journal says of the db it continues (see journal.ts). */
  private journalHistory(): JournalHistory {
    return { firstRevision: this.firstRevision, historyStart: this.historyStartRevision };
  }

  /** The first revision whose whole history is kept. */
  get historyStart(): number {
    return this.historyStartRevision;
  }

  /**
   * The current db, when the journal continues it exactly (no checkpoint half done): what a
   * compaction may rewrite. Its records end at revision `end`.
   */
  compactableDb(): { name: string; slot: number; nextBlockId: number; end: number } | undefined {
    const end = this.count - this.unfolded.length - this.folding.length;
    if (this.dbSlot === undefined || this.folding.length > 0 || this.journal?.baseRevision !== end) return undefined;
    return { name: dbFileName(this.dbSlot), slot: this.dbSlot, nextBlockId: this.dbNextBlockId, end };
  }

  /** A compacted db replaced the current one (same records, same end): see compaction.ts. */
  installCompacted(db: { slot: number; compressedSize: number; firstRevision: number; historyStart: number }): void {
    this.dbSlot = db.slot;
    this.dbCompressedSize = db.compressedSize;
    this.firstRevision = db.firstRevision;
    this.historyStartRevision = db.historyStart;
  }

  /**
   * With no append running: the journal's records are rewritten by `rewrite` and a new journal
   * holding them replaces the current one (same base). Until it does, the current one stays.
   */
  async rewriteJournal(rewrite: (payload: Uint8Array, rev: number) => Uint8Array): Promise<void> {
    const base = this.count - this.unfolded.length;
    const rewritten = this.unfolded.map((payload, i) => rewrite(payload, base + i));
    const previous = this.journal;
    await this.newJournal(base, rewritten);
    this.unfolded = rewritten;
    await previous?.close();
  }

  get journalBytes(): number {
    return this.journal?.recordBytes ?? 0;
  }

  get currentDbSlot(): number | undefined {
    return this.dbSlot;
  }

  /** Whether a checkpoint would change the db: records to fold, or a block count to record. */
  needsCheckpoint(nextBlockId: number): boolean {
    return this.unfolded.length > 0 || this.dbNextBlockId !== nextBlockId;
  }

  /** The journal has grown past max(checkpointBytes, db size): a checkpoint is due. */
  get due(): boolean {
    return this.journalBytes > Math.max(this.opts.checkpointBytes, this.dbCompressedSize);
  }

  /** Appends a batch's records to the journal; durable when this resolves (see `accept`). */
  async append(payloads: readonly Uint8Array[]): Promise<void> {
    await this.journal!.append(payloads, this.opts.durable);
  }

  /**
   * The batch whose records were appended is committed (its blocks are durable too): they are
   * now part of the history. A batch that failed after its append is never accepted.
   */
  accept(payloads: readonly Uint8Array[]): void {
    for (const payload of payloads) {
      this.unfolded.push(payload);
      this.acceptedBytes += FRAME_HEADER_SIZE + payload.length;
    }
    this.count += payloads.length;
  }

  /**
   * Step one: writes the next db with every record appended so far. Appends may go on while it
   * runs. Returns the number of records the new db holds.
   */
  async writeDb(nextBlockId: number): Promise<number> {
    const folded = this.unfolded;
    const base = this.count;
    this.unfolded = [];
    this.folding = folded;
    try {
      const { slot, compressedSize } = await writeNextDb(this.storage, this.dbSlot, folded, nextBlockId, this.opts.durable);
      this.dbSlot = slot;
      this.dbCompressedSize = compressedSize;
      this.dbNextBlockId = nextBlockId;
    } catch (err) {
      // The journal still holds them: fold them next time.
      this.unfolded = folded.concat(this.unfolded);
      throw err;
    } finally {
      this.folding = [];
    }
    return base;
  }

  /**
   * Step two, with no append running: a journal after `base` records, holding those appended
   * since, replaces the current one. If it fails before the replacement, the current journal
   * stays the journal (recovery skips the records the db already holds).
   */
  async replaceJournal(base: number): Promise<void> {
    const previous = this.journal;
    await this.newJournal(base, this.unfolded);
    await previous?.close();
  }

  /** A journal after `base` records holding `records` replaces the current one (see journalEpoch). */
  private async newJournal(base: number, records: readonly Uint8Array[]): Promise<void> {
    this.journalEpoch++;
    try {
      this.journal = await JournalWriter.create(this.storage, base, records, this.opts.durable, this.journalHistory());
      this.acceptedBytes = this.journal.length;
    } finally {
      this.journalEpoch++;
    }
  }

  /** What the upstream tier ships: the current db and how much of the journal is committed. */
  shippable(): { dbName: string | undefined; journalEpoch: number; journalBytes: number; records: number } {
    return {
      dbName: this.dbSlot === undefined ? undefined : dbFileName(this.dbSlot),
      journalEpoch: this.journalEpoch,
      journalBytes: this.acceptedBytes,
      records: this.count,
    };
  }

  async close(): Promise<void> {
    await this.journal?.close();
    this.journal = undefined;
  }
}
