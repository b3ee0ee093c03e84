/**
 * The store: one directory of blocks, a db and a journal, opened by one writer.
 *
 * Where a write is acknowledged, and why that is safe: `put`, `copy` and `delete` resolve only
 * after `commit()` has (1) fdatasync'ed every block the batch's bodies were written to, (2)
 * fsync'ed the directory if a block file was created, and (3) appended the batch's records to
 * the journal and fdatasync'ed it. Only then is the in-memory index updated, so readers never
 * see a write that a crash could take back. Concurrent writers share those fsyncs: while one
 * batch is being made durable, the next one gathers (group commit).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BlockReader, BlockWriter, type Reservation } from './blocks.js';
import { currentDbSlot, writeNextDb } from './db-file.js';
import {
  BodySizeMismatchError,
  DigestMismatchError,
  ObjectTooLargeError,
  StoreCorruptError,
  StoreError,
  StoreStateError,
} from './errors.js';
import {
  DEFAULT_BLOCK_SIZE,
  JOURNAL_FILE,
  MAX_OBJECT_SIZE,
  SCRATCH_DIR,
  blockFileName,
  dbFileName,
  listStoreDir,
  syncDir,
} from './files.js';
import { JournalWriter, readJournal } from './journal.js';
import { type RecordCapture, replayDbFile } from './replay.js';
import { DirectoryLock } from './lock.js';
import { IndexEntry, ObjectIndex, fromRawKey, toRawKey } from './object-index.js';
import {
  type HistoryRecord,
  type Location,
  type RawRecord,
  decodeMetadata,
  decodeRawRecord,
  encodeHistoryRecord,
  encodeMetadata,
} from './schema.js';

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
  /** Called with messages about recovery (a torn journal tail, say). */
  warn?: (message: string) => void;
}

export interface PutOptions {
  /** Body size when known (Content-Length); without it the body is spooled first. */
  size?: number;
  /** Header name -> value, kept in the index (user `x-amz-meta-*` and standard headers). */
  metadata?: Record<string, string>;
  /** MD5 the client announced (Content-MD5): a mismatch stores nothing. */
  expectedMd5?: Buffer;
  /** ETag to record instead of the hex MD5 (multipart uploads). */
  etag?: string;
  /** Write time to record instead of now (rebase --into keeps the original's). */
  modifiedMs?: number;
}

/** What a client sees of an object. */
export interface ObjectInfo {
  key: string;
  size: number;
  /** Unquoted ETag; for objects the original wrote, computed on first use (see `etagOf`). */
  etag: string | undefined;
  lastModified: Date;
  metadata: Record<string, string>;
  /** Opaque handle for reads. */
  readonly entry: IndexEntry;
}

export interface ListOptions {
  prefix?: string;
  /** Exclusive start key (S3's marker / start-after / continuation). */
  after?: string;
  delimiter?: string;
  limit: number;
}

export interface ListResult {
  objects: ObjectInfo[];
  commonPrefixes: string[];
  truncated: boolean;
  /** The last key or common prefix returned, when truncated. */
  nextMarker?: string;
}

export interface StoreStats {
  revision: number;
  liveObjects: number;
  liveBytes: number;
  nextBlockId: number;
  journalBytes: number;
  /** The current db slot (0..9), undefined before the first checkpoint. */
  dbSlot: number | undefined;
}

type PendingOp = {
  raw: string;
  record: HistoryRecord;
  entry: IndexEntry | undefined; // undefined for a delete
  reservation: Reservation | undefined;
  /** A small body, held until the commit writes the batch's bodies together. */
  data?: Buffer[];
  resolve: (applied: boolean) => void;
  reject: (err: Error) => void;
};

const DEFAULT_CHECKPOINT_BYTES = 8 * 1024 * 1024;
/**
 * Bodies up to this size are held in memory until their commit, which writes all of a batch's
 * small bodies with one writev per run of adjacent reservations: one system call for many
 * requests instead of one each. Larger bodies stream into their block as they arrive.
 */
const DEFERRED_BODY_MAX = 128 * 1024;
/** Large bodies are written in pieces of about this size, one piece in flight at a time. */
const WRITE_PIECE = 1024 * 1024;

