/**
 * Writes and group commit: where a write is acknowledged, and why that is safe.
 *
 * `put`, `copy` and `delete` resolve only after their batch's commit has (1) written the small
 * bodies it holds, (2) fdatasync'ed every block the batch's bodies went to, (3) fsync'ed the
 * directory if a block file was created, and (4) appended the batch's records to the journal and
 * fdatasync'ed it. Only then is the in-memory index updated, so readers never see a write that a
 * crash could take back. Concurrent writers share those syncs: while one batch is made durable,
 * the next one gathers.
 *
 * When every body of a batch is small (SYNCED_WITH_JOURNAL_MAX), steps 2-4 run at the same time:
 * one round of syncs on the path of a reply instead of two. A power loss in the middle can then
 * keep the journal records and lose some of the bytes; recovery checks the small bodies of the
 * last commit against their MD5 and stops before the first that does not match (a commit is at
 * most MAX_COMMIT_RECORDS records, so it knows how far back to look). Batches with a larger body
 * sync their blocks first, so recovery never has to read large bodies.
 *
 * A failed sync stops all writes (see DurabilityError): the batch is never acknowledged, and no
 * later one is either, because Linux reports a writeback error only once and a later sync would
 * "succeed" over the lost pages. A failed write (a full disk) fails its batch only.
 */
import type { Readable } from 'node:stream';
import type { BlockWriter, OpenBlock, Reservation } from './blocks.js';
import { type BodyCache, CACHED_BODY_MAX } from './body-cache.js';
import { type Body, BodyCheck, writePieces } from './body.js';
import type { HistoryLog } from './checkpoint.js';
import { BodySizeMismatchError, DurabilityError, type FailureLatch, ObjectExistsError, ObjectTooLargeError, VersionForgottenError } from './errors.js';
import { MAX_OBJECT_SIZE } from './files.js';
import { MAX_COMMIT_RECORDS, SYNCED_WITH_JOURNAL_MAX } from './journal.js';
import { IndexEntry, type ObjectIndex, toRawKey } from './object-index.js';
import { type HistoryRecord, type Location, encodeHistoryRecord, encodeMetadata } from './schema.js';

export interface PutOptions {
  /** Body size (Content-Length); required for a stream (stage a body of unknown size first). */
  size?: number;
  /** Header name -> value, kept in the index (user `x-amz-meta-*` and standard headers). */
  metadata?: Record<string, string>;
  /** MD5 the client announced (Content-MD5): a mismatch stores nothing. */
  expectedMd5?: Buffer;
  /** ETag to record instead of the hex MD5 (multipart uploads). */
  etag?: string;
  /** Write time to record instead of now (rebase --into keeps the original's). */
  modifiedMs?: number;
  /** Only if the key holds no live object when the write commits (If-None-Match: *). */
  ifAbsent?: boolean;
}

type PendingOp = {
  raw: string;
  record: HistoryRecord;
  entry: IndexEntry | undefined; // undefined for a delete
  reservation: Reservation | undefined;
  /** A small body, held until the commit writes the batch's bodies together. */
  data?: Buffer[];
  /** Fails with ObjectExistsError if the key is live when the batch is committed. */
  ifAbsent?: boolean;
  /** With the record's revision, or undefined when the op wrote no record. */
  resolve: (revision: number | undefined) => void;
  reject: (err: Error) => void;
};

type NewOp = Omit<PendingOp, 'resolve' | 'reject'>;

/** What a write recorded: the revision is its version id. */
export interface Written {
  entry: IndexEntry;
  revision: number;
}

