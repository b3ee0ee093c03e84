/**
 * Engine measurements: PUT throughput with fsync on and off, and the time and memory it takes
 * to open a store of 1M history records.
 *
 *   node dist/bench/engine.js                 everything
 *   node dist/bench/engine.js puts [seconds]  puts/s of 4 KiB bodies, 16 writers
 *   node dist/bench/engine.js open [records]  builds a db of N records and opens it (in a child)
 *   node --expose-gc dist/bench/engine.js open-child <dir> <records>   (internal)
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import protobuf from 'protobufjs';
import { openStore } from '../src/lib/store/store.js';

const WRITERS = 16;
const BODY = 4096;

async function puts(seconds: number, fsync: boolean): Promise<number> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-bench-'));
  try {
    const store = await openStore(dir, { fsync });
    const body = randomBytes(BODY);
    let done = 0;
    const until = Date.now() + seconds * 1000;
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = 0; Date.now() < until; i++) {
          await store.put(`w${w}/${i}`, body);
          done++;
        }
      }),
    );
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    await store.close();
    return done / elapsed;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const OBJECT_SIZE = 100;
const PER_BLOCK = Math.floor((40 * 1024 * 1024) / OBJECT_SIZE);

/**
 * The key of the i-th put: `obj/0000000`... in order, or (BENCH_KEYS=random) the same keys in
 * a scattered order, as hash-named or s3ql's unpadded numbered objects come.
 */
function keyOf(i: number, records: number): string {
  const n = process.env.BENCH_KEYS === 'random' ? Number((BigInt(i) * 2654435761n) % BigInt(nextPrime(records))) : i;
  return `obj/${String(n).padStart(7, '0')}`;
}

function nextPrime(n: number): number {
  const isPrime = (x: number) => {
    for (let d = 2; d * d <= x; d++) if (x % d === 0) return false;
    return x > 1;
  };
  while (!isPrime(n)) n++;
  return n;
}

/**
 * A store of `records` puts of distinct keys (`obj/0000000`...), each with an MD5 and a time,
 * as zipkv writes them; the block files are sparse files of the right sizes.
 */
async function buildStore(dir: string, records: number): Promise<void> {
  const db = protobuf.Writer.create();
  db.uint32((2 << 3) | 0).sint32(Math.ceil(records / PER_BLOCK));
  const md5s = randomBytes(16 * records);
  const now = Date.now();
  for (let i = 0; i < records; i++) {
    const block = Math.floor(i / PER_BLOCK);
    const offset = (i % PER_BLOCK) * OBJECT_SIZE;
    const md5 = md5s.subarray(16 * i, 16 * i + 16);
    const location = protobuf.Writer.create();
    location.uint32((1 << 3) | 0).sint32(block);
    if (offset) location.uint32((2 << 3) | 0).sint32(offset);
    location.uint32((3 << 3) | 0).sint32(OBJECT_SIZE);
    location.uint32((5 << 3) | 2).bytes(md5);
    location.uint32((6 << 3) | 0).sint64(now + i);
    const put = protobuf.Writer.create();
    put.uint32((1 << 3) | 2).string(keyOf(i, records));
    put.uint32((2 << 3) | 2).bytes(location.finish());
    const record = protobuf.Writer.create();
    record.uint32((1 << 3) | 2).bytes(put.finish());
    db.uint32((3 << 3) | 2).bytes(record.finish());
  }
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'db0000000000'), zlib.gzipSync(db.finish(), { level: 6 }));
  for (let b = 0; b * PER_BLOCK < records; b++) {
    const count = Math.min(PER_BLOCK, records - b * PER_BLOCK);
    const handle = await fs.open(path.join(dir, `block${String(b).padStart(10, '0')}`), 'w');
    await handle.truncate(count * OBJECT_SIZE);
    await handle.close();
  }
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

interface OpenRun {
  openSeconds: number;
  /** CPU time (user + system) of the open: less sensitive than wall time to a busy machine. */
  cpuSeconds: number;
  rssPerKey: number;
  heapPerKey: number;
  rssMiB: number;
}

/** Runs in a child with --expose-gc: opens the store and reports time and memory as JSON. */
async function openChild(dir: string, records: number): Promise<void> {
  gc();
  const rssBefore = process.memoryUsage().rss;
  const heapBefore = process.memoryUsage().heapUsed;
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  const store = await openStore(dir, { readOnly: process.env.BENCH_WRITER !== '1' });
  const openSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  if (store.stats().liveObjects !== records) throw new Error(`expected ${records} live objects, got ${store.stats().liveObjects}`);
  gc();
  await new Promise((r) => setTimeout(r, 100));
  gc();
  const { rss, heapUsed } = process.memoryUsage();
  if (process.env.BENCH_VERBOSE) process.stderr.write(JSON.stringify(process.memoryUsage()) + '\n');
  process.stdout.write(
    JSON.stringify({
      openSeconds,
      cpuSeconds,
      rssPerKey: (rss - rssBefore) / records,
      heapPerKey: (heapUsed - heapBefore) / records,
      rssMiB: rss / 2 ** 20,
    } satisfies OpenRun) + '\n',
  );
  await store.close();
}

async function openBench(records: number): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-bench-open-'));
  try {
    const t0 = Date.now();
    await buildStore(dir, records);
    const dbSize = (await fs.stat(path.join(dir, 'db0000000000'))).size;
    console.log(`built ${records} records in ${Date.now() - t0} ms (db ${(dbSize / 2 ** 20).toFixed(1)} MiB gzip)`);
    const self = fileURLToPath(import.meta.url);
    for (const writer of ['0', '1']) {
      const runs: OpenRun[] = [];
      for (let i = 0; i < 3; i++) {
        const out = execFileSync(process.execPath, ['--expose-gc', self, 'open-child', dir, String(records)], {
          env: { ...process.env, BENCH_WRITER: writer },
          encoding: 'utf8',
        });
        runs.push(JSON.parse(out) as OpenRun);
      }
      const best = runs.reduce((a, b) => (a.openSeconds < b.openSeconds ? a : b));
      console.log(
        `open ${records} records (${writer === '1' ? 'writer' : 'read-only'}): ${best.openSeconds.toFixed(2)} s ` +
          `(runs: ${runs.map((r) => r.openSeconds.toFixed(2)).join(', ')}; CPU ${best.cpuSeconds.toFixed(2)} s), ` +
          `RSS ${best.rssPerKey.toFixed(0)} B/key, heap ${best.heapPerKey.toFixed(0)} B/key, RSS total ${best.rssMiB.toFixed(0)} MiB`,
      );
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const [mode = 'all', arg1, arg2] = process.argv.slice(2);
if (mode === 'open-child') {
  await openChild(arg1!, Number(arg2));
} else {
  if (mode === 'all' || mode === 'puts') {
    const seconds = Number(mode === 'puts' && arg1 ? arg1 : 3);
    for (const fsync of [true, false]) {
      const rate = await puts(seconds, fsync);
      console.log(`puts of ${BODY} B, ${WRITERS} writers, fsync ${fsync ? 'on ' : 'off'}: ${rate.toFixed(0)}/s`);
    }
  }
  if (mode === 'build') {
    await buildStore(arg1!, Number(arg2 ?? 1_000_000));
  }
  if (mode === 'all' || mode === 'open') {
    await openBench(Number(mode === 'open' && arg1 ? arg1 : 1_000_000));
  }
}
