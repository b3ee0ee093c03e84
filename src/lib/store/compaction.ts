/**
 * Compaction: giving back the space of bytes that no kept record needs, while serving.
 *
 * With a retention window (--keep-history), operations older than the window may be forgotten.
 * The horizon H is the first revision inside the window; what must stay is the state just before
 * H (the objects live then) and every record from H on. A compaction runs in three steps, each
 * safe to interrupt by a crash:
 *
 *  1. Plan and copy, in the background, throttled: from a view of the history, the bytes still
 *     needed per block. A sealed block with few of them has those bytes copied into new blocks
 *     (synced before anything refers to them). A crash leaves new blocks that nothing refers to:
 *     the next compaction deletes them.
 *  2. A new db, beside the writes (as a checkpoint writes one): one record per object live just
 *     before H, each carrying the revision that wrote it (its version id stays), then every record
 *     from H on, with locations moved to the copies. It holds as many revisions as the db it
 *     replaces, so the journal continues either db: a crash before step 3 loses nothing.
 *  3. Between two commits: the journal's records are rewritten to the new locations (a new
 *     journal, swapped in atomically), the index follows, and only then, with db and journal
 *     durable, are the block files that no record refers to any more deleted. Reads already
 *     under way finish on the handles they hold (see BlockReader.retire).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { durably } from './errors.js';
import { writeWholeDb } from './db-file.js';
import { blockFileName, listStore } from './files.js';
import { type RecordBytes, type ReplayHandler, decodeRawRecord, decodeRecord, replayDbRecords, replayDbStream } from './replay.js';
import { type Location, type RawRecord, encodeRawRecord } from './schema.js';
import { type ReadableFile, type Storage, type WritableFile, fileStream, readFully } from './storage/storage.js';

/** A sealed block is rewritten when less than this share of its bytes is still needed. */
export const DEFAULT_REWRITE_BELOW = 0.7;
/** Copying is throttled to this many bytes per second (BUSY_RATE_SHARE of it while requests come in). */
export const DEFAULT_COMPACTION_BYTES_PER_SECOND = 64 * 1024 * 1024;

/** Progress of a compaction, for a progress bar. */
export interface CompactionProgress {
  phase: 'planning' | 'copying' | 'writing the db' | 'deleting';
  done: number;
  total: number;
}

/** A history to plan from: a db and the records after it (see HistoryLog.view). */
export interface PlanView {
  dbName: string | undefined;
  /** The db already open (a snapshot's), read instead of opening `dbName`. */
  db?: ReadableFile;
  tail: Uint8Array[];
  /** The revision after the last record. */
  records: number;
  historyStart: number;
}

/** The bytes a kept record needs: block -> offset -> size. */
type Needed = Map<number, Map<number, number>>;

export interface CompactionPlan {
  /** The first revision inside the window: the history will begin there. */
  horizon: number;
  /** The time of the operation at the horizon: the horizon moves once it leaves the window. */
  horizonTimeMs: number | undefined;
  /** Sealed blocks to rewrite: id -> needed ranges [offset, size], by offset. */
  rewrite: Map<number, Array<[number, number]>>;
  /** Sealed blocks that no kept record needs (deleted in step 3 unless a later record uses them). */
  unneeded: number[];
  /** Bytes of all block files, and the bytes kept records need (each byte once). */
  blockBytes: number;
  neededBytes: number;
  /** Bytes step 3 would free: unneeded blocks, and rewritten blocks less their copied bytes. */
  reclaimableBytes: number;
  /** Records the horizon forgets (before it, less one kept record per live object). */
  forgottenRecords: number;
}

/** Where moved bytes went: old block -> old offset -> new place. */
export type Relocation = Map<number, Map<number, { block: number; offset: number }>>;

export function relocated(relocation: Relocation, block: number, offset: number): { block: number; offset: number } | undefined {
  return relocation.get(block)?.get(offset);
}