/** A record just made durable, with its revision (for the index of versions). */
export interface CommittedRecord {
  revision: number;
  raw: string;
  entry: IndexEntry | undefined; // undefined for a delete
  /** A delete's time. */
  deletedMs?: number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Work on the history beside the writes, one at a time: a checkpoint, or a compaction's new db.
 * `background` starts between two commits (its synchronous start runs there, before any other
 * commit) and runs while commits go on; `between` then runs between two commits.
 */
export interface HistoryJob {
  background(): Promise<void>;
  between(): Promise<void>;
}

interface RunningJob {
  job: HistoryJob;
  waiters: Waiter[];
  /** A checkpoint: its failure delays the next one (see retryAt). */
  checkpoint: boolean;
  settled: boolean;
  error?: Error;
}

/** Where a copy's source went when compaction moved or dropped its bytes. */
interface MovedBlock {
  places: Map<number, { block: number; offset: number }>;
  until: number;
}

/** How long the new places of moved bytes are remembered for copies whose source was looked up before the move. */
const MOVED_MEMORY_MS = 10 * 60_000;

/**
 * Bodies up to this size are held in memory until their commit, which writes all of a batch's
 * small bodies with one writev per run of adjacent reservations: one system call for many
 * requests instead of one each. Larger bodies stream into their block as they arrive.
 */
const DEFERRED_BODY_MAX = SYNCED_WITH_JOURNAL_MAX;
/** Memory held, in all, for small bodies waiting for their commit. */
const HELD_BODY_BYTES = 64 * 1024 * 1024;

export class Writer {
  private pending: PendingOp[] = [];
  private looping: Promise<void> | undefined;
  private checkpointWaiters: Waiter[] = [];
  private jobs: Array<{ job: HistoryJob; waiter: Waiter }> = [];
  private running: RunningJob | undefined;
  private readonly moved = new Map<number, MovedBlock>();
  private runningDone: Promise<void> | undefined;
  /** After a failed checkpoint, none is started for the journal's size before this time. */
  private retryAt = 0;
  private retryDelay = 0;
  /** Bytes of small bodies held until their commit (at most HELD_BODY_BYTES). */
  private heldBytes = 0;

  constructor(
    private readonly index: ObjectIndex,
    private readonly blocks: BlockWriter,
    private readonly log: HistoryLog,
    private readonly latch: FailureLatch,
    private readonly durable: boolean,
    private readonly syncDir: () => Promise<void>,
    private readonly warn: (message: string) => void,
    private readonly cache: BodyCache,
  ) {}

  /** Stores `body` (of `opts.size` bytes when a stream) under `key`; resolves once durable. */
  async put(key: string, body: Body, opts: PutOptions = {}): Promise<Written> {
    const size = body instanceof Uint8Array ? body.length : opts.size!;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`an object size is a whole number of bytes, not ${size}`);
    if (size > MAX_OBJECT_SIZE) throw new ObjectTooLargeError(size, MAX_OBJECT_SIZE);
    if (body instanceof Uint8Array && opts.size !== undefined && opts.size !== size) {
      throw new BodySizeMismatchError(opts.size, size);
    }
    const reservation = size > 0 ? this.blocks.reserve(size) : undefined;
    let held = 0;
    try {
      const check = new BodyCheck(size, opts.expectedMd5);
      let data: Buffer[] | undefined;
      if (reservation && size <= DEFERRED_BODY_MAX && this.heldBytes + size <= HELD_BODY_BYTES) {
        held = size;
        this.heldBytes += size;
        data = await check.readAll(body);
      } else if (reservation) {
        // A small body over the memory budget (many slow uploads at once) is written chunk by
        // chunk as it arrives, so it holds no more than its socket's buffer.
        const { block, offset } = reservation;
        const pieceBytes = size <= DEFERRED_BODY_MAX ? 0 : undefined;
        await writePieces(check.chunks(body), (buffers, position) => block.writev(buffers, position), offset, pieceBytes);
      } else {
        await check.readAll(body); // an empty body: only checks it is empty
      }
      const { md5 } = check.finish();
      const location: Location = {
        block: reservation?.block.id ?? 0,
        offset: reservation?.offset ?? 0,
        size,
        metadata: encodeMetadata(opts.metadata ?? {}),
        md5,
        modifiedMs: opts.modifiedMs ?? Date.now(),
        etag: opts.etag,
      };
      const entry = IndexEntry.fromLocation(location);
      const revision = await this.commit({ raw: toRawKey(key), record: { kind: 'put', key, location }, entry, reservation, data, ifAbsent: opts.ifAbsent });
      return { entry, revision: revision! };
    } catch (err) {
      if (!(body instanceof Uint8Array)) (body as Readable).destroy();
      throw err;
    } finally {
      this.heldBytes -= held;
      if (reservation) this.blocks.release(reservation);
    }
  }

