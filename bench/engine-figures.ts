/**
 * Engine figures for `npm run bench`, without HTTP: opening a store of many history records,
 * memory per live key, `zipkv history` and `zipkv rebase` over that store, checkpoint write
 * amplification, and PUT latency while checkpoints run on a store of as many records. Every
 * measurement runs in a child process of its own: bench/engine-child.ts (building the store,
 * write amplification, PUT latency during checkpoints), bench/engine.ts's `open-child` (open time
 * and memory, opened as a writer as `zipkv serve` does) and bin/zipkv.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BuildResult, CheckpointLatencyResult, WriteAmpResult } from './engine-child.js';
import { freshDir, ROOT, ZIPKV_BIN } from './servers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, 'engine-child.js');
const OPEN_CHILD = path.join(HERE, 'engine.js');

/** What bench/engine.ts's open-child prints. */
export interface OpenResult {
  openSeconds: number;
  /** Process CPU time (all threads) during the open, when the child reports it. */
  cpuSeconds?: number;
  rssPerKey: number;
  heapPerKey: number;
  rssMiB: number;
}

export interface CommandTiming {
  /** Wall time of the whole command, Node start-up included. */
  ms?: number;
  /** Wall time of `node bin/zipkv --help`, the CLI's own start-up, for reference. */
  startupMs?: number;
  exitCode?: number | null;
  /** Why the row has no figure (command missing, failed, timed out). */
  note?: string;
  command: string;
}

export interface EngineResults {
  records: number;
  build: BuildResult;
  /** Fastest of the open runs. */
  openMs: number;
  openRuns: OpenResult[];
  rssPerKey: number;
  heapPerKey: number;
  history: CommandTiming;
  rebase: CommandTiming;
  /** The default checkpoint setting, then a small one that makes checkpoints frequent. */
  writeAmp: WriteAmpFigures[];
  /** Durable PUTs of 4 KiB while checkpoints run back to back (absent in results of older runs). */
  checkpointLatency?: CheckpointLatencyFigures;
  /** Why that figure is missing, when it failed (the other engine figures are kept). */
  checkpointLatencyError?: string;
}

export interface CheckpointLatencyFigures extends CheckpointLatencyResult {
  /** History records of the store before the window (written by `build`). */
  records: number;
}

export interface WriteAmpFigures extends WriteAmpResult {
  label: string;
  dbPerObjectByte: number;
  journalPerObjectByte: number;
}

/** The small checkpoint threshold of the second write-amplification run. */
export const SMALL_CHECKPOINT_BYTES = 64 * 1024;

export interface EngineOptions {
  records: number;
  openRuns: number;
  writeAmpPuts: number;
  /** Window of the PUT-latency-during-checkpoints figure. */
  checkpointSeconds: number;
  log: (line: string) => void;
}

interface RunOutput {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

function run(
  args: string[],
  options: { timeoutMs: number; discardStdout?: boolean; nodeArgs?: string[]; env?: Record<string, string> },
): Promise<RunOutput> {
  return new Promise((resolve, reject) => {
    const devNull = options.discardStdout ? fs.openSync('/dev/null', 'w') : undefined;
    const t0 = performance.now();
    const env = { ...process.env, ...options.env };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...args], {
      cwd: ROOT,
      env,
      stdio: ['ignore', devNull ?? 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-8000)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      if (devNull !== undefined) fs.closeSync(devNull);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (devNull !== undefined) fs.closeSync(devNull);
      resolve({ code, stdout, stderr, ms: performance.now() - t0, timedOut });
    });
  });
}

async function child<T>(script: string, args: string[], timeoutMs: number, nodeArgs: string[] = [], env?: Record<string, string>): Promise<T> {
  const out = await run([script, ...args], { timeoutMs, nodeArgs, env });
  const name = `${path.basename(script)} ${args[0]}`;
  if (out.timedOut) throw new Error(`${name} timed out after ${timeoutMs} ms`);
  if (out.code !== 0) throw new Error(`${name} failed (${out.code}): ${out.stderr.trim().slice(-2000)}`);
  return JSON.parse(out.stdout.trim().split('\n').pop()!) as T;
}

/** Is `zipkv <name>` a command of this build? (oclif finds commands in dist/src/commands.) */
function hasCommand(name: string): boolean {
  return fs.existsSync(path.join(ROOT, 'dist', 'src', 'commands', `${name}.js`));
}

function firstLine(s: string): string {
  return (
    s
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l && !l.startsWith('at ')) ?? ''
  ).slice(0, 200);
}

async function timeCommand(name: string, args: string[], display: string, startupMs: number): Promise<CommandTiming> {
  if (!hasCommand(name)) return { command: display, note: `zipkv ${name} does not exist in this build: skipped` };
  const out = await run([ZIPKV_BIN, name, ...args], { timeoutMs: 180_000, discardStdout: true });
  if (out.timedOut) return { command: display, note: 'timed out after 180 s', startupMs };
  if (out.code !== 0) return { command: display, exitCode: out.code, note: `failed (exit ${out.code}): ${firstLine(out.stderr)}`, startupMs };
  return { command: display, ms: out.ms, startupMs, exitCode: 0 };
}

