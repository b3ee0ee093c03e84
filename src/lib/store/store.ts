/**
 * The store: one directory of blocks, a db and a journal, opened by one writer. This file is
 * the facade that wires the parts; each job lives in its own file:
 *
 *   recovery.ts    db + journal -> the history every reader sees (one reconciliation)
 *   reads.ts       head, list, read
 *   writes.ts      put, copy, delete and the group commit (where a write is acknowledged)
 *   checkpoint.ts  folding the journal into the next db slot, beside the writes
 *   compaction.ts  forgetting history older than the retention window, giving back block space
 *   staging.ts     bodies kept aside: spooled bodies of unknown size, multipart parts
 *   versions.ts    every record as a version of its key, its revision as version id
 *   storage/       the files themselves, behind one small interface
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BlockReader, BlockWriter } from './blocks.js';
import { BodyCache } from './body-cache.js';
import type { Body } from './body.js';
import { DEFAULT_CHECKPOINT_BYTES, HistoryLog } from './checkpoint.js';
import { DurabilityError, FailureLatch, StoreError, StoreFailedError, StoreStateError, durably } from './errors.js';
import {
  type CompactedDb,
  type CompactionPlan,
  type CompactionProgress,
  DEFAULT_COMPACTION_BYTES_PER_SECOND,
  DEFAULT_REWRITE_BELOW,
  copyNeededBytes,
  planCompaction,
  relocateRecord,
  relocated,
  writeCompactedDb,
} from './compaction.js';
import { DEFAULT_BLOCK_SIZE, JOURNAL_FILE, MAX_OBJECT_SIZE, blockFileName } from './files.js';
import { DirectoryLock } from './lock.js';
import { type IndexEntry, ObjectIndex } from './object-index.js';
import { type ListOptions, type ListResult, type ObjectInfo, ObjectReader } from './reads.js';
import { assertRevision, recoverHistory } from './recovery.js';
import { type StageOptions, type StagedBody, Staging } from './staging.js';
import { LocalStorage } from './storage/local.js';
import type { Storage } from './storage/storage.js';
import type { RemoteBucket } from './storage/remote.js';
import { TieredStorage } from './storage/tiered.js';
import { Shipper, type ShipSnapshot, type UpstreamStats, readLocalManifest } from './upstream.js';
import { type CommittedRecord, type PutOptions, type Written, Writer } from './writes.js';
import { type Version, VersionIndex, type VersionList, type VersionListOptions } from './versions.js';

export type { ListOptions, ListResult, ObjectInfo } from './reads.js';
export type { PutOptions } from './writes.js';
export type { CompactionProgress } from './compaction.js';
export type { StagedBody, StageOptions } from './staging.js';
export type { Version, VersionList, VersionListOptions } from './versions.js';

export interface OpenOptions {
  /** Largest block file; default 40 MiB, as the original. */
  blockSize?: number;
  /** fsync before acknowledging (default true). Off only for benchmarks and throwaway data. */
  fsync?: boolean;
  /** Open without the lock and never write (history, verify, serving a snapshot). */
  readOnly?: boolean;
  /** Read-only view of the store as it was after this revision (inclusive). */
  revision?: number;
  /** Journal size that triggers a checkpoint, at least; it also grows with the db. */
  checkpointBytes?: number;
  /** Called with messages about recovery (a torn journal tail, say) and background trouble. */
  warn?: (message: string) => void;
  /** Called once when writes stop after a failed sync (default: `warn`). */
  onFailure?: (failure: StoreFailedError) => void;
  /** Where the files are (default: the local directory `dir`); tests inject faults here. */
  storage?: Storage;
  /**
   * Retention: operations older than this many ms may be forgotten, and background compactions
   * give their space back. Undefined (the default) keeps the whole history.
   */
  keepHistoryMs?: number;
  /** Background compaction: how often it looks for work, and how fast it copies. */
  compaction?: { intervalMs?: number; bytesPerSecond?: number; rewriteBelow?: number };
  /** Told of each background compaction that changed something. */
  onCompaction?: (result: CompactionResult) => void;
  /** A live copy in an S3 bucket prefix (see upstream.ts); writers only. */
  upstream?: {
    remote: RemoteBucket;
    intervalMs?: number;
    /** Local bytes of blocks kept at most: sealed blocks upstream beyond it are evicted (least recently read first). */
    cacheBytes?: number;
    log?: (message: string) => void;
  };
}