  /** A new record pointing at `source`'s bytes, with its own metadata and time. */
  async copy(source: IndexEntry, key: string, metadata: Record<string, string> | undefined, modifiedMs?: number): Promise<Written> {
    const location: Location = {
      block: source.block,
      offset: source.offset,
      size: source.size,
      metadata: metadata ? encodeMetadata(metadata) : source.metadataBytes(),
      md5: source.md5 ? Buffer.from(source.md5, 'hex') : undefined,
      modifiedMs: modifiedMs ?? Date.now(),
      etag: source.etag,
    };
    const op: NewOp = { raw: toRawKey(key), record: { kind: 'put', key, location }, entry: IndexEntry.fromLocation(location), reservation: undefined };
    const revision = await this.commit(op);
    // The entry the commit recorded: compaction may have moved the source meanwhile.
    return { entry: op.entry!, revision: revision! };
  }

  /** Deletes `key`: the revision of its delete record, or undefined (no record) when it does not exist. */
  delete(key: string): Promise<number | undefined> {
    return this.commit({ raw: toRawKey(key), record: { kind: 'delete', key, modifiedMs: Date.now() }, entry: undefined, reservation: undefined });
  }

  /** Told of every batch of records just made durable, in order. */
  onCommit: ((records: CommittedRecord[]) => void) | undefined;

  /** Bytes of small bodies held in memory until their commit. */
  get heldBodyBytes(): number {
    return this.heldBytes;
  }

