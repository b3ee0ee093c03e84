/**
 * Foreground requests while a compaction runs, next to the same requests on an idle server: the
 * cost of online compaction. One store is built with lots of dead bytes (objects of 256 KiB in
 * 4 MiB blocks, two of every three deleted, so every block is a third needed and gets rewritten),
 * copied once per round, and served by the durable zipkv twice per round:
 *
 *   idle        --keep-history all: nothing to do in the background
 *   compacting  --keep-history 1s (compaction every 100 ms, copying at the default 64 MiB/s, 8 MiB/s while requests come in)
 *
 * Each serves PUT 4 KiB and GET 4 KiB at 16 connections in the same windows. A compacting round
 * counts only if its compaction was still copying when the last window ended (it logs when it
 * is done); the table shows the ratios compacting / idle.
 */
import fs from 'node:fs/promises';
import Table from 'cli-table3';
import { type LoadResult, getObject, putObject, runLoad } from './client.js';
import { type RunningServer, freshDir, startServer } from './servers.js';
import { KiB, MiB } from './util.js';
import { openStore } from '../src/lib/store/store.js';

export interface CompactionBenchOptions {
  quick: boolean;
  log: (line: string) => void;
}

export interface CompactionRow {
  workload: string;
  idle: LoadResult;
  compacting: LoadResult;
}

export interface CompactionBenchResults {
  rows: CompactionRow[];
  /** Bytes of blocks in the store before compaction, and bytes a compaction copied and freed. */
  blockBytes: number;
  copiedBytes: number;
  freedBytes: number;
  compactionSeconds: number;
  /** Rounds whose windows all ended before the compaction did. */
  overlappingRounds: number;
  rounds: number;
}

const BLOCK = 4 * MiB;
const DEAD_OBJECT = 256 * KiB;
const GET_KEYS = 1000;
const pad = (n: number) => String(n).padStart(8, '0');

/** The store: `mb` MiB of 256 KiB objects, two of every three deleted, and 1000 objects of 4 KiB to GET. */
async function buildTemplate(mb: number): Promise<string> {
  const dir = await freshDir('compaction-template');
  const store = await openStore(dir, { fsync: false, blockSize: BLOCK });
  const count = Math.floor((mb * MiB) / DEAD_OBJECT);
  const body = Buffer.alloc(DEAD_OBJECT, 7);
  for (let i = 0; i < count; i++) {
    body.writeUInt32LE(i, 0);
    await store.put(`dead/${pad(i)}`, body);
  }
  const small = Buffer.alloc(4 * KiB, 3);
  for (let i = 0; i < GET_KEYS; i++) await store.put(`get/${pad(i)}`, small);
  for (let i = 0; i < count; i++) if (i % 3 !== 0) await store.delete(`dead/${pad(i)}`);
  await store.close();
  return dir;
}

/** "341 MiB" (as formatBytes writes it) -> bytes. */
function parseBytes(text: string): number {
  const [n, unit] = text.split(' ') as [string, string];
  return Number(n) * ({ B: 1, KiB: KiB, MiB: MiB, GiB: 1024 * MiB, TiB: 1024 * 1024 * MiB }[unit] ?? NaN);
}

async function blockBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(dir)) if (name.startsWith('block')) total += (await fs.stat(`${dir}/${name}`)).size;
  return total;
}

async function measure(server: RunningServer, windowMs: number, warmupMs: number): Promise<[LoadResult, LoadResult]> {
  const body = Buffer.alloc(4 * KiB, 9);
  let n = 0;
  const put = await runLoad(server.url, { concurrency: 16, durationMs: windowMs, warmupMs, op: (pool) => putObject(pool, `put/${pad(n++ % 5000)}`, body) });
  let m = 0;
  const get = await runLoad(server.url, { concurrency: 16, durationMs: windowMs, warmupMs, op: (pool) => getObject(pool, `get/${pad(m++ % GET_KEYS)}`) });
  return [put, get];
}

function mean(results: LoadResult[], pick: (r: LoadResult) => number): number {
  return results.reduce((sum, r) => sum + pick(r), 0) / results.length;
}

/** Averages runs into one LoadResult (ops/s and latencies). */
function average(results: LoadResult[]): LoadResult {
  return {
    ops: mean(results, (r) => r.ops),
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    bytes: mean(results, (r) => r.bytes),
    seconds: mean(results, (r) => r.seconds),
    opsPerSec: mean(results, (r) => r.opsPerSec),
    mbPerSec: mean(results, (r) => r.mbPerSec),
    p50Ms: mean(results, (r) => r.p50Ms),
    p99Ms: mean(results, (r) => r.p99Ms),
    meanMs: mean(results, (r) => r.meanMs),
    firstError: results.find((r) => r.firstError)?.firstError,
  };
}