/** One pass over a view's records: the db streamed, then the tail. */
async function replayView(storage: Storage, view: PlanView, handler: ReplayHandler): Promise<void> {
  if (view.dbName !== undefined) {
    const db = view.db ?? (await storage.openRead(view.dbName));
    try {
      await replayDbStream(fileStream(db), `${storage.root}/${view.dbName}`, handler);
    } finally {
      if (db !== view.db) await db.close();
    }
  }
  let rev = view.records - view.tail.length;
  for (const payload of view.tail) decodeRecord(payload, `${storage.root} (journal)`, rev++, handler);
}

/**
 * The first revision at or after `historyStart` whose operation is not older than `cutoffMs`
 * (unknown times count as old), and that operation's time (undefined when there is none).
 */
export async function findHorizon(storage: Storage, view: PlanView, cutoffMs: number): Promise<{ horizon: number; timeMs: number | undefined }> {
  let horizon = view.records;
  let timeMs: number | undefined;
  const seen = (rev: number, ms: number) => {
    if (timeMs === undefined && rev >= view.historyStart && ms >= cutoffMs) {
      horizon = rev;
      timeMs = ms;
    }
  };
  await replayView(storage, view, {
    put: (_k, f, rev) => seen(rev, f.modifiedMs),
    delete: (_k, rev, _b, ms) => seen(rev, ms),
  });
  return { horizon, timeMs };
}

function addNeeded(needed: Needed, block: number, offset: number, size: number): void {
  if (size <= 0) return;
  let offsets = needed.get(block);
  if (!offsets) needed.set(block, (offsets = new Map()));
  if ((offsets.get(offset) ?? 0) < size) offsets.set(offset, size);
}

/** The bytes needed by the state before `horizon` and by every put from it on. */
async function neededBytesOf(storage: Storage, view: PlanView, horizon: number): Promise<Needed> {
  const needed: Needed = new Map();
  // Raw key -> [block, offset, size] of the object live before the horizon.
  const state = new Map<string, [number, number, number]>();
  await replayView(storage, view, {
    put(rawKey, f, rev) {
      if (rev < horizon) state.set(rawKey, [f.block, f.offset, f.size]);
      else addNeeded(needed, f.block, f.offset, f.size);
    },
    delete(rawKey, rev) {
      if (rev < horizon) state.delete(rawKey);
    },
  });
  for (const [block, offset, size] of state.values()) addNeeded(needed, block, offset, size);
  return needed;
}

function sum(ranges: Iterable<number>): number {
  let total = 0;
  for (const n of ranges) total += n;
  return total;
}

/**
 * Plans a compaction of `view`: the horizon, and which sealed blocks (ids below `sealedBelow`,
 * not `isLive`) to rewrite or drop.
 */
export async function planCompaction(
  storage: Storage,
  view: PlanView,
  opts: { cutoffMs: number; rewriteBelow: number; sealedBelow: number; isLive: (id: number) => boolean },
): Promise<CompactionPlan> {
  const { horizon, timeMs: horizonTimeMs } = await findHorizon(storage, view, opts.cutoffMs);
  const needed = await neededBytesOf(storage, view, horizon);
  const listing = await listStore(storage);
  const rewrite = new Map<number, Array<[number, number]>>();
  const unneeded: number[] = [];
  let blockBytes = 0;
  let neededBytes = 0;
  let reclaimableBytes = 0;
  for (const id of [...listing.blocks.keys()].sort((a, b) => a - b)) {
    const size = (await storage.stat(blockFileName(id)))?.size ?? 0;
    const offsets = needed.get(id);
    const used = offsets ? sum(offsets.values()) : 0;
    blockBytes += size;
    neededBytes += used;
    if (id >= opts.sealedBelow || opts.isLive(id)) continue;
    if (used === 0) {
      unneeded.push(id);
      reclaimableBytes += size;
    } else if (used < opts.rewriteBelow * size) {
      rewrite.set(id, [...offsets!].sort((a, b) => a[0] - b[0]));
      reclaimableBytes += size - used;
    }
  }
  return { horizon, horizonTimeMs, rewrite, unneeded, blockBytes, neededBytes, reclaimableBytes, forgottenRecords: Math.max(0, horizon - view.historyStart) };
}