export class Store {
  readonly dir: string;
  readonly blockSize: number;
  readonly durable: boolean;
  readonly readOnly: boolean;
  private readonly index = new ObjectIndex();
  private readonly reader: BlockReader;
  private writer: BlockWriter | undefined;
  private journal: JournalWriter | undefined;
  private lock: DirectoryLock | undefined;
  private dbSlot: number | undefined;
  private dbCompressedSize = 0;
  private revisionCount = 0;
  private nextBlock = 0;
  private readonly blockMtimes = new Map<number, number>();
  /** Journal payloads not yet folded into the db. */
  private unfolded: Uint8Array[] = [];
  private pending: PendingOp[] = [];
  /** Callers of `checkpoint()` waiting for the commit loop to write one. */
  private checkpointWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private committing: Promise<void> | undefined;
  private inFlight = 0;
  private idle: (() => void) | undefined;
  private closed = false;
  private checkpointBytes: number;
  private spoolCounter = 0;
  private readonly warn: (message: string) => void;

  private constructor(dir: string, opts: OpenOptions) {
    this.dir = dir;
    this.blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.durable = opts.fsync ?? true;
    this.readOnly = opts.readOnly === true || opts.revision !== undefined;
    this.checkpointBytes = opts.checkpointBytes ?? DEFAULT_CHECKPOINT_BYTES;
    this.reader = new BlockReader(dir);
    this.warn = opts.warn ?? ((m) => process.emitWarning(m));
  }

  /** Opens (and, for a writer, creates) the store in `dir`, recovering db + journal. */
  static async open(dir: string, opts: OpenOptions = {}): Promise<Store> {
    const store = new Store(path.resolve(dir), opts);
    if (!Number.isInteger(store.blockSize) || store.blockSize < 1 || store.blockSize > MAX_OBJECT_SIZE) {
      throw new RangeError(`block size must be between 1 and ${MAX_OBJECT_SIZE} bytes`);
    }
    if (!store.readOnly) {
      await fsp.mkdir(store.dir, { recursive: true });
      store.lock = await DirectoryLock.acquire(store.dir);
    }
    try {
      await store.recover(opts.revision);
    } catch (err) {
      await store.lock?.release();
      throw err;
    }
    return store;
  }

  get revision(): number {
    return this.revisionCount;
  }

  stats(): StoreStats {
    return {
      revision: this.revisionCount,
      liveObjects: this.index.size,
      liveBytes: this.index.liveBytes,
      nextBlockId: this.writer?.nextBlockId ?? this.nextBlock,
      journalBytes: this.journal?.recordBytes ?? 0,
      dbSlot: this.dbSlot,
    };
  }

  // ---------------------------------------------------------------- recovery