export async function runCompactionBench(options: CompactionBenchOptions): Promise<CompactionBenchResults> {
  const { log } = options;
  const deadMb = options.quick ? 384 : 1024;
  const rounds = options.quick ? 1 : 3;
  const windowMs = options.quick ? 750 : 1500;
  const warmupMs = options.quick ? 100 : 250;
  log(`  building a store of ${deadMb} MiB in 4 MiB blocks, two thirds of it dead`);
  const template = await buildTemplate(deadMb);
  const before = await blockBytes(template);
  const idle: Array<[LoadResult, LoadResult]> = [];
  const busy: Array<[LoadResult, LoadResult]> = [];
  let copied = 0;
  let freed = 0;
  let seconds = 0;
  let overlapping = 0;
  try {
    for (let round = 0; round < rounds; round++) {
      for (const compacting of [false, true]) {
        const dir = await freshDir(compacting ? 'compacting' : 'idle');
        await fs.cp(template, dir, { recursive: true });
        let output = '';
        const server = await startServer('zipkv', {
          dir,
          extraArgs: ['-bs', String(BLOCK), ...(compacting ? ['--keep-history', '1s', '--compaction-interval', '100'] : [])],
          onStdout: (text) => void (output += text),
        });
        try {
          // Let the compaction start copying.
          if (compacting) await new Promise((resolve) => setTimeout(resolve, 400));
          const results = await measure(server, windowMs, warmupMs);
          const label = compacting ? 'compacting' : 'idle';
          log(`  round ${round + 1} ${label.padEnd(10)} PUT 4 KiB c16 ${results[0].opsPerSec.toFixed(0)}/s p99 ${results[0].p99Ms.toFixed(1)} ms; GET 4 KiB c16 ${results[1].opsPerSec.toFixed(0)}/s p99 ${results[1].p99Ms.toFixed(1)} ms`);
          if (!compacting) {
            idle.push(results);
            continue;
          }
          const doneBefore = /zipkv: compaction:/.test(output);
          for (let i = 0; i < 600 && !/zipkv: compaction:/.test(output); i++) await new Promise((resolve) => setTimeout(resolve, 100));
          const line = /zipkv: compaction: .* ([\d.]+ [KMGT]?i?B) freed \(([\d.]+ [KMGT]?i?B) copied\) in ([\d.]+) s/.exec(output);
          if (line) {
            freed = parseBytes(line[1]!);
            copied = parseBytes(line[2]!);
            seconds = Number(line[3]);
          }
          if (doneBefore) log(`  round ${round + 1}: the compaction ended before the windows did; not counted`);
          else {
            overlapping++;
            busy.push(results);
          }
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    await fs.rm(template, { recursive: true, force: true });
  }
  const pick = (list: Array<[LoadResult, LoadResult]>, i: 0 | 1) => average(list.map((r) => r[i]));
  const rows: CompactionRow[] =
    busy.length === 0
      ? []
      : [
          { workload: 'PUT 4 KiB, 16 connections', idle: pick(idle, 0), compacting: pick(busy, 0) },
          { workload: 'GET 4 KiB, 16 connections', idle: pick(idle, 1), compacting: pick(busy, 1) },
        ];
  return { rows, blockBytes: before, copiedBytes: copied, freedBytes: freed, compactionSeconds: seconds, overlappingRounds: overlapping, rounds };
}

export function formatCompaction(r: CompactionBenchResults | undefined, error?: string): string {
  if (!r) return `compaction: not measured${error ? ` (${error})` : ''}`;
  const lines = [
    `Online compaction: ${(r.blockBytes / MiB).toFixed(0)} MiB of blocks, a third still needed; the compaction copied ${(r.copiedBytes / MiB).toFixed(0)} MiB ` +
      `(at most 64 MiB/s, 8 MiB/s while requests come in) and freed ${(r.freedBytes / MiB).toFixed(0)} MiB in ${r.compactionSeconds.toFixed(1)} s; ` +
      `${r.overlappingRounds} of ${r.rounds} rounds measured entirely while it ran`,
  ];
  if (r.rows.length === 0) return `${lines[0]}\n(no round overlapped a compaction: no ratios)`;
  const table = new Table({
    head: ['workload', 'idle ops/s', 'idle p99 ms', 'compacting ops/s', 'compacting p99 ms', 'ops/s ratio', 'p99 ratio'],
    colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right'],
    style: { head: [], border: [] },
  });
  for (const row of r.rows) {
    table.push([
      row.workload,
      row.idle.opsPerSec.toFixed(0),
      row.idle.p99Ms.toFixed(1),
      row.compacting.opsPerSec.toFixed(0),
      row.compacting.p99Ms.toFixed(1),
      `${(row.compacting.opsPerSec / row.idle.opsPerSec).toFixed(2)}x`,
      `${(row.compacting.p99Ms / row.idle.p99Ms).toFixed(2)}x`,
    ]);
  }
  lines.push(table.toString());
  return lines.join('\n');
}
