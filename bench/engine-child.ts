/**
 * Engine measurements run in a process of their own by bench/engine-figures.ts. Each mode prints
 * one JSON object on stdout. (Open time and memory per key are measured by bench/engine.ts's
 * open-child.)
 *
 *   build DIR RECORDS        writes a store of RECORDS history records (db slot 0 and sparse blocks)
 *   wa DIR PUTS [CKPT]       PUTs of 4 KiB through the store API: bytes written to journal and db
 *                            (CKPT: checkpointBytes; the default setting when absent)
 *   fill DIR KEYS            KEYS puts of 16 bytes (list/00000000...) through the store API, fsync off
 *   ckpt DIR SECONDS [nofsync]
 *                            PUT latency while checkpoints run back to back, on a store made by
 *                            `build` (durable, as `zipkv serve` opens it, unless nofsync); DIR is
 *                            removed at the end
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { encodeDb, type HistoryRecord } from '../src/lib/store/schema.js';
import { blockFileName, dbFileName, DEFAULT_BLOCK_SIZE, JOURNAL_FILE } from '../src/lib/store/files.js';
import { openStore } from '../src/lib/store/store.js';
import { prng } from './util.js';

const gzip = promisify(zlib.gzip);

export interface BuildResult {
  records: number;
  blocks: number;
  objectBytes: number;
  dbRawBytes: number;
  dbGzipBytes: number;
  seconds: number;
}

/**
 * A history of `records` puts of distinct S3QL-style keys (s3ql_data_N), 1-64 KiB each, packed
 * into 40 MiB blocks, each record with an MD5 and a write time and no user metadata: what
 * `zipkv serve` records for a plain PUT. The blocks are sparse files of the right length, so
 * that every location is valid without writing the bytes.
 */