export interface CompactOptions {
  /** Operations older than now minus this are forgotten. */
  keepHistoryMs: number;
  /** Copy throttle in bytes per second (0: none). */
  bytesPerSecond?: number;
  rewriteBelow?: number;
  /** Skip the db rewrite when no block space comes back and fewer records than this would be forgotten. */
  minForgottenRecords?: number;
  onProgress?: (progress: CompactionProgress) => void;
}

/** What a compaction did. */
export interface CompactionResult {
  /** Where the history now begins (the oldest revision one can open is the one before). */
  historyStart: number;
  forgottenRecords: number;
  /** Records that stand for the objects kept from before the history's start. */
  keptRecords: number;
  blocksRewritten: number;
  blocksDeleted: number;
  bytesRead: number;
  bytesWritten: number;
  bytesFreed: number;
  durationMs: number;
}

/** Reads that looked an object up before compaction moved it may still use its old block this long. */
const RETIRE_GRACE_MS = 15_000;
const DEFAULT_COMPACTION_INTERVAL_MS = 10_000;

export interface StoreStats {
  /** The last revision (-1 for an empty history). */
  revision: number;
  liveObjects: number;
  liveBytes: number;
  nextBlockId: number;
  journalBytes: number;
  /** The current db slot (0..9), undefined before the first checkpoint. */
  dbSlot: number | undefined;
  /** Why writes are stopped, if they are. */
  failure: string | undefined;
  /** The first revision whose whole history is kept (0 until compaction forgets some). */
  historyStart: number;
  /** Memory held for small bodies waiting for their commit (bounded). */
  heldBodyBytes: number;
  /** Memory of the cache of small bodies (bounded). */
  cachedBodyBytes: number;
  /** Shipping to the upstream tier, when there is one. */
  upstream: UpstreamStats | undefined;
}

/** The parts only a writer has. */
interface WriterParts {
  lock: DirectoryLock;
  blocks: BlockWriter;
  log: HistoryLog;
  writer: Writer;
  staging: Staging;
}

export class Store {
  readonly dir: string;
  readonly blockSize: number;
  readonly durable: boolean;
  readonly readOnly: boolean;
  private readonly storage: Storage;
  private readonly index = new ObjectIndex();
  private readonly blockReader: BlockReader;
  private readonly blockTimes = new Map<number, number>();
  private readonly cache = new BodyCache();
  private readonly reader: ObjectReader;
  private readonly latch: FailureLatch;
  private readonly warn: (message: string) => void;
  private parts: WriterParts | undefined;
  private versionIndex: Promise<VersionIndex> | undefined;
  /** Counts compactions that changed the history, so a version index built across one is built again. */
  private historyGeneration = 0;
  private compacting: Promise<CompactionResult | undefined> | undefined;
  private compactionTimer: NodeJS.Timeout | undefined;
  /**
   * A compaction failed after it may have renamed its db in: the next one checkpoints first.
   * And when the last one found nothing to do, the time before which none can (see compactWith).
   */
  private compactionLeftover = false;
  private compactionIdleUntil = 0;
  /** Records in the history (of a read-only view: up to its revision). */
  private recordCount = 0;
  /** The first revision whose whole history is kept (see RecoveredHistory). */
  private historyStart = 0;
  private inFlight = 0;
  /** Counts reads and writes, so that compaction can tell when requests come in (and slow down). */
  private foreground = 0;
  private idle: (() => void) | undefined;
  private closed = false;
  private shipper: Shipper | undefined;
  /** Blocks compaction is writing (not complete: not to be shipped yet). */
  private readonly copyingBlocks = new Set<number>();

