/**
 * `npm run bench`: zipkv (durable), zipkv --no-fsync, the original Go zipkvserver (when it is on
 * the PATH), s3rver and a bare in-memory Node server under the same HTTP workloads, then engine
 * figures without HTTP. Loopback only; every server is a child process on a fresh temporary
 * directory; the whole run is bounded in time.
 *
 *   npm run bench                       full run (a few minutes)
 *   npm run bench -- --quick            under three minutes: shorter windows, one run per server, smaller stores
 *   npm run bench -- --save             also write docs/benchmarks.json, docs/benchmarks.svg and the
 *                                       results section of docs/benchmarks.md
 *   npm run bench -- --only put,list    only cells matching a group (4k 64k 1m 4m list mixed),
 *                                       an operation (put get head list mixed), a cell id
 *                                       (put-4k-c16), `engine` or `compaction`
 *   npm run bench -- --profile          zipkv servers run with --cpu-prof (bench-results/profiles/)
 *
 * See docs/benchmarks.md for the method.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type LoadResult, runLoad } from './client.js';
import { type CompactionBenchResults, formatCompaction, runCompactionBench } from './compaction.js';
import { type UpstreamBenchResults, formatUpstream, runUpstreamBench } from './upstream.js';
import { measureDisk } from './disk.js';
import { type EngineResults, runEngine } from './engine-figures.js';
import {
  type BenchResults,
  type CellResult,
  type Meta,
  cellRatios,
  computeTargets,
  formatEngine,
  formatHeader,
  formatTargets,
  formatWorkloadTables,
  markdownResults,
  svgChart,
  updateMarkdown,
  writeJson,
} from './report.js';
import {
  ROOT,
  SERVER_LABELS,
  type RunningServer,
  activeKinds,
  benchTempRoot,
  cleanupAll,
  findOriginal,
  killAllSync,
} from './servers.js';
import { type Cell, GROUPS, type GroupEnv } from './workloads.js';

interface Options {
  quick: boolean;
  save: boolean;
  only: string[] | undefined;
  profile: boolean;
}

function usage(): never {
  process.stdout.write(
    'usage: npm run bench -- [--quick] [--save] [--only <group|op|cell|engine>[,...]] [--profile]\n' +
      'groups: 4k 64k 1m 4m list mixed engine compaction upstream; ops: put get head list mixed; cells: e.g. put-4k-c16\n',
  );
  process.exit(0);
}

function parseArgs(argv: string[]): Options {
  const options: Options = { quick: false, save: false, only: undefined, profile: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') options.quick = true;
    else if (a === '--save') options.save = true;
    else if (a === '--profile') options.profile = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const value = a === '--only' ? argv[++i] : a.slice('--only='.length);
      if (!value) throw new Error('--only needs a value');
      options.only = [...(options.only ?? []), ...value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)];
    } else if (a === '--help' || a === '-h') usage();
    else throw new Error(`unknown argument ${a} (try --help)`);
  }
  return options;
}

function selected(cell: Cell, only: string[] | undefined): boolean {
  if (!only) return true;
  return only.some((t) => t === cell.group || t === cell.op.toLowerCase() || t === cell.id);
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

const log = (line: string) => process.stderr.write(`${line}\n`);
const elapsed = (since: number) => `${((performance.now() - since) / 1000).toFixed(0)} s`;

function progress(cell: Cell, kind: string, rep: number, r: LoadResult): void {
  const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '-');
  log(
    `  ${cell.id.padEnd(14)} #${rep + 1} ${kind.padEnd(14)} ${r.opsPerSec.toFixed(0).padStart(7)} ops/s ` +
      `${r.mbPerSec.toFixed(1).padStart(7)} MB/s  p50 ${ms(r.p50Ms)} ms  p99 ${ms(r.p99Ms)} ms${r.errors ? `  ${r.errors} errors (${r.firstError})` : ''}`,
  );
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const profileDir = path.join(ROOT, 'bench-results', 'profiles');
  const config = options.quick
    ? { windowMs: 500, warmupMs: 100, reps: 1, listKeys: 20_000, s3rverListKeys: 2_000, engineRecords: 200_000, openRuns: 1, writeAmpPuts: 10_000, checkpointSeconds: 3 }
    : { windowMs: 1000, warmupMs: 250, reps: 2, listKeys: 100_000, s3rverListKeys: 10_000, engineRecords: 1_000_000, openRuns: 2, writeAmpPuts: 20_000, checkpointSeconds: 10 };
  const cpus = os.cpus();
  const flags = process.argv.slice(2);
  const kinds = activeKinds();
  const meta: Meta = {
    date: new Date().toISOString(),
    command: `npm run bench${flags.length ? ` -- ${flags.join(' ')}` : ''}`,
    flags,
    quick: options.quick,
    node: process.versions.node,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: os.totalmem() / 2 ** 30,
    loadStart: os.loadavg(),
    loadEnd: [],
    commit: git(['rev-parse', 'HEAD']),
    servers: kinds,
    original: findOriginal() ?? null,
    // The code measured is the working tree: say so when it is not the commit.
    uncommitted: (git(['status', '--porcelain', '--', 'src', 'bin', 'proto', 'package.json']) ?? '') !== '',
    ...config,
  };
  const env: GroupEnv = {
    quick: options.quick,
    listKeys: config.listKeys,
    s3rverListKeys: Math.min(config.listKeys, config.s3rverListKeys),
    start: options.profile ? { zipkvNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {},
    log,
  };
  if (options.profile) {
    await fs.mkdir(profileDir, { recursive: true });
    log(`profiles of the zipkv servers go to ${profileDir}`);
  }
  meta.disk = await measureDisk(await benchTempRoot(), (options.quick ? 512 : 1024) * 2 ** 20);
  log(formatHeader(meta));

  const cells: CellResult[] = [];
  const notes: string[] = [];
  for (const group of GROUPS) {
    const todo = group.cells.filter((c) => selected(c, options.only));
    if (todo.length === 0) continue;
    // Servers that cannot do the group's requests are not started; their cells show "-".
    const groupKinds = kinds.filter((k) => !group.unsupported?.[k]);
    const skipped = kinds.filter((k) => group.unsupported?.[k]).map((k) => ({ kind: k, reason: group.unsupported![k]! }));
    log(`\n== ${group.title}: starting ${groupKinds.length} servers (at ${elapsed(started)}, load ${os.loadavg()[0]!.toFixed(2)})`);
    for (const s of skipped) log(`  ${s.kind}: not measured: ${s.reason}`);
    let servers: RunningServer[] | undefined;
    for (let attempt = 1; !servers; attempt++) {
      try {
        servers = await group.start(groupKinds, env);
      } catch (err) {
        const message = (err as Error).message.split('\n').slice(0, 6).join(' | ');
        if (attempt < 2) {
          // e.g. dist/ being rebuilt at that moment: wait a little and try once more
          log(`${group.title}: could not start (${message}); trying again in 5 s`);
          await new Promise((resolve) => setTimeout(resolve, 5000));
          continue;
        }
        notes.push(`${group.title}: could not start: ${message}`);
        log(notes[notes.length - 1]!);
        break;
      }
    }
    if (!servers) continue;
    try {
      for (const cell of todo) {
        const runs = new Map<string, LoadResult[]>();
        const load1 = os.loadavg()[0]!;
        for (let rep = 0; rep < config.reps; rep++) {
          for (const server of servers) {
            const r = await runLoad(server.url, {
              concurrency: cell.concurrency,
              durationMs: config.windowMs,
              warmupMs: config.warmupMs,
              op: group.operation(cell, server, rep, env),
            });
            progress(cell, server.kind, rep, r);
            runs.set(server.kind, [...(runs.get(server.kind) ?? []), r]);
          }
        }
        const result: CellResult = {
          cell,
          servers: servers.map((s) => {
            const list = runs.get(s.kind)!;
            return { kind: s.kind, runs: list, best: list.reduce((a, b) => (b.opsPerSec > a.opsPerSec ? b : a)) };
          }),
          ...(skipped.length ? { skipped } : {}),
          load1,
          note: group.note?.(env),
        };
        result.ratios = cellRatios(result);
        cells.push(result);
      }
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }

  let engine: EngineResults | undefined;
  let engineError: string | undefined;
  if (!options.only || options.only.includes('engine')) {
    log(`\n== engine figures (at ${elapsed(started)}, load ${os.loadavg()[0]!.toFixed(2)})`);
    try {
      engine = await runEngine({ records: config.engineRecords, openRuns: config.openRuns, writeAmpPuts: config.writeAmpPuts, checkpointSeconds: config.checkpointSeconds, log });
    } catch (err) {
      engineError = (err as Error).message;
      log(`engine figures failed: ${engineError}`);
    }
  }

  let compaction: CompactionBenchResults | undefined;
  let compactionError: string | undefined;
  if (!options.only || options.only.includes('compaction')) {
    log(`\n== online compaction vs idle (at ${elapsed(started)}, load ${os.loadavg()[0]!.toFixed(2)})`);
    try {
      compaction = await runCompactionBench({ quick: options.quick, log });
    } catch (err) {
      compactionError = (err as Error).message;
      log(`compaction figures failed: ${compactionError}`);
    }
  }

  let upstream: UpstreamBenchResults | string | undefined;
  if (!options.only || options.only.includes('upstream')) {
    log(`\n== upstream tier on Ceph radosgw (at ${elapsed(started)}, load ${os.loadavg()[0]!.toFixed(2)})`);
    try {
      upstream = await runUpstreamBench({ quick: options.quick, log });
    } catch (err) {
      upstream = (err as Error).message;
      log(`upstream figures failed: ${upstream}`);
    }
  }

  meta.loadEnd = os.loadavg();
  meta.seconds = (performance.now() - started) / 1000;
  const results: BenchResults = { meta, cells, engine, engineError, compaction, compactionError, upstream, targets: computeTargets(cells, engine, meta), notes };

  const out = process.stdout;
  out.write(`\n${formatHeader(meta)}\n`);
  out.write(
    `servers: ${kinds.map((k) => SERVER_LABELS[k]).join(', ')}; ratios are ops/s of the zipkv row over the original's / s3rver's / the ceiling's` +
      `${meta.original === null ? ' (zipkvserver is not on the PATH: no original in this run)' : ''}\n`,
  );
  if (cells.length) out.write(`${formatWorkloadTables(cells)}\n`);
  out.write(`${formatEngine(engine, engineError)}\n`);
  if (compaction || compactionError) out.write(`${formatCompaction(compaction, compactionError)}\n`);
  if (upstream) out.write(`${formatUpstream(upstream)}\n`);
  out.write(`${formatTargets(results.targets)}\n`);
  for (const note of notes) out.write(`note: ${note}\n`);
  out.write(`\n(${meta.seconds.toFixed(0)} s)\n`);

  const resultsDir = path.join(ROOT, 'bench-results');
  await writeJson(path.join(resultsDir, 'latest.json'), results);
  const svg = svgChart(results);
  await fs.writeFile(path.join(resultsDir, 'latest.svg'), svg);
  await fs.writeFile(path.join(resultsDir, 'latest.md'), `${markdownResults(results)}\n`);
  log(`results: ${path.join('bench-results', 'latest.json')} (and latest.svg, latest.md)`);
  if (options.save) {
    const docs = path.join(ROOT, 'docs');
    await writeJson(path.join(docs, 'benchmarks.json'), results);
    await fs.writeFile(path.join(docs, 'benchmarks.svg'), svg);
    const updated = await updateMarkdown(path.join(docs, 'benchmarks.md'), markdownResults(results));
    log(`saved: docs/benchmarks.json, docs/benchmarks.svg${updated ? ', results section of docs/benchmarks.md' : ''}`);
  }
}

// The run must end by itself, whatever hangs.
const watchdog = setTimeout(
  () => {
    log('bench: watchdog: the run took too long; stopping every server');
    killAllSync();
    process.exit(3);
  },
  (process.argv.includes('--quick') ? 5 : 12) * 60_000,
);
watchdog.unref();

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`bench: ${signal}: stopping every server`);
    void cleanupAll().finally(() => process.exit(130));
  });
}
process.once('exit', killAllSync);

try {
  await main();
} catch (err) {
  log(`bench: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