  /** A checkpoint that folds every write acknowledged before this call. */
  checkpoint(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.checkpointWaiters.push({ resolve, reject });
      this.kick();
    });
  }

  /** Runs `job` once no other is under way; resolves when its `between` has run. */
  run(job: HistoryJob): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.jobs.push({ job, waiter: { resolve, reject } });
      this.kick();
    });
  }

  /**
   * Compaction moved the bytes of `relocation`'s blocks and deleted `deleted` blocks: a copy
   * whose source was looked up before that gets the new place, or fails if it has none.
   */
  noteMoved(relocation: Map<number, Map<number, { block: number; offset: number }>>, deleted: readonly number[]): void {
    const until = Date.now() + MOVED_MEMORY_MS;
    for (const [id, m] of this.moved) if (m.until < Date.now()) this.moved.delete(id);
    for (const id of deleted) this.moved.set(id, { places: relocation.get(id) ?? new Map(), until });
  }

  /** Resolves when no commit and no checkpoint is under way. */
  async settled(): Promise<void> {
    while (this.looping || this.runningDone) {
      await this.looping;
      await this.runningDone;
    }
  }

  /** Queues `op` (the very object: the commit may update its record and entry) and waits for its batch. */
  private commit(op: NewOp): Promise<number | undefined> {
    return new Promise<number | undefined>((resolve, reject) => {
      const pending = op as PendingOp;
      pending.resolve = resolve;
      pending.reject = reject;
      this.pending.push(pending);
      this.kick();
    });
  }

  private kick(): void {
    // The loop starts in a microtask, after `looping` is set: a loop that ends without an
    // await must still find `looping` set when it clears it.
    if (!this.looping) this.looping = Promise.resolve().then(() => this.loop());
  }

  private hasWork(): boolean {
    return this.pending.length > 0 || this.running?.settled === true || (!this.running && (this.checkpointWaiters.length > 0 || this.jobs.length > 0));
  }

  private async loop(): Promise<void> {
    try {
      while (this.hasWork()) {
        if (this.pending.length > 0) {
          await this.commitBatch(this.pending.splice(0, MAX_COMMIT_RECORDS));
        }
        if (this.running?.settled) await this.finishJob(this.running);
        if (!this.running && (this.checkpointWaiters.length > 0 || (this.log.due && !this.latch.failure && Date.now() >= this.retryAt))) {
          this.startCheckpoint();
        } else if (!this.running && this.jobs.length > 0) {
          const { job, waiter } = this.jobs.shift()!;
          this.startJob(job, [waiter], false);
        }
      }
    } finally {
      // Cleared with no await after the last check, so a kick never finds a loop about to end.
      this.looping = undefined;
    }
  }

  private async commitBatch(batch: PendingOp[]): Promise<void> {
    if (this.latch.failure) {
      for (const op of batch) op.reject(this.latch.failure);
      return;
    }
    // Decide, in arrival order, which records the batch writes: a delete of a key that is not
    // live at that point writes nothing.
    const liveInBatch = new Map<string, boolean>();
    const applied: PendingOp[] = [];
    const skipped: PendingOp[] = [];
    for (const op of batch) {
      if (this.moved.size > 0 && !this.followMove(op)) continue;
      if (op.record.kind === 'delete') {
        const live = liveInBatch.get(op.raw) ?? this.index.has(op.raw);
        if (!live) {
          skipped.push(op);
          continue;
        }
        liveInBatch.set(op.raw, false);
      } else {
        // Decided here, in commit order, so two conditional writes of one key never both win.
        if (op.ifAbsent && (liveInBatch.get(op.raw) ?? this.index.has(op.raw))) {
          op.reject(new ObjectExistsError(op.record.key));
          continue;
        }
        liveInBatch.set(op.raw, true);
      }
      applied.push(op);
    }
    const firstRevision = this.log.records;
    try {
      if (applied.length > 0) {
        await writeDeferredBodies(applied, this.cache);
        const payloads = applied.map((op) => encodeHistoryRecord(op.record));
        if (!this.durable) await this.log.append(payloads);
        else if (applied.every((op) => !op.reservation || op.reservation.size <= SYNCED_WITH_JOURNAL_MAX)) {
          await allDone([this.syncBlocks(applied), this.log.append(payloads)]);
        } else {
          await this.syncBlocks(applied);
          await this.log.append(payloads);
        }
        this.log.accept(payloads);
        // Their bytes are durable now: the upstream tier may ship them with these records.
        for (const op of applied) if (op.reservation) op.reservation.block.unsettled.delete(op.reservation.offset);
      }
    } catch (err) {
      const reason = err instanceof DurabilityError ? this.latch.fail(err) : (err as Error);
      for (const op of batch) op.reject(reason);
      return;
    }
    for (const op of applied) {
      if (op.entry) this.index.set(op.raw, op.entry);
      else this.index.delete(op.raw);
    }
    if (this.onCommit) {
      this.onCommit(
        applied.map((op, i) => ({ revision: firstRevision + i, raw: op.raw, entry: op.entry, deletedMs: op.record.kind === 'delete' ? op.record.modifiedMs : undefined })),
      );
    }
    applied.forEach((op, i) => op.resolve(firstRevision + i));
    for (const op of skipped) op.resolve(undefined);
  }

  /**
   * A copy whose source's bytes compaction moved after it was looked up points at their new
   * place; one whose bytes were dropped (a forgotten version) fails. False when it failed.
   */
  private followMove(op: PendingOp): boolean {
    const record = op.record;
    if (record.kind !== 'put' || op.reservation || record.location.size === 0) return true;
    const moved = this.moved.get(record.location.block);
    if (!moved) return true;
    const to = moved.places.get(record.location.offset);
    if (!to) {
      op.reject(new VersionForgottenError(`the source of the copy to ${record.key} is older than the history kept, and was removed meanwhile`));
      return false;
    }
    record.location = { ...record.location, block: to.block, offset: to.offset };
    op.entry = IndexEntry.fromLocation(record.location);
    return true;
  }

  /** fdatasync of the blocks a batch wrote, and of the directory if one of them is new. */
  private async syncBlocks(applied: PendingOp[]): Promise<void> {
    const blocks = [...new Set(applied.flatMap((op) => (op.reservation ? [op.reservation.block] : [])))];
    // datasync also waits for the file to exist, so the directory sync below covers it.
    await allDone(blocks.map((b) => b.datasync()));
    const created = blocks.filter((b) => !b.entrySynced);
    if (created.length > 0) {
      await this.syncDir();
      for (const b of created) b.entrySynced = true;
    }
  }

  private startCheckpoint(): void {
    const waiters = this.checkpointWaiters;
    this.checkpointWaiters = [];
    let base = 0;
    this.startJob(
      {
        background: async () => {
          const nextBlockId = this.blocks.roll();
          base = await this.log.writeDb(nextBlockId);
        },
        between: () => this.log.replaceJournal(base),
      },
      waiters,
      true,
    );
  }

  private startJob(job: HistoryJob, waiters: Waiter[], checkpoint: boolean): void {
    if (this.latch.failure) {
      for (const w of waiters) w.reject(this.latch.failure);
      return;
    }
    const running: RunningJob = { job, waiters, checkpoint, settled: false };
    this.running = running;
    this.runningDone = job.background().then(
      () => undefined,
      (err: Error) => void (running.error = err),
    );
    void this.runningDone.then(() => {
      running.settled = true;
      this.kick();
    });
  }

  private async finishJob(running: RunningJob): Promise<void> {
    let error = running.error ?? this.latch.failure;
    if (!error) {
      try {
        await running.job.between();
      } catch (err) {
        error = err as Error;
      }
    }
    this.running = undefined;
    this.runningDone = undefined;
    if (error instanceof DurabilityError) error = this.latch.fail(error);
    else if (error && running.checkpoint) {
      // Not again at once: a disk that stays full would otherwise get a new db (and a new
      // block) at every commit. The journal still holds every write meanwhile.
      this.retryDelay = Math.min(Math.max(this.retryDelay * 2, 1000), 60_000);
      this.retryAt = Date.now() + this.retryDelay;
      this.warn(`checkpoint failed (the journal still holds every write; tried again in ${this.retryDelay / 1000} s at the earliest): ${error.message}`);
    } else if (running.checkpoint) this.retryDelay = 0;
    for (const w of running.waiters) {
      if (error) w.reject(error);
      else w.resolve();
    }
  }
}