  private constructor(dir: string, opts: OpenOptions) {
    this.dir = dir;
    this.blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.durable = opts.fsync ?? true;
    this.readOnly = opts.readOnly === true || opts.revision !== undefined;
    const local = opts.storage ?? new LocalStorage(dir);
    this.storage = opts.upstream ? new TieredStorage(local, opts.upstream.remote) : local;
    this.blockReader = new BlockReader(this.storage);
    this.reader = new ObjectReader(this.index, this.blockReader, this.blockTimes, this.cache);
    this.warn = opts.warn ?? ((m) => process.emitWarning(m));
    const onFailure = opts.onFailure ?? ((f: StoreFailedError) => this.warn(f.message));
    this.latch = new FailureLatch(dir, onFailure);
  }

  /** Opens (and, for a writer, creates) the store in `dir`, recovering db + journal. */
  static async open(dir: string, opts: OpenOptions = {}): Promise<Store> {
    const store = new Store(path.resolve(dir), opts);
    if (!Number.isInteger(store.blockSize) || store.blockSize < 1 || store.blockSize > MAX_OBJECT_SIZE) {
      throw new RangeError(`block size must be between 1 and ${MAX_OBJECT_SIZE} bytes`);
    }
    let lock: DirectoryLock | undefined;
    if (!store.readOnly) {
      await fsp.mkdir(store.dir, { recursive: true });
      lock = await DirectoryLock.acquire(store.dir);
    }
    try {
      if (store.storage instanceof TieredStorage) await store.loadUpstreamBlocks(store.storage);
      else await store.assertNoBlockOnlyUpstream();
      await store.recover(opts, lock);
    } catch (err) {
      await lock?.release();
      throw err;
    }
    if (opts.upstream && store.parts && store.storage instanceof TieredStorage) {
      const parts = store.parts;
      const tiered = store.storage;
      const shipper = new Shipper(opts.upstream.remote, tiered, () => store.shipSnapshot(parts), () => parts.log.journalEpoch, {
        intervalMs: opts.upstream.intervalMs,
        cacheBytes: opts.upstream.cacheBytes,
        evict: async (name) => {
          // Handles on it close first, so its space comes back; later reads go upstream.
          await store.blockReader.retire([Number(name.slice('block'.length))], 0);
          await tiered.evict(name);
        },
        log: opts.upstream.log ?? store.warn,
        dir: store.dir,
      });
      try {
        await shipper.start();
      } catch (err) {
        opts.upstream.remote.close();
        await store.close();
        throw err;
      }
      store.shipper = shipper;
    }
    return store;
  }

  private async recover(opts: OpenOptions, lock: DirectoryLock | undefined): Promise<void> {
    const limit = opts.revision === undefined ? Infinity : opts.revision + 1;
    const index = this.index;
    index.beginBulk();
    let recovered;
    try {
      recovered = await recoverHistory(this.storage, {
        limit,
        strict: true,
        visit: {
          put: (rawKey, fields) => index.setFields(rawKey, fields),
          delete: (rawKey) => void index.delete(rawKey),
        },
      });
    } finally {
      index.endBulk();
    }
    for (const warning of recovered.warnings) this.warn(warning);
    for (const [id, info] of recovered.blocks) this.blockTimes.set(id, Math.floor(info.mtimeMs / 1000));
    this.recordCount = Math.min(recovered.total, limit);
    this.historyStart = recovered.historyStart;
    if (opts.revision !== undefined) assertRevision(this.dir, opts.revision, recovered);
    if (!lock) return;
    await this.storage.clearScratch();
    const blocks = new BlockWriter(this.storage, this.blockSize, recovered.nextBlockId, this.warn);
    const log = await HistoryLog.open(this.storage, recovered, recovered.nextBlockId, {
      durable: this.durable,
      checkpointBytes: opts.checkpointBytes ?? DEFAULT_CHECKPOINT_BYTES,
    });
    const syncDir = () => durably(this.storage.root, 'fsync', () => this.storage.syncDir());
    const writer = new Writer(this.index, blocks, log, this.latch, this.durable, syncDir, this.warn, this.cache);
    this.parts = { lock, blocks, log, writer, staging: new Staging(this.storage) };
    if (opts.keepHistoryMs !== undefined) this.scheduleCompactions(opts.keepHistoryMs, opts);
  }