  private async recover(revision: number | undefined): Promise<void> {
    const limit = revision === undefined ? Infinity : revision + 1;
    const listing = await listStoreDir(this.dir);
    const blockSizes = new Map<number, number>();
    await Promise.all(
      [...listing.blocks].map(async ([id, name]) => {
        const st = await fsp.stat(path.join(this.dir, name));
        blockSizes.set(id, st.size);
        this.blockMtimes.set(id, Math.floor(st.mtimeMs / 1000));
      }),
    );
    const checkLocation = (loc: { block: number; offset: number; size: number }): string | undefined => {
      if (loc.offset < 0 || loc.size < 0 || loc.block < 0) return 'has a negative block, offset or size';
      if (loc.size === 0) return undefined;
      const size = blockSizes.get(loc.block);
      if (size === undefined) return `points into ${blockFileName(loc.block)}, which does not exist`;
      if (loc.offset + loc.size > size) {
        return `points past the end of ${blockFileName(loc.block)} (${loc.offset}+${loc.size} > ${size} bytes)`;
      }
      return undefined;
    };
    let maxReferenced = -1;
    const apply = (record: RawRecord) => {
      if (record.kind === 'put') {
        this.index.set(record.rawKey, IndexEntry.fromLocation(record.location));
        if (record.location.size > 0 && record.location.block > maxReferenced) maxReferenced = record.location.block;
      } else {
        this.index.delete(record.rawKey);
      }
    };

    // The journal is read first: the db records it repeats (a crash came between writing a db
    // and starting a new journal) are kept aside while the db is replayed, to be compared.
    const journal = await readJournal(this.dir);
    const journalFile = path.join(this.dir, JOURNAL_FILE);
    const overlap: RecordCapture | undefined =
      journal && journal.baseRevision >= 0 && journal.records.length > 0
        ? { from: journal.baseRevision, count: journal.records.length, records: [] }
        : undefined;

    this.dbSlot = currentDbSlot(listing.dbSlots, this.dir);
    let dbNextBlock = 0;
    let dbRecords = 0;
    if (this.dbSlot !== undefined) {
      const file = path.join(this.dir, dbFileName(this.dbSlot));
      this.dbCompressedSize = (await fsp.stat(file)).size;
      const index = this.index;
      index.beginBulk();
      let replayed: { nextBackendFile: number; records: number };
      try {
        replayed = await replayDbFile(
          file,
          {
            put(rawKey, fields, rev) {
              const problem = checkLocation(fields);
              if (problem) throw new StoreCorruptError(`${file}: revision ${rev} (${fromRawKey(rawKey)}) ${problem}`);
              index.setFields(rawKey, fields);
              if (fields.size > 0 && fields.block > maxReferenced) maxReferenced = fields.block;
            },
            delete(rawKey) {
              index.delete(rawKey);
            },
          },
          limit,
          overlap,
        );
      } finally {
        index.endBulk();
      }
      const { nextBackendFile, records } = replayed;
      dbNextBlock = nextBackendFile;
      dbRecords = records;
      this.revisionCount = Math.min(records, limit);
    }

    // Even an empty journal says how many records the db had when it was started: a db with
    // fewer (cut short at a gzip member boundary, or replaced by an older one) lost writes.
    if (journal && journal.baseRevision > dbRecords) {
      throw new StoreCorruptError(
        `${journalFile} continues revision ${journal.baseRevision}, but the db holds only ${this.revisionCount} records: ` +
          'the db is older than the journal (was a db file replaced or removed?)',
      );
    }
    if (journal && journal.baseRevision >= 0) {
      let rev = journal.baseRevision;
      for (let i = 0; i < journal.records.length; i++, rev++) {
        if (rev >= limit) break;
        const payload = journal.records[i]!;
        if (rev < this.revisionCount) {
          // Already folded into the db, which must hold the same record there. If it does not,
          // the journal's base revision is wrong (its header is damaged) or the db is: skipping
          // records on its word would silently lose writes.
          const folded = overlap!.records[rev - overlap!.from];
          if (!folded || !folded.equals(payload)) {
            throw new StoreCorruptError(
              `${journalFile}: record ${i} is not revision ${rev} of the db, as the journal's base revision (${journal.baseRevision}) says: ` +
                'the journal header or the db is damaged',
            );
          }
          continue;
        }
        let record: RawRecord;
        try {
          record = decodeRawRecord(payload, 0, payload.length, journalFile, rev);
        } catch (err) {
          this.warn(`${journalFile}: ${(err as Error).message}; ignoring it and ${journal.records.length - i - 1} later records`);
          break;
        }
        const problem = record.kind === 'put' ? checkLocation(record.location) : undefined;
        if (problem) {
          // Only writes made without fsync can leave this behind: they were never durable.
          this.warn(`${journalFile}: revision ${rev} ${problem}; recovery stops before it`);
          break;
        }
        apply(record);
        this.unfolded.push(payload);
        this.revisionCount = rev + 1;
      }
      if (journal.ignoredBytes > 0) {
        this.warn(`${journalFile}: ignored ${journal.ignoredBytes} bytes of a torn or damaged tail after revision ${this.revisionCount - 1}`);
      }
    } else if (journal && journal.ignoredBytes > 0) {
      // Journals are created whole (written aside, then renamed): a short header is damage.
      this.warn(`${journalFile}: ignored ${journal.ignoredBytes} bytes, too short for a journal header (damaged?)`);
    }

    if (revision !== undefined && revision >= this.revisionCount) {
      throw new StoreError('ERANGE', `${this.dir}: revision ${revision} does not exist (the history has ${this.revisionCount} records, 0..${this.revisionCount - 1})`);
    }

    let maxExisting = -1;
    for (const id of listing.blocks.keys()) maxExisting = Math.max(maxExisting, id);
    // Never reuse a block id: not one the db counts, not one a record uses, not one on disk.
    this.nextBlock = Math.max(dbNextBlock, maxExisting + 1, maxReferenced + 1);

    if (this.readOnly) return;
    await fsp.rm(path.join(this.dir, SCRATCH_DIR), { recursive: true, force: true });
    // Two adjacent slots: a crash came between writing the newer db and removing the older.
    // The newer one has just been read in full; the older one must go now. Left behind, the
    // original would open it (it takes the lowest slot), and after the next checkpoint the two
    // remaining slots would no longer be adjacent, so no reader could tell which is current.
    const stale = listing.dbSlots.filter((slot) => slot !== this.dbSlot);
    if (stale.length > 0) {
      await Promise.all(stale.map((slot) => fsp.rm(path.join(this.dir, dbFileName(slot)), { force: true })));
      if (this.durable) await syncDir(this.dir);
    }
    this.writer = new BlockWriter(this.dir, this.blockSize, this.nextBlock);
    if (this.unfolded.length > 0 || (this.dbSlot !== undefined && dbNextBlock !== this.nextBlock)) {
      await this.writeCheckpoint(); // also starts a fresh journal
    } else {
      this.journal = await JournalWriter.create(this.dir, this.revisionCount, this.durable);
    }
  }