/**
 * Waits for every step, then fails with a DurabilityError if any step had one: a sync error is
 * never hidden behind another step's failure, since the kernel reports it only once.
 */
async function allDone(steps: Array<Promise<void>>): Promise<void> {
  const results = await Promise.allSettled(steps);
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
  if (errors.length > 0) throw errors.find((e) => e instanceof DurabilityError) ?? errors[0];
}

/** Writes the held small bodies of a batch: one writev per run of adjacent reservations. */
async function writeDeferredBodies(ops: PendingOp[], cache: BodyCache): Promise<void> {
  const held = ops.filter((op) => op.data && op.reservation);
  if (held.length === 0) return;
  held.sort((a, b) => a.reservation!.block.id - b.reservation!.block.id || a.reservation!.offset - b.reservation!.offset);
  const writes: Promise<void>[] = [];
  let i = 0;
  while (i < held.length) {
    const first = held[i]!.reservation!;
    const block: OpenBlock = first.block;
    const buffers: Buffer[] = [...held[i]!.data!];
    let end = first.offset + first.size;
    let j = i + 1;
    for (; j < held.length; j++) {
      const next = held[j]!.reservation!;
      if (next.block !== block || next.offset !== end) break;
      buffers.push(...held[j]!.data!);
      end += next.size;
    }
    writes.push(block.writev(buffers, first.offset));
    i = j;
  }
  await Promise.all(writes);
  for (const op of held) {
    if (op.reservation!.size <= CACHED_BODY_MAX) cache.set(op.reservation!.block.id, op.reservation!.offset, op.data!);
    op.data = undefined;
  }
}