  /** The last revision: the one `history` shows last and `rebase --to` takes (-1 when empty). */
  get revision(): number {
    return this.records - 1;
  }

  /** Records in the history. */
  get records(): number {
    return this.parts ? this.parts.log.records : this.recordCount;
  }

  /** Why writes are stopped (after a failed sync), or undefined while they are taken. */
  get failure(): StoreFailedError | undefined {
    return this.latch.failure;
  }

  stats(): StoreStats {
    const parts = this.parts;
    return {
      revision: this.revision,
      liveObjects: this.index.size,
      liveBytes: this.index.liveBytes,
      nextBlockId: parts?.blocks.nextBlockId ?? 0,
      journalBytes: parts?.log.journalBytes ?? 0,
      dbSlot: parts?.log.currentDbSlot,
      failure: this.latch.failure?.message,
      historyStart: parts?.log.historyStart ?? this.historyStart,
      heldBodyBytes: parts?.writer.heldBodyBytes ?? 0,
      cachedBodyBytes: this.cache.size,
      upstream: this.shipper?.stats(),
    };
  }

  /**
   * Opened without its upstream, a directory whose blocks are partly only upstream (evicted, or
   * left there by a restore) is refused: recovery would take their records for a torn tail.
   */
  private async assertNoBlockOnlyUpstream(): Promise<void> {
    const manifest = await readLocalManifest(this.storage);
    if (!manifest) return;
    const present = new Set(await this.storage.list());
    const missing = Object.keys(manifest.blocks).filter((name) => !present.has(name));
    if (missing.length === 0) return;
    const url = manifest.url ?? 's3://BUCKET/PREFIX';
    throw new StoreError(
      'EUPSTREAMONLY',
      `${this.dir}: ${missing.length} blocks (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}) are only upstream, in ${url}: ` +
        `open it with --upstream ${url}, or make a self-contained copy with zipkv restore ${url} -dir NEWDIR --all-blocks`,
    );
  }

  /** Blocks only upstream are known, before recovery looks for them, from the last manifest written. */
  private async loadUpstreamBlocks(tiered: TieredStorage): Promise<void> {
    const manifest = await readLocalManifest(tiered.local);
    if (manifest) tiered.setUpstreamBlocks(manifest.blocks, manifest.writtenMs);
  }

  /** What is committed now, for the upstream tier: taken between two commits, synchronously. */
  private shipSnapshot(parts: WriterParts): ShipSnapshot {
    return {
      ...parts.log.shippable(),
      nextBlockId: parts.blocks.nextBlockId,
      live: parts.blocks.liveBlocks(),
      writing: new Set(this.copyingBlocks),
    };
  }

  /** Ships to the upstream tier now (tests; shipping runs by itself every interval). */
  async shipUpstream(): Promise<void> {
    if (!this.shipper) throw new StoreStateError(`${this.dir} has no upstream`);
    await this.shipper.shipNow();
  }

  // ---------------------------------------------------------------- reads

  /** The live object under `key`, or undefined. */
  head(key: string): ObjectInfo | undefined {
    this.foreground++;
    return this.reader.head(key);
  }