/** While foreground requests come in, copying slows to this share of its rate. */
export const BUSY_RATE_SHARE = 0.125;

export interface CopyResult {
  relocation: Relocation;
  /** The new blocks, each synced. */
  outputs: number[];
  bytesCopied: number;
}

/** Largest read or write one copy step makes. */
const COPY_CHUNK = 1024 * 1024;

/**
 * Copies the needed ranges of the blocks a plan rewrites into new blocks (ids from
 * `allocateId`, at most `blockSize` bytes each unless one range is larger), each synced, and
 * the directory after them. Nothing refers to the copies yet.
 */
export async function copyNeededBytes(
  storage: Storage,
  rewrite: Map<number, Array<[number, number]>>,
  opts: {
    allocateId: () => number;
    blockSize: number;
    bytesPerSecond: number;
    /** Whether foreground requests came in since the last call: copying then slows down. */
    busy?: () => boolean;
    durable: boolean;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<CopyResult> {
  const relocation: Relocation = new Map();
  const outputs: number[] = [];
  const total = sum([...rewrite.values()].flatMap((ranges) => ranges.map(([, size]) => size)));
  let copied = 0;
  let out: { id: number; file: WritableFile; position: number } | undefined;
  // One buffer for the whole copy (one read or write in flight at a time): a fresh 1 MiB
  // buffer per step costs more in page faults than the copy itself.
  const chunk = Buffer.allocUnsafeSlow(COPY_CHUNK);
  // Each step waits long enough to keep to the rate (the lower one while requests come in).
  const pace = async (bytes: number, since: number) => {
    if (opts.bytesPerSecond <= 0) return;
    const rate = opts.busy?.() ? opts.bytesPerSecond * BUSY_RATE_SHARE : opts.bytesPerSecond;
    const wait = (bytes / rate) * 1000 - (Date.now() - since);
    if (wait > 1) await sleep(wait);
  };
  const finish = async () => {
    if (!out) return;
    const { file, id } = out;
    out = undefined;
    try {
      if (opts.durable) await durably(`${storage.root}/${blockFileName(id)}`, 'fdatasync', () => file.datasync());
    } finally {
      await file.close();
    }
  };
  try {
    for (const [block, ranges] of rewrite) {
      const source: ReadableFile = await storage.openRead(blockFileName(block));
      try {
        const moved = new Map<number, { block: number; offset: number }>();
        relocation.set(block, moved);
        for (const [offset, size] of ranges) {
          if (out && out.position > 0 && out.position + size > opts.blockSize) await finish();
          if (!out) {
            const id = opts.allocateId();
            out = { id, file: await storage.create(blockFileName(id), { exclusive: true }), position: 0 };
            outputs.push(id);
          }
          const target = out;
          moved.set(offset, { block: target.id, offset: target.position });
          for (let done = 0; done < size; ) {
            const stepStart = Date.now();
            const length = Math.min(COPY_CHUNK, size - done);
            const buf = length === COPY_CHUNK ? chunk : chunk.subarray(0, length);
            await readFully(source, buf, length, offset + done);
            await target.file.writev([buf], target.position);
            target.position += length;
            done += length;
            copied += length;
            opts.onProgress?.(copied, total);
            await pace(length, stepStart);
          }
        }
      } finally {
        await source.close();
      }
    }
    await finish();
  } catch (err) {
    await out?.file.close().catch(() => undefined);
    // Unreferenced copies: removed now if possible, else by the next compaction.
    await Promise.all(outputs.map((id) => storage.remove(blockFileName(id)).catch(() => undefined)));
    throw err;
  }
  if (opts.durable && outputs.length > 0) await durably(storage.root, 'fsync', () => storage.syncDir());
  return { relocation, outputs, bytesCopied: copied };
}

/** A record with its location moved per `relocation`, re-encoded; the same bytes when it did not move. */
export function relocateRecord(payload: Uint8Array, relocation: Relocation, where: string, rev: number): { payload: Uint8Array; block: number | undefined } {
  const record = decodeRawRecord(payload, where, rev);
  if (record.kind !== 'put' || record.location.size <= 0) return { payload, block: undefined };
  const to = relocated(relocation, record.location.block, record.location.offset);
  if (!to) return { payload, block: record.location.block };
  return { payload: encodeRawRecord(withLocation(record, to)), block: to.block };
}

function withLocation(record: RawRecord & { kind: 'put' }, to: { block: number; offset: number }, revision?: number): RawRecord {
  const location: Location = { ...record.location, block: to.block, offset: to.offset };
  return revision === undefined ? { ...record, location } : { ...record, location, revision };
}

export interface CompactedDb {
  slot: number;
  compressedSize: number;
  firstRevision: number;
  historyStart: number;
  /** Records standing for the objects live before the horizon. */
  keptRecords: number;
  /** Blocks the new db's records use. */
  referenced: Set<number>;
}

/**
 * Writes the compacted db into the slot after `dbSlot`: the records kept for the state before
 * `horizon` (in the order of their revisions, each carrying it), then the db's records from the
 * horizon on, locations moved per `relocation`. The db is read twice, streamed.
 */
export async function writeCompactedDb(
  storage: Storage,
  db: { name: string; slot: number; nextBlockId: number },
  horizon: number,
  relocation: Relocation,
  durable: boolean,
): Promise<CompactedDb> {
  const where = `${storage.root}/${db.name}`;
  const file = await storage.openRead(db.name);
  try {
    // Pass 1: which records stand for the state before the horizon, by their position (the
    // db is in revision order, so pass 2 meets them in the order of their revisions).
    const lastPut = new Map<string, number>();
    const summary = await replayDbStream(
      fileStream(file),
      where,
      {
        put: (rawKey, _f, rev) => void lastPut.set(rawKey, rev),
        delete: (rawKey) => void lastPut.delete(rawKey),
      },
      horizon,
    );
    if (summary.records < horizon) throw new Error(`${where}: the db ends at revision ${summary.records}, before the horizon ${horizon}`);
    const keptAt = Float64Array.from(lastPut.values()).sort();
    lastPut.clear();
    const referenced = new Set<number>();
    const firstRevision = horizon - keptAt.length;

    async function* records(): AsyncGenerator<Uint8Array> {
      // Pass 2: the kept records, each carrying the revision that wrote it, then every record
      // from the horizon on; locations moved per `relocation`.
      let next = 0;
      const item = (rev: number, bytes: RecordBytes, block: number, revision: number) => {
        if (rev < horizon) {
          if (keptAt[next] !== rev) return undefined;
          next++;
        }
        return { rev, revision: rev < horizon ? revision : -1, payload: Buffer.from(bytes.buf.subarray(bytes.start, bytes.end)), block };
      };
      for await (const r of replayDbRecords(fileStream(file), where, {
        put: (_k, f, rev, bytes) => item(rev, bytes, f.size > 0 ? f.block : -1, f.keptRevision >= 0 ? f.keptRevision : rev),
        delete: (_k, rev, bytes) => item(rev, bytes, -1, rev),
      })) {
        if (!r) continue;
        if (r.revision >= 0) {
          const record = decodeRawRecord(r.payload, where, r.rev);
          if (record.kind !== 'put') continue;
          const to = record.location.size > 0 ? relocated(relocation, record.location.block, record.location.offset) : undefined;
          if (record.location.size > 0) referenced.add(to?.block ?? record.location.block);
          yield encodeRawRecord(withLocation(record, to ?? record.location, r.revision));
        } else if (!relocation.has(r.block)) {
          if (r.block >= 0) referenced.add(r.block);
          yield r.payload;
        } else {
          const { payload, block } = relocateRecord(r.payload, relocation, where, r.rev);
          if (block !== undefined) referenced.add(block);
          yield payload;
        }
      }
    }

    const written = await writeWholeDb(storage, db.slot, records(), db.nextBlockId, durable, firstRevision);
    return { ...written, firstRevision, historyStart: horizon, keptRecords: keptAt.length, referenced };
  } finally {
    await file.close();
  }
}