  // ---------------------------------------------------------------- reads

  /** The live object under `key`, or undefined. */
  head(key: string): ObjectInfo | undefined {
    const entry = this.index.get(toRawKey(key));
    return entry && this.info(key, entry);
  }

  /** The ETag of an object; for one the original wrote (no stored MD5), hashes it once. */
  async etagOf(info: ObjectInfo): Promise<string> {
    if (info.etag !== undefined) return info.etag;
    const hash = createHash('md5');
    await pipeline(this.createReadStream(info), hash);
    const md5 = hash.digest('hex');
    info.entry.md5 = md5;
    this.index.rememberMd5(toRawKey(info.key), info.entry, md5);
    info.etag = md5;
    return md5;
  }

  /** Bytes [start, end] (inclusive) of an object, or all of it. */
  createReadStream(info: ObjectInfo, start = 0, end = info.size - 1): Readable {
    this.assertReadable();
    const { entry } = info;
    const [from, length] = clampRange(entry.size, start, end);
    if (length === 0) return Readable.from([]);
    return this.reader.stream(entry.block, entry.offset + from, length);
  }

  /** Bytes [start, end] (inclusive) of an object as one buffer: for small reads. */
  async read(info: ObjectInfo, start = 0, end = info.size - 1): Promise<Buffer> {
    this.assertReadable();
    const [from, length] = clampRange(info.entry.size, start, end);
    return this.reader.read(info.entry.block, info.entry.offset + from, length);
  }

  /** A page of keys in UTF-8 byte order, with S3's delimiter roll-up. */
  list(opts: ListOptions): ListResult {
    const prefix = toRawKey(opts.prefix ?? '');
    const after = opts.after === undefined ? undefined : toRawKey(opts.after);
    const delimiter = opts.delimiter ? toRawKey(opts.delimiter) : undefined;
    const result: ListResult = { objects: [], commonPrefixes: [], truncated: false };
    if (opts.limit <= 0) return result;
    let count = 0;
    let last: string | undefined;
    // Raw keys are strings of byte values 0..255, so appending U+0100 sorts after every key
    // that starts with a given string.
    let from = after !== undefined && after >= prefix ? after : prefix;
    let skipEqual = after !== undefined && after >= prefix;
    scan: for (;;) {
      for (const raw of this.index.keysFrom(from)) {
        if (skipEqual && raw === from) continue;
        if (!raw.startsWith(prefix)) break scan;
        if (delimiter) {
          const at = raw.indexOf(delimiter, prefix.length);
          if (at >= 0) {
            const common = raw.slice(0, at + delimiter.length);
            from = common + '\u0100';
            skipEqual = false;
            if (after !== undefined && common <= after) continue scan;
            if (count === opts.limit) {
              result.truncated = true;
              break scan;
            }
            result.commonPrefixes.push(fromRawKey(common));
            last = common;
            count++;
            continue scan;
          }
        }
        if (count === opts.limit) {
          result.truncated = true;
          break scan;
        }
        result.objects.push(this.info(fromRawKey(raw), this.index.get(raw)!));
        last = raw;
        count++;
      }
      break;
    }
    if (result.truncated && last !== undefined) result.nextMarker = fromRawKey(last);
    return result;
  }