  /** The ETag of an object; for one the original wrote (no stored MD5), hashes it once. */
  etagOf(info: ObjectInfo): Promise<string> {
    return this.reader.etagOf(info);
  }

  /** Bytes [start, end] (inclusive) of an object, or all of it. */
  createReadStream(info: ObjectInfo, start?: number, end?: number): Readable {
    this.assertReadable();
    this.foreground++;
    return this.reader.createReadStream(info, start, end);
  }

  /**
   * Gives back a chunk of `createReadStream` once nothing holds it any more (a socket has taken
   * its bytes), so that the next read reuses its memory.
   */
  recycle(chunk: Uint8Array): void {
    this.reader.recycle(chunk);
  }

  /** Bytes [start, end] (inclusive) of an object as one buffer: for small reads. */
  async read(info: ObjectInfo, start?: number, end?: number): Promise<Buffer> {
    this.assertReadable();
    this.foreground++;
    return this.reader.read(info, start, end);
  }

  /** A page of keys in UTF-8 byte order, with S3's delimiter roll-up. */
  list(opts: ListOptions): ListResult {
    this.foreground++;
    return this.reader.list(opts);
  }

  // ---------------------------------------------------------------- versions

  /** A page of versions (every put and delete of the history), each key's newest first. */
  async listVersions(opts: VersionListOptions): Promise<VersionList> {
    return (await this.versions()).list(opts);
  }

  /** Version `revision` of `key`, or undefined when that revision is not a version of that key. */
  async version(key: string, revision: number): Promise<Version | undefined> {
    return (await this.versions()).get(key, revision);
  }

  /** What a client sees of a version that has bytes (not a delete marker). */
  versionInfo(version: Version & { entry: IndexEntry }): ObjectInfo {
    return this.reader.info(version.key, version.entry, version.revision);
  }

  /** The index of versions, built on first use and then kept up to date by every commit. */
  private versions(): Promise<VersionIndex> {
    const parts = this.parts;
    if (!parts) return Promise.reject(new StoreStateError(`${this.dir}: versions are served by the store's writer`));
    this.versionIndex ??= this.buildVersions(parts).catch((err: unknown) => {
      this.versionIndex = undefined;
      parts.writer.onCommit = undefined;
      throw err;
    });
    return this.versionIndex;
  }

  private async buildVersions(parts: WriterParts): Promise<VersionIndex> {
    // Commits made while the history is read are queued, then added (those it already read are
    // skipped by revision).
    const queued: CommittedRecord[] = [];
    parts.writer.onCommit = (records) => void queued.push(...records);
    let index: VersionIndex;
    for (let attempt = 1; ; attempt++) {
      const generation = this.historyGeneration;
      try {
        index = await VersionIndex.build(this.storage, parts.log.view());
        // A compaction moved bytes or forgot records meanwhile: read the history again.
        if (generation === this.historyGeneration) break;
        queued.length = 0;
      } catch (err) {
        // A checkpoint replaced the db between looking at it and opening it.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 5) throw err;
      }
    }
    const add = (records: CommittedRecord[]) => {
      for (const r of records) index.add(r.revision, r.raw, r.entry ?? r.deletedMs ?? 0);
    };
    add(queued);
    parts.writer.onCommit = add;
    return index;
  }

  // ---------------------------------------------------------------- writes

  /**
   * Stores `body` under `key`; resolves once body and record are durable. A stream of unknown
   * size (no `opts.size`) is staged first, so that its size is known before it takes space in a
   * block.
   */
  put(key: string, body: Body, opts: PutOptions = {}): Promise<ObjectInfo> {
    return this.writing(async (parts) => {
      if (opts.size === undefined && !(body instanceof Uint8Array)) {
        const staged = await parts.staging.stage(body, { expectedMd5: opts.expectedMd5 });
        try {
          return await this.putStagedWith(parts, key, [staged], { ...opts, expectedMd5: undefined });
        } finally {
          await parts.staging.discard(staged);
        }
      }
      return this.written(key, await parts.writer.put(key, body, opts));
    });
  }