async function build(dir: string, records: number): Promise<BuildResult> {
  const t0 = performance.now();
  await fs.mkdir(dir, { recursive: true });
  const rand = prng(42);
  const blockLengths: number[] = [];
  let block = 0;
  let offset = 0;
  let objectBytes = 0;
  const parts: Uint8Array[] = [];
  const CHUNK = 100_000;
  const baseMs = Date.UTC(2024, 0, 1);
  for (let start = 0; start < records; start += CHUNK) {
    const history: HistoryRecord[] = [];
    for (let i = start; i < Math.min(records, start + CHUNK); i++) {
      const size = 1024 + Math.floor(rand() * 63 * 1024);
      if (offset + size > DEFAULT_BLOCK_SIZE) {
        blockLengths.push(offset);
        block++;
        offset = 0;
      }
      const md5 = Buffer.allocUnsafe(16);
      for (let j = 0; j < 16; j += 4) md5.writeUInt32LE(Math.floor(rand() * 4294967296), j);
      history.push({ kind: 'put', key: `s3ql_data_${i + 1}`, location: { block, offset, size, md5, modifiedMs: baseMs + i * 50 } });
      offset += size;
      objectBytes += size;
    }
    // Concatenated Db messages are one Db (repeated history appends; the last
    // next_backend_file wins), exactly what checkpoints produce.
    parts.push(encodeDb(block + 1, history));
  }
  blockLengths.push(offset);
  const raw = Buffer.concat(parts);
  const gz = await gzip(raw);
  await fs.writeFile(path.join(dir, dbFileName(0)), gz);
  for (let b = 0; b < blockLengths.length; b++) {
    const handle = await fs.open(path.join(dir, blockFileName(b)), 'w');
    await handle.truncate(blockLengths[b]);
    await handle.close();
  }
  return {
    records,
    blocks: blockLengths.length,
    objectBytes,
    dbRawBytes: raw.length,
    dbGzipBytes: gz.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

export interface WriteAmpResult {
  puts: number;
  /** The checkpointBytes option given, undefined for the default. */
  checkpointBytes: number | undefined;
  objectBytes: number;
  /** Record bytes appended to the journal (framing included, headers not). */
  journalBytes: number;
  /** Bytes of db files written: each checkpoint writes a whole new db file (copy + new member). */
  dbBytesWritten: number;
  /** Checkpoints triggered by the journal size while PUTs ran. */
  checkpoints: number;
  /** The checkpoint written by close(). */
  closeCheckpointBytes: number;
  finalDbBytes: number;
  seconds: number;
}

/**
 * `puts` PUTs of 4 KiB from 32 concurrent callers through the store API, default checkpoint
 * setting, fsync off (durability changes when bytes reach the disk, not which bytes are
 * written: the records, their framing and the checkpoint rule are the same). After every
 * acknowledged put the journal size and db slot are sampled: an acknowledgement follows the
 * journal append of its batch and precedes any checkpoint the batch triggers, so the last
 * journal size seen before it drops is the size the journal reached, and every new db slot is
 * seen before the next one is written.
 */
async function writeAmp(dir: string, puts: number, checkpointBytes: number | undefined): Promise<WriteAmpResult> {
  await fs.rm(dir, { recursive: true, force: true });
  const store = await openStore(dir, { fsync: false, checkpointBytes });
  const BODY = 4096;
  let journalBytes = 0;
  let lastJournal = 0;
  let dbBytesWritten = 0;
  let checkpoints = 0;
  let slot = store.stats().dbSlot;
  let pendingStats: Promise<void> = Promise.resolve();
  const sample = () => {
    const st = store.stats();
    if (st.journalBytes < lastJournal) journalBytes += lastJournal;
    lastJournal = st.journalBytes;
    if (st.dbSlot !== slot) {
      slot = st.dbSlot;
      checkpoints++;
      const file = path.join(dir, dbFileName(slot!));
      pendingStats = pendingStats.then(async () => {
        dbBytesWritten += (await fs.stat(file)).size;
      });
    }
  };
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < puts) {
        const i = next++;
        // Distinct bodies, so that the MD5s in the records are as incompressible as real ones.
        const body = Buffer.alloc(BODY, 0x5a);
        body.writeUInt32LE(i, 0);
        await store.put(`s3ql_data_${i + 1}`, body);
        sample();
      }
    }),
  );
  await pendingStats;
  journalBytes += store.stats().journalBytes;
  const slotBeforeClose = store.stats().dbSlot;
  await store.close();
  const seconds = (performance.now() - t0) / 1000;
  // close() folds the rest of the journal into one more db file.
  const names = await fs.readdir(dir);
  const dbName = names.filter((n) => /^db\d{10}$/.test(n)).sort().pop();
  let closeCheckpointBytes = 0;
  let finalDbBytes = 0;
  if (dbName) {
    finalDbBytes = (await fs.stat(path.join(dir, dbName))).size;
    if (dbName !== (slotBeforeClose === undefined ? undefined : dbFileName(slotBeforeClose))) closeCheckpointBytes = finalDbBytes;
  }
  await fs.rm(path.join(dir, JOURNAL_FILE), { force: true });
  return {
    puts,
    checkpointBytes,
    objectBytes: puts * BODY,
    journalBytes,
    dbBytesWritten: dbBytesWritten + closeCheckpointBytes,
    checkpoints,
    closeCheckpointBytes,
    finalDbBytes,
    seconds,
  };
}

/** `keys` small objects for the LIST workload, 32 writers, fsync off; closed (db written) at the end. */
async function fill(dir: string, keys: number): Promise<{ seconds: number; keys: number }> {
  const t0 = performance.now();
  const store = await openStore(dir, { fsync: false });
  const body = Buffer.alloc(16, 0x61);
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < keys) await store.put(`list/${String(next++).padStart(8, '0')}`, body);
    }),
  );
  await store.close();
  return { seconds: (performance.now() - t0) / 1000, keys };
}