  private info(key: string, entry: IndexEntry): ObjectInfo {
    const mtime = entry.mtime || this.blockMtimes.get(entry.block) || 0;
    return {
      key,
      size: entry.size,
      etag: entry.etag ?? entry.md5,
      lastModified: new Date(mtime * 1000),
      metadata: decodeMetadata(entry.metadataBytes()),
      entry,
    };
  }

  // ---------------------------------------------------------------- writes

  /** Stores `body` under `key`; resolves once body and record are durable. */
  async put(key: string, body: Readable | Uint8Array, opts: PutOptions = {}): Promise<ObjectInfo> {
    this.assertWritable();
    if (opts.size === undefined && !(body instanceof Uint8Array)) return this.putSpooled(key, body, opts);
    const size = body instanceof Uint8Array ? body.length : opts.size!;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`an object size is a whole number of bytes, not ${size}`);
    if (size > MAX_OBJECT_SIZE) throw new ObjectTooLargeError(size, MAX_OBJECT_SIZE);
    if (body instanceof Uint8Array && opts.size !== undefined && opts.size !== size) {
      throw new BodySizeMismatchError(opts.size, size);
    }
    this.inFlight++;
    const reservation = size > 0 ? this.writer!.reserve(size) : undefined;
    try {
      const hash = createHash('md5');
      let data: Buffer[] | undefined;
      if (reservation && size <= DEFERRED_BODY_MAX) data = await readBody(body, size, hash);
      else if (reservation) await writeBody(reservation, body, hash);
      else if (!(body instanceof Uint8Array)) await drainEmpty(body);
      const md5 = hash.digest();
      if (opts.expectedMd5 && !md5.equals(opts.expectedMd5)) throw new DigestMismatchError();
      const location: Location = {
        block: reservation?.block.id ?? 0,
        offset: reservation?.offset ?? 0,
        size,
        metadata: encodeMetadata(opts.metadata ?? {}),
        md5,
        modifiedMs: opts.modifiedMs ?? Date.now(),
        etag: opts.etag,
      };
      const raw = toRawKey(key);
      const entry = IndexEntry.fromLocation(location);
      await this.commit({ raw, record: { kind: 'put', key, location }, entry, reservation, data });
      return this.info(key, entry);
    } finally {
      if (reservation) this.writer!.release(reservation);
      this.doneInFlight();
    }
  }

  /** A copy: a new record pointing at the source's bytes, with its own metadata. */
  async copy(sourceKey: string, key: string, metadata?: Record<string, string>, modifiedMs?: number): Promise<ObjectInfo | undefined> {
    this.assertWritable();
    const source = this.index.get(toRawKey(sourceKey));
    if (!source) return undefined;
    this.inFlight++;
    try {
      const location: Location = {
        block: source.block,
        offset: source.offset,
        size: source.size,
        metadata: metadata ? encodeMetadata(metadata) : source.metadataBytes(),
        md5: source.md5 ? Buffer.from(source.md5, 'hex') : undefined,
        modifiedMs: modifiedMs ?? Date.now(),
        etag: source.etag,
      };
      const entry = IndexEntry.fromLocation(location);
      await this.commit({ raw: toRawKey(key), record: { kind: 'put', key, location }, entry, reservation: undefined });
      return this.info(key, entry);
    } finally {
      this.doneInFlight();
    }
  }

  /** Deletes `key`; false (and no record) when it does not exist. */
  async delete(key: string): Promise<boolean> {
    this.assertWritable();
    this.inFlight++;
    try {
      return await this.commit({ raw: toRawKey(key), record: { kind: 'delete', key }, entry: undefined, reservation: undefined });
    } finally {
      this.doneInFlight();
    }
  }

  /**
   * Folds the journal into the next db slot now (after every write already acknowledged),
   * completing the open block, so the directory is one the original reads.
   */
  checkpoint(): Promise<void> {
    this.assertWritable();
    return new Promise<void>((resolve, reject) => {
      this.checkpointWaiters.push({ resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  /** Writes a checkpoint, closes the open block and releases the directory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.readOnly) {
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
      await this.committing;
      try {
        if (this.unfolded.length > 0 || this.writer!.nextBlockId !== this.nextBlock) await this.writeCheckpoint();
      } finally {
        await this.writer!.close();
        await this.journal?.close();
        await fsp.rm(path.join(this.dir, SCRATCH_DIR), { recursive: true, force: true });
        await this.lock?.release();
      }
    }
    await this.reader.close();
  }

  private assertWritable(): void {
    if (this.readOnly) throw new StoreStateError(`${this.dir} is open read-only`);
    if (this.closed) throw new StoreStateError(`${this.dir} is closed`);
  }

  private assertReadable(): void {
    if (this.reader.closed) throw new StoreStateError(`${this.dir} is closed`);
  }

  private doneInFlight(): void {
    if (--this.inFlight === 0 && this.idle) {
      const idle = this.idle;
      this.idle = undefined;
      idle();
    }
  }

  /** A body of unknown length goes to a scratch file first, so that its size is known. */
  private async putSpooled(key: string, body: Readable, opts: PutOptions): Promise<ObjectInfo> {
    const scratch = path.join(this.dir, SCRATCH_DIR);
    await fsp.mkdir(scratch, { recursive: true });
    const file = path.join(scratch, `spool-${process.pid}-${this.spoolCounter++}`);
    try {
      let size = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          size += chunk.length;
          if (size > MAX_OBJECT_SIZE) cb(new ObjectTooLargeError(size, MAX_OBJECT_SIZE));
          else cb(null, chunk);
        },
      });
      await pipeline(body, counter, fs.createWriteStream(file));
      return await this.put(key, fs.createReadStream(file), { ...opts, size });
    } finally {
      await fsp.rm(file, { force: true });
    }
  }

  // ---------------------------------------------------------------- commit

  private commit(op: Omit<PendingOp, 'resolve' | 'reject'>): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.pending.push({ ...op, resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  private async commitLoop(): Promise<void> {
    try {
      while (this.pending.length > 0 || this.checkpointWaiters.length > 0) {
        const batch = this.pending;
        this.pending = [];
        if (batch.length > 0) await this.commitBatch(batch);
        if (this.checkpointWaiters.length > 0) {
          const waiters = this.checkpointWaiters;
          this.checkpointWaiters = [];
          try {
            await this.writeCheckpoint();
            for (const w of waiters) w.resolve();
          } catch (err) {
            for (const w of waiters) w.reject(err as Error);
          }
        } else if (this.journal && this.journal.recordBytes > Math.max(this.checkpointBytes, this.dbCompressedSize)) {
          try {
            await this.writeCheckpoint();
          } catch (err) {
            // The journal still holds everything: nothing is lost, the next batch tries again.
            this.warn(`checkpoint failed: ${(err as Error).message}`);
          }
        }
      }
    } finally {
      this.committing = undefined;
    }
  }

  private async commitBatch(batch: PendingOp[]): Promise<void> {
    // Decide, in arrival order, which records the batch writes: a delete of a key that is not
    // live at that point writes nothing.
    const liveInBatch = new Map<string, boolean>();
    const applied: PendingOp[] = [];
    const skipped: PendingOp[] = [];
    for (const op of batch) {
      if (op.record.kind === 'delete') {
        const live = liveInBatch.get(op.raw) ?? this.index.has(op.raw);
        if (!live) {
          skipped.push(op);
          continue;
        }
        liveInBatch.set(op.raw, false);
      } else {
        liveInBatch.set(op.raw, true);
      }
      applied.push(op);
    }
    try {
      if (applied.length > 0) {
        await writeDeferredBodies(applied);
        if (this.durable) {
          const blocks = [...new Set(applied.flatMap((op) => (op.reservation ? [op.reservation.block] : [])))];
          // datasync also waits for the file to exist, so the directory sync below covers it.
          await Promise.all(blocks.map((b) => b.datasync()));
          const created = blocks.filter((b) => !b.entrySynced);
          if (created.length > 0) {
            await syncDir(this.dir);
            for (const b of created) b.entrySynced = true;
          }
        }
        const payloads = applied.map((op) => encodeHistoryRecord(op.record));
        await this.journal!.append(payloads, this.durable);
        for (const payload of payloads) this.unfolded.push(payload);
      }
    } catch (err) {
      for (const op of batch) op.reject(err as Error);
      return;
    }
    for (const op of applied) {
      if (op.entry) this.index.set(op.raw, op.entry);
      else this.index.delete(op.raw);
    }
    this.revisionCount += applied.length;
    for (const op of applied) op.resolve(true);
    for (const op of skipped) op.resolve(false);
  }

  /**
   * Folds the journal into the next db slot and starts an empty journal. The open block is
   * completed first, so the db alone describes a directory the original can read.
   */
  private async writeCheckpoint(): Promise<void> {
    const nextBackendFile = this.writer!.roll();
    const { slot, compressedSize } = await writeNextDb(this.dir, this.dbSlot, this.unfolded, nextBackendFile, this.durable);
    this.dbSlot = slot;
    this.dbCompressedSize = compressedSize;
    this.nextBlock = nextBackendFile;
    this.unfolded = [];
    const old = this.journal;
    this.journal = await JournalWriter.create(this.dir, this.revisionCount, this.durable);
    await old?.close();
  }
}

/**
 * The part of [start, end] (inclusive) that lies within an object of `size` bytes, as
 * [offset, length]: a read never runs into the bytes of the next object in the block.
 */
function clampRange(size: number, start: number, end: number): [number, number] {
  const from = Math.max(0, Math.floor(start));
  const to = Math.min(size - 1, Math.floor(end));
  return to < from ? [from, 0] : [from, to - from + 1];
}

/**
 * The chunks of a body, hashed on the way; exactly `size` bytes or BodySizeMismatchError (a
 * body running long is cut off at once, so it never reaches past its reservation).
 */
async function* checkedChunks(body: Readable | Uint8Array, size: number, hash: ReturnType<typeof createHash>): AsyncGenerator<Buffer> {
  if (body instanceof Uint8Array) {
    hash.update(body);
    yield Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    return;
  }
  let received = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (received > size) {
      body.destroy();
      throw new BodySizeMismatchError(size, received);
    }
    hash.update(chunk);
    yield chunk;
  }
  if (received !== size) throw new BodySizeMismatchError(size, received);
}

/** Reads a small body whole (it is written by its commit). */
async function readBody(body: Readable | Uint8Array, size: number, hash: ReturnType<typeof createHash>): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of checkedChunks(body, size, hash)) chunks.push(chunk);
  return chunks;
}