  /**
   * A copy: a new record pointing at the source's bytes, with its own metadata. The source is a
   * live key, or any version (`head`, `versionInfo`); undefined when the key does not exist.
   */
  copy(from: string | ObjectInfo, key: string, metadata?: Record<string, string>, modifiedMs?: number): Promise<ObjectInfo | undefined> {
    return this.writing(async (parts) => {
      const source = typeof from === 'string' ? this.reader.head(from) : from;
      if (!source) return undefined;
      return this.written(key, await parts.writer.copy(source.entry, key, metadata, modifiedMs));
    });
  }

  /** Deletes `key`: the revision of the delete record, or undefined (no record) when there is no such key. */
  delete(key: string): Promise<number | undefined> {
    return this.writing((parts) => parts.writer.delete(key));
  }

  /** Keeps a body aside (outside the history) until `putStaged` or `discardStaged`. */
  stage(body: Body, opts?: StageOptions): Promise<StagedBody> {
    return this.writing((parts) => parts.staging.stage(body, opts));
  }

  /** Stores staged bodies, in order, as one object. The staged bodies stay until discarded. */
  putStaged(key: string, bodies: readonly StagedBody[], opts: Omit<PutOptions, 'size'> = {}): Promise<ObjectInfo> {
    return this.writing((parts) => this.putStagedWith(parts, key, bodies, opts));
  }

  /** Frees a staged body's space. */
  async discardStaged(body: StagedBody): Promise<void> {
    await this.parts?.staging.discard(body);
  }

  private written(key: string, { entry, revision }: Written): ObjectInfo {
    return this.reader.info(key, entry, revision);
  }

  private async putStagedWith(parts: WriterParts, key: string, bodies: readonly StagedBody[], opts: PutOptions): Promise<ObjectInfo> {
    const size = bodies.reduce((n, b) => n + b.size, 0);
    return this.written(key, await parts.writer.put(key, parts.staging.stream(bodies), { ...opts, size }));
  }

  /**
   * Folds the journal into the next db slot now (after every write already acknowledged),
   * completing the open block, so the directory is one the original reads.
   */
  checkpoint(): Promise<void> {
    return this.writing((parts) => parts.writer.checkpoint());
  }

  // ---------------------------------------------------------------- compaction

  /**
   * Forgets operations older than `opts.keepHistoryMs` and gives back the space of bytes no kept
   * record needs, while writes go on (see compaction.ts). Undefined when there was nothing to do.
   */
  compact(opts: CompactOptions): Promise<CompactionResult | undefined> {
    return this.writing(async (parts) => {
      // One at a time: a second caller waits for the running one, then looks again.
      while (this.compacting) await this.compacting.catch(() => undefined);
      const run = this.compactWith(parts, opts).catch((err: unknown) => {
        // A failed sync stops the writes, wherever it happened (see FailureLatch).
        throw err instanceof DurabilityError ? this.latch.fail(err) : err;
      });
      this.compacting = run;
      try {
        return await run;
      } finally {
        this.compacting = undefined;
      }
    });
  }