export async function runEngine(options: EngineOptions): Promise<EngineResults> {
  const { records, log } = options;
  const dir = await freshDir('engine-store');
  log(`engine: building a store of ${records.toLocaleString('en-US')} history records in ${dir}`);
  const build = await child<BuildResult>(CHILD, ['build', dir, String(records)], 300_000);
  log(`engine: built in ${build.seconds.toFixed(1)} s (db ${(build.dbGzipBytes / 1e6).toFixed(1)} MB gzip, ${build.blocks} sparse blocks)`);

  const openRuns: OpenResult[] = [];
  for (let i = 0; i < options.openRuns; i++) {
    const result = await child<OpenResult>(OPEN_CHILD, ['open-child', dir, String(records)], 120_000, ['--expose-gc'], { BENCH_WRITER: '1' });
    if (typeof result.openSeconds !== 'number' || typeof result.rssPerKey !== 'number') {
      throw new Error(`bench/engine.ts open-child printed something unexpected: ${JSON.stringify(result)}`);
    }
    openRuns.push(result);
    log(`engine: open #${i + 1}: ${(result.openSeconds * 1000).toFixed(0)} ms, ${result.rssPerKey.toFixed(0)} B RSS/key`);
  }
  const best = openRuns.reduce((a, b) => (b.openSeconds < a.openSeconds ? b : a));
  // Memory per key is the median run's (it varies little; the fastest open is not special).
  const byRss = [...openRuns].sort((a, b) => a.rssPerKey - b.rssPerKey);
  const mid = byRss[Math.floor((byRss.length - 1) / 2)]!;

  const startup = await run([ZIPKV_BIN, '--help'], { timeoutMs: 60_000, discardStdout: true });
  const startupMs = startup.code === 0 ? startup.ms : undefined;

  const history = await timeCommand('history', [dir], `node bin/zipkv history DIR > /dev/null (${records.toLocaleString('en-US')} records)`, startupMs!);
  log(`engine: history: ${history.ms !== undefined ? `${history.ms.toFixed(0)} ms` : history.note}`);
  const to = Math.floor(records / 2);
  const rebase = await timeCommand('rebase', [dir, '--to', String(to)], `node bin/zipkv rebase DIR --to ${to} (${records.toLocaleString('en-US')} records)`, startupMs!);
  log(`engine: rebase: ${rebase.ms !== undefined ? `${rebase.ms.toFixed(0)} ms` : rebase.note}`);
  await fs.promises.rm(dir, { recursive: true, force: true });

  const writeAmp: WriteAmpFigures[] = [];
  for (const checkpointBytes of [undefined, SMALL_CHECKPOINT_BYTES]) {
    const waDir = await freshDir('engine-wa');
    const label = checkpointBytes === undefined ? 'default checkpoint setting' : `checkpointBytes ${checkpointBytes / 1024} KiB`;
    log(`engine: write amplification: ${options.writeAmpPuts.toLocaleString('en-US')} PUTs of 4 KiB through the store API, ${label}`);
    const args = ['wa', path.join(waDir, 'store'), String(options.writeAmpPuts), ...(checkpointBytes ? [String(checkpointBytes)] : [])];
    const wa = await child<WriteAmpResult>(CHILD, args, 300_000);
    await fs.promises.rm(waDir, { recursive: true, force: true });
    writeAmp.push({ ...wa, label, dbPerObjectByte: wa.dbBytesWritten / wa.objectBytes, journalPerObjectByte: wa.journalBytes / wa.objectBytes });
  }

  let checkpointLatency: CheckpointLatencyFigures | undefined;
  let checkpointLatencyError: string | undefined;
  try {
    checkpointLatency = await runCheckpointLatency(records, options.checkpointSeconds, log);
  } catch (err) {
    checkpointLatencyError = (err as Error).message;
    log(`engine: PUT latency during checkpoints failed: ${checkpointLatencyError}`);
  }

  return {
    records,
    build,
    openMs: best.openSeconds * 1000,
    openRuns,
    rssPerKey: mid.rssPerKey,
    heapPerKey: mid.heapPerKey,
    history,
    rebase,
    writeAmp,
    checkpointLatency,
    checkpointLatencyError,
  };
}

/**
 * PUT latency while checkpoints happen: a fresh store of `records` history records (the one
 * measured above has been rebased), then `ckpt` over it for `seconds` (the child removes it).
 */
async function runCheckpointLatency(records: number, seconds: number, log: (line: string) => void): Promise<CheckpointLatencyFigures> {
  const dir = await freshDir('engine-ckpt');
  try {
    const store = path.join(dir, 'store');
    await child<BuildResult>(CHILD, ['build', store, String(records)], 300_000);
    log(`engine: PUT latency during checkpoints: 16 writers of 4 KiB (durable) for ${seconds} s, checkpoints back to back, ${records.toLocaleString('en-US')} records`);
    const result = await child<CheckpointLatencyResult>(CHILD, ['ckpt', store, String(seconds)], seconds * 1000 + 180_000);
    // NaN (no puts, no checkpoint) arrives as null.
    const f = (v: number | null, digits: number) => (typeof v === 'number' ? v.toFixed(digits) : '-');
    log(
      `engine: ${result.puts.toLocaleString('en-US')} PUTs (${f(result.putsPerSec, 0)}/s), p50 ${f(result.p50Ms, 2)} ms, ` +
        `p99 ${f(result.p99Ms, 2)} ms, max ${f(result.maxMs, 1)} ms; ${result.checkpoints} checkpoints, ` +
        `mean ${f(result.checkpointMeanMs, 0)} ms, max ${f(result.checkpointMaxMs, 0)} ms`,
    );
    return { ...result, records };
  } finally {
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/** Fills a zipkv store directory with `keys` 16-byte objects through the store API (fsync off). */
export async function fillZipkvStore(dir: string, keys: number): Promise<number> {
  const out = await child<{ seconds: number }>(CHILD, ['fill', dir, String(keys)], 300_000);
  return out.seconds;
}