/**
 * Streams a large body into its reservation. Chunks are gathered into pieces of about
 * WRITE_PIECE bytes, and one piece is written while the next is received, so the socket and
 * the disk work at the same time with bounded memory.
 */
async function writeBody(reservation: Reservation, body: Readable | Uint8Array, hash: ReturnType<typeof createHash>): Promise<void> {
  const { block, offset, size } = reservation;
  let piece: Buffer[] = [];
  let pieceBytes = 0;
  let pieceAt = offset;
  let writing: Promise<void> = Promise.resolve();
  const flush = async () => {
    await writing;
    writing = block.writev(piece, pieceAt);
    writing.catch(() => undefined); // surfaced by the next await of `writing`
    pieceAt += pieceBytes;
    piece = [];
    pieceBytes = 0;
  };
  for await (const chunk of checkedChunks(body, size, hash)) {
    piece.push(chunk);
    pieceBytes += chunk.length;
    if (pieceBytes >= WRITE_PIECE) await flush();
  }
  if (pieceBytes > 0) await flush();
  await writing;
}

/** Writes the held small bodies of a batch: one writev per run of adjacent reservations. */
async function writeDeferredBodies(ops: PendingOp[]): Promise<void> {
  const held = ops.filter((op) => op.data && op.reservation);
  if (held.length === 0) return;
  held.sort((a, b) => a.reservation!.block.id - b.reservation!.block.id || a.reservation!.offset - b.reservation!.offset);
  const writes: Promise<void>[] = [];
  let i = 0;
  while (i < held.length) {
    const first = held[i]!.reservation!;
    const buffers: Buffer[] = [...held[i]!.data!];
    let end = first.offset + first.size;
    let j = i + 1;
    for (; j < held.length; j++) {
      const next = held[j]!.reservation!;
      if (next.block !== first.block || next.offset !== end) break;
      buffers.push(...held[j]!.data!);
      end += next.size;
    }
    writes.push(first.block.writev(buffers, first.offset));
    i = j;
  }
  await Promise.all(writes);
  for (const op of held) op.data = undefined;
}

async function drainEmpty(body: Readable): Promise<void> {
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (chunk.length > 0) {
      body.destroy();
      throw new BodySizeMismatchError(0, chunk.length);
    }
  }
}

export function openStore(dir: string, opts?: OpenOptions): Promise<Store> {
  return Store.open(dir, opts);
}