  private async compactWith(parts: WriterParts, opts: CompactOptions): Promise<CompactionResult | undefined> {
    const started = Date.now();
    const storage = this.storage;
    const progress = opts.onProgress ?? (() => undefined);
    const stopIfClosing = () => {
      if (this.closed) throw new StoreStateError(`${this.dir} is closing: compaction stopped`);
    };
    progress({ phase: 'planning', done: 0, total: 1 });
    // From a fresh db after a failed run: a db it left beside the current one (renamed in,
    // never installed, its copies not yet referenced by anything here) is then overwritten, so
    // no db on disk can refer to copies this plan finds unneeded.
    if (this.compactionLeftover) {
      await parts.writer.checkpoint();
      this.compactionLeftover = false;
    }
    const historyStartBefore = parts.log.historyStart;
    let plan: CompactionPlan | undefined;
    for (let attempt = 1; !plan; attempt++) {
      try {
        plan = await planCompaction(storage, parts.log.view(), {
          cutoffMs: Date.now() - opts.keepHistoryMs,
          rewriteBelow: opts.rewriteBelow ?? DEFAULT_REWRITE_BELOW,
          sealedBelow: parts.blocks.nextBlockId,
          isLive: (id) => parts.blocks.isLive(id),
        });
      } catch (err) {
        // A checkpoint replaced the db between looking at it and opening it.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 5) throw err;
      }
    }
    const reclaims = plan.rewrite.size > 0 || plan.unneeded.length > 0;
    if (!reclaims && plan.forgottenRecords < Math.max(1, opts.minForgottenRecords ?? 1)) {
      // What a plan finds changes only once the horizon moves: when the operation at it (or,
      // with none, any later one) leaves the window. Until then, looking again is wasted.
      this.compactionIdleUntil = (plan.horizonTimeMs ?? Date.now()) + opts.keepHistoryMs;
      return undefined;
    }
    stopIfClosing();

    let seen = this.foreground;
    const copying = this.copyingBlocks;
    const copy = await copyNeededBytes(storage, plan.rewrite, {
      allocateId: () => {
        const id = parts.blocks.allocateId();
        copying.add(id);
        return id;
      },
      blockSize: this.blockSize,
      bytesPerSecond: opts.bytesPerSecond ?? DEFAULT_COMPACTION_BYTES_PER_SECOND,
      busy: () => seen !== (seen = this.foreground),
      durable: this.durable,
      onProgress: (done, total) => {
        stopIfClosing();
        progress({ phase: 'copying', done, total });
      },
    });
    copying.clear();
    const { relocation } = copy;
    // The db then holds every record acknowledged so far, and the journal continues it exactly.
    await parts.writer.checkpoint();
    progress({ phase: 'writing the db', done: 0, total: 1 });
    let compacted: CompactedDb | undefined;
    let deleted: number[] = [];
    this.compactionLeftover = true;
    await parts.writer.run({
      background: async () => {
        const db = parts.log.compactableDb();
        if (!db) throw new StoreStateError(`${this.dir}: a checkpoint is half done; compaction is left for later`);
        compacted = await writeCompactedDb(storage, db, Math.min(plan.horizon, db.end), relocation, this.durable);
        parts.log.installCompacted(compacted);
      },
      between: async () => {
        // The history changed: versions are read again. The copies hold the same bytes and are
        // durable, so the index may point at them even if the journal rewrite below fails
        // (the old blocks then stay, referenced by the journal).
        this.historyGeneration++;
        this.versionIndex = undefined;
        parts.writer.onCommit = undefined;
        if (relocation.size > 0) this.index.relocate((block, offset) => relocated(relocation, block, offset));
        const referenced = compacted!.referenced;
        const where = `${storage.root}/${JOURNAL_FILE}`;
        await parts.log.rewriteJournal((payload, rev) => {
          const moved = relocateRecord(payload, relocation, where, rev);
          if (moved.block !== undefined) referenced.add(moved.block);
          return moved.payload;
        });
        // Db and journal now refer to the copies only, durably: blocks no record uses can go
        // (not one a write may still use).
        deleted = [...plan.unneeded, ...plan.rewrite.keys()].filter((id) => !referenced.has(id) && !parts.blocks.isLive(id));
        parts.writer.noteMoved(relocation, deleted);
      },
    });
    this.compactionLeftover = false;
    progress({ phase: 'deleting', done: 0, total: deleted.length });
    let bytesFreed = 0;
    if (deleted.length > 0) {
      await this.blockReader.retire(deleted, RETIRE_GRACE_MS);
      for (const [i, id] of deleted.entries()) {
        bytesFreed += (await storage.stat(blockFileName(id)))?.size ?? 0;
        await storage.remove(blockFileName(id));
        progress({ phase: 'deleting', done: i + 1, total: deleted.length });
      }
      if (this.durable) await durably(storage.root, 'fsync', () => storage.syncDir());
    }
    bytesFreed -= copy.bytesCopied;
    return {
      historyStart: compacted!.historyStart,
      forgottenRecords: Math.max(0, compacted!.historyStart - historyStartBefore),
      keptRecords: compacted!.keptRecords,
      blocksRewritten: plan.rewrite.size,
      blocksDeleted: deleted.length,
      bytesRead: copy.bytesCopied,
      bytesWritten: copy.bytesCopied,
      bytesFreed,
      durationMs: Date.now() - started,
    };
  }