export interface CheckpointLatencyResult {
  /** Length of the window in which puts and checkpoints were started. */
  windowSeconds: number;
  /** From the start of the window until the last put was acknowledged. */
  seconds: number;
  writers: number;
  bodyBytes: number;
  fsync: boolean;
  /** Opening the store beforehand (not in the window). */
  openMs: number;
  puts: number;
  putsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  checkpoints: number;
  checkpointMeanMs: number;
  checkpointMaxMs: number;
  /** Every checkpoint's duration, in the order run. */
  checkpointMs: number[];
  /** Pause between the end of one checkpoint and the start of the next. */
  checkpointGapMs: number;
}

const CKPT_WRITERS = 16;
const CKPT_BODY = 4096;
const CKPT_GAP_MS = 250;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/**
 * PUT latency while checkpoints happen: the store in `dir` (made by `build`) is opened, then for
 * `seconds` seconds 16 callers PUT 4 KiB random bodies under fresh keys, each awaiting its put
 * before the next, while another loop calls `checkpoint()` back to back (each starting
 * CKPT_GAP_MS after the previous one ended, the first CKPT_GAP_MS into the window). No put or
 * checkpoint starts after the window; those in flight at its end are waited for and counted.
 * Every put's latency is recorded (performance.now() around the await), and every checkpoint's
 * duration as its caller sees it. The directory is removed afterwards.
 */
async function checkpointLatency(dir: string, seconds: number, fsync: boolean): Promise<CheckpointLatencyResult> {
  try {
    const tOpen = performance.now();
    const store = await openStore(dir, { fsync });
    const openMs = performance.now() - tOpen;
    const latencies: number[] = [];
    const checkpointMs: number[] = [];
    let next = 0;
    const t0 = performance.now();
    const deadline = t0 + seconds * 1000;
    const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
    // A failed checkpoint ends the loop; it is reported once the writers are done.
    let checkpointError: unknown;
    const checkpoints = (async () => {
      for (;;) {
        await sleep(Math.min(CKPT_GAP_MS, Math.max(0, deadline - performance.now())));
        if (performance.now() >= deadline) return;
        const t = performance.now();
        await store.checkpoint();
        checkpointMs.push(performance.now() - t);
      }
    })().catch((err: unknown) => {
      checkpointError = err;
    });
    const writers = Array.from({ length: CKPT_WRITERS }, async () => {
      while (performance.now() < deadline) {
        const key = `ckpt_${next++}`;
        const body = randomBytes(CKPT_BODY);
        const t = performance.now();
        await store.put(key, body);
        latencies.push(performance.now() - t);
      }
    });
    await Promise.all(writers);
    const elapsed = (performance.now() - t0) / 1000;
    await checkpoints;
    await store.close();
    if (checkpointError) throw checkpointError;
    const sorted = Float64Array.from(latencies).sort();
    return {
      windowSeconds: seconds,
      seconds: elapsed,
      writers: CKPT_WRITERS,
      bodyBytes: CKPT_BODY,
      fsync,
      openMs,
      puts: sorted.length,
      putsPerSec: sorted.length / elapsed,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      p999Ms: percentile(sorted, 99.9),
      maxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
      checkpoints: checkpointMs.length,
      checkpointMeanMs: checkpointMs.length ? checkpointMs.reduce((a, b) => a + b, 0) / checkpointMs.length : NaN,
      checkpointMaxMs: checkpointMs.length ? Math.max(...checkpointMs) : NaN,
      checkpointMs,
      checkpointGapMs: CKPT_GAP_MS,
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const [mode, dir, arg, arg2] = process.argv.slice(2);
  if (!dir) throw new Error('usage: engine-child build|wa|fill|ckpt DIR N');
  let result: unknown;
  switch (mode) {
    case 'build':
      result = await build(dir, Number(arg));
      break;
    case 'wa':
      result = await writeAmp(dir, Number(arg), arg2 ? Number(arg2) : undefined);
      break;
    case 'fill':
      result = await fill(dir, Number(arg));
      break;
    case 'ckpt': {
      const seconds = Number(arg);
      if (!(seconds > 0)) throw new Error('usage: engine-child ckpt DIR SECONDS [nofsync]');
      result = await checkpointLatency(dir, seconds, arg2 !== 'nofsync');
      break;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