  /** Background compactions every interval (longer when one takes long), while the store is open. */
  private scheduleCompactions(keepHistoryMs: number, opts: OpenOptions): void {
    const base = opts.compaction?.intervalMs ?? DEFAULT_COMPACTION_INTERVAL_MS;
    const arm = (delay: number) => {
      this.compactionTimer = setTimeout(() => {
        this.compactionTimer = undefined;
        if (this.closed || this.latch.failure) return;
        if (Date.now() < this.compactionIdleUntil) return arm(Math.min(base, this.compactionIdleUntil - Date.now()));
        const started = Date.now();
        this.compact({
          keepHistoryMs,
          bytesPerSecond: opts.compaction?.bytesPerSecond,
          rewriteBelow: opts.compaction?.rewriteBelow,
          // A db rewrite only to forget a few records is not worth it.
          minForgottenRecords: 1000,
        }).then(
          (result) => {
            if (result) opts.onCompaction?.(result);
          },
          (err: Error) => {
            if (!this.closed && !(err instanceof StoreFailedError)) this.warn(`compaction failed (tried again later): ${err.message}`);
          },
        ).finally(() => {
          // At most about a tenth of the time goes to looking for work.
          if (!this.closed) arm(Math.max(base, 10 * (Date.now() - started)));
        });
      }, delay);
      this.compactionTimer.unref();
    };
    arm(base);
  }

  /** Writes a checkpoint (unless writes are stopped), closes the open block and releases the directory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.compactionTimer) clearTimeout(this.compactionTimer);
    const parts = this.parts;
    try {
      if (parts) {
        if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
        try {
          await parts.writer.settled();
          if (!this.latch.failure && parts.log.needsCheckpoint(parts.blocks.nextBlockId)) await parts.writer.checkpoint();
        } finally {
          await parts.blocks.close();
          await parts.log.close();
          // Upstream gets the state just checkpointed, so a restore needs no recovery.
          await this.shipper?.stop({ finalShip: !this.latch.failure });
          await this.storage.clearScratch().catch(() => undefined);
          await parts.lock.release();
        }
      }
    } finally {
      await this.blockReader.close();
    }
  }

  /** Runs a write, counted so that `close` waits for it; refused when writes are not taken. */
  private async writing<T>(write: (parts: WriterParts) => Promise<T>): Promise<T> {
    if (this.readOnly || !this.parts) throw new StoreStateError(`${this.dir} is open read-only`);
    if (this.closed) throw new StoreStateError(`${this.dir} is closed`);
    if (this.latch.failure) throw this.latch.failure;
    this.inFlight++;
    this.foreground++;
    try {
      return await write(this.parts);
    } finally {
      if (--this.inFlight === 0 && this.idle) {
        const idle = this.idle;
        this.idle = undefined;
        idle();
      }
    }
  }

  private assertReadable(): void {
    if (this.blockReader.closed) throw new StoreStateError(`${this.dir} is closed`);
  }
}

export function openStore(dir: string, opts?: OpenOptions): Promise<Store> {
  return Store.open(dir, opts);
}
