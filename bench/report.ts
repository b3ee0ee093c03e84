/** Printing the results (cli-table3), and writing them as JSON, Markdown and an SVG chart. */
import fs from 'node:fs/promises';
import path from 'node:path';
import Table from 'cli-table3';
import type { LoadResult } from './client.js';
import type { UpstreamBenchResults } from './upstream.js';
import type { CompactionBenchResults } from './compaction.js';
import type { DiskFigures } from './disk.js';
import type { CheckpointLatencyFigures, EngineResults } from './engine-figures.js';
import { SERVER_KINDS, SERVER_LABELS, type ServerKind } from './servers.js';
import type { Cell } from './workloads.js';

export interface ServerCell {
  kind: ServerKind;
  /** Every measured run, in the order run. */
  runs: LoadResult[];
  /** The run with the most ops/s (see docs/benchmarks.md: interference only ever slows a run). */
  best: LoadResult;
}

export interface CellResult {
  cell: Cell;
  servers: ServerCell[];
  /** Servers of the run left out of this cell because they cannot do its requests, and why. */
  skipped?: { kind: ServerKind; reason: string }[];
  /** 1-minute load average when the cell started. */
  load1: number;
  /** Printed under the workload's table. */
  note?: string;
  /**
   * ops/s of each zipkv server over each peer's in this cell (null when the peer has no figure):
   * written to the JSON for readers that do not recompute them.
   */
  ratios?: Partial<Record<ZipkvKind, Record<PeerKind, number | null>>>;
}

export type ZipkvKind = 'zipkv' | 'zipkv-nofsync';
export type PeerKind = 'original' | 's3rver' | 'ceiling';
const ZIPKV_KINDS: readonly ZipkvKind[] = ['zipkv', 'zipkv-nofsync'];
const PEER_KINDS: readonly PeerKind[] = ['original', 's3rver', 'ceiling'];

export interface Meta {
  date: string;
  command: string;
  flags: string[];
  quick: boolean;
  node: string;
  platform: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  /** os.loadavg() when the run started and when it ended. */
  loadStart: number[];
  loadEnd: number[];
  commit: string | undefined;
  /** The servers of the run, in the order they take turns (absent in results of older runs). */
  servers?: ServerKind[];
  /**
   * The original Go zipkvserver found on the PATH, or null when there was none (and the original
   * was not measured); absent in results of older runs.
   */
  original?: string | null;
  /** src/, bin/, proto/ or package.json differ from the commit. */
  uncommitted?: boolean;
  windowMs: number;
  warmupMs: number;
  reps: number;
  listKeys: number;
  s3rverListKeys: number;
  engineRecords: number;
  writeAmpPuts: number;
  /** Window of the PUT-latency-during-checkpoints figure (absent in results of older runs). */
  checkpointSeconds?: number;
  /** The disk under the temporary directories, measured before the run. */
  disk?: DiskFigures;
  seconds?: number;
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  /** undefined when the figure is missing (skipped, failed, not run). */
  met: boolean | undefined;
}

export interface BenchResults {
  meta: Meta;
  cells: CellResult[];
  engine?: EngineResults;
  engineError?: string;
  /** Foreground requests with a compaction running vs idle (bench/compaction.ts). */
  compaction?: CompactionBenchResults;
  compactionError?: string;
  /** The upstream tier on Ceph radosgw (bench/upstream.ts), or why it was not measured. */
  upstream?: UpstreamBenchResults | string;
  targets: Target[];
  /** Problems met on the way (a group that failed to start, say). */
  notes: string[];
}

// ------------------------------------------------------------------ figures

function result(c: CellResult, kind: ServerKind): LoadResult | undefined {
  return c.servers.find((s) => s.kind === kind)?.best;
}

export function ratio(c: CellResult, a: ServerKind, b: ServerKind): number | undefined {
  const x = result(c, a);
  const y = result(c, b);
  if (!x || !y || y.opsPerSec === 0) return undefined;
  return x.opsPerSec / y.opsPerSec;
}

/** The ratios of a cell, as stored in CellResult.ratios. */
export function cellRatios(c: CellResult): NonNullable<CellResult['ratios']> {
  const out: NonNullable<CellResult['ratios']> = {};
  for (const z of ZIPKV_KINDS) {
    if (!result(c, z)) continue;
    const row = {} as Record<PeerKind, number | null>;
    for (const p of PEER_KINDS) row[p] = ratio(c, z, p) ?? null;
    out[z] = row;
  }
  return out;
}

function fmtOps(v: number): string {
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function fmtMs(v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** What the PUT-latency-during-checkpoints row says after its p99, in both the console and Markdown. */
function checkpointLatencyDetail(c: CheckpointLatencyFigures): string {
  return (
    `${c.writers} writers, ${c.bodyBytes / 1024} KiB PUTs${c.fsync ? '' : ' (fsync off)'}, fresh keys, ${c.windowSeconds} s: ` +
    `${c.puts.toLocaleString('en-US')} PUTs (${fmtOps(c.putsPerSec)}/s), p50 ${fmtMs(c.p50Ms)}, p99.9 ${fmtMs(c.p999Ms)}, max ${fmtMs(c.maxMs)} ms; ` +
    `${c.checkpoints} checkpoints back to back (${c.checkpointGapMs} ms apart), mean ${fmtMs(c.checkpointMeanMs)} ms, max ${fmtMs(c.checkpointMaxMs)} ms`
  );
}

function fmtMb(v: number): string {
  if (v === 0) return '-';
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function fmtRatio(v: number | undefined): string {
  return v === undefined ? '-' : `${v.toFixed(2)}x`;
}

function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function errorsOf(s: ServerCell): number {
  return s.runs.reduce((a, r) => a + r.errors, 0);
}

// ------------------------------------------------------------------ targets

export function computeTargets(cells: CellResult[], engine: EngineResults | undefined, meta: Meta): Target[] {
  const byId = new Map(cells.map((c) => [c.cell.id, c]));
  const targets: Target[] = [];
  /** Why a cell that ran has no figure for `kind`. */
  const missing = (c: CellResult, kind: ServerKind): string => {
    if (kind === 'original' && meta.original === null) return 'not measured (zipkvserver not on the PATH)';
    const skipped = c.skipped?.find((s) => s.kind === kind);
    if (skipped) return `not measured (${SERVER_LABELS[kind]} cannot run it)`;
    return `not measured (no ${result(c, 'zipkv') ? SERVER_LABELS[kind] : SERVER_LABELS.zipkv} figure in this run)`;
  };
  const vs = (id: string, other: ServerKind, goal: number, name: string, goalText: string) => {
    const c = byId.get(id);
    const r = c && ratio(c, 'zipkv', other);
    const nofsync = c && ratio(c, 'zipkv-nofsync', other);
    // For a durable write: what the least durable server reaches against the same peer, or
    // against the in-memory ceiling, zipkv's ratio to that least durable server.
    const floor = c && id.startsWith('put') ? (other === 'ceiling' ? ratio(c, 'zipkv', 'ceiling-durable') : ratio(c, 'ceiling-durable', other)) : undefined;
    const floorText = floor === undefined ? '' : other === 'ceiling' ? `; ${fmtRatio(floor)} of the durable ceiling` : `; durable ceiling ${fmtRatio(floor)}`;
    targets.push({
      name,
      goal: goalText,
      measured: !c
        ? 'not run'
        : r === undefined
          ? missing(c, other)
          : `${fmtRatio(r)} (${fmtOps(result(c, 'zipkv')!.opsPerSec)} vs ${fmtOps(result(c, other)!.opsPerSec)} ops/s; --no-fsync ${fmtRatio(nofsync)}${floorText})`,
      met: r === undefined ? undefined : r >= goal,
    });
  };
  vs('put-4k-c16', 's3rver', 3, 'Durable 4 KiB PUT, concurrency 16, vs s3rver', '>= 3x');
  vs('put-4k-c16', 'original', 0.7, 'Durable 4 KiB PUT, concurrency 16, vs the Go original (no fsync)', '>= 0.70x');
  vs('get-4k-c16', 's3rver', 2, '4 KiB GET, concurrency 16, vs s3rver', '>= 2x');
  vs('get-4k-c16', 'original', 0.8, '4 KiB GET, concurrency 16, vs the Go original', '>= 0.80x');
  for (const op of ['put', 'get']) {
    for (const size of ['1m', '4m']) {
      for (const conc of [1, 16]) {
        const id = `${op}-${size}-c${conc}`;
        // Large GETs at 16 clients have the higher goal: 80% of the ceiling.
        const goal = op === 'get' && conc === 16 ? 0.8 : 0.7;
        vs(id, 'ceiling', goal, `${op.toUpperCase()} ${size === '1m' ? '1 MiB' : '4 MiB'}, concurrency ${conc}, vs ceiling`, `>= ${goal.toFixed(2)}x`);
        const c = byId.get(id);
        const z = c && result(c, 'zipkv');
        if (op === 'put' && z && meta.disk) targets[targets.length - 1]!.measured += `; ${fmtMb(z.mbPerSec)} MB/s, disk ${meta.disk.writeMBps.toFixed(0)} MB/s`;
      }
    }
  }
  const records = `${(meta.engineRecords / 1e6).toLocaleString('en-US')}M`;
  targets.push({
    name: `Open a store of ${records} history records`,
    goal: '< 2 s',
    measured: engine ? `${(engine.openMs / 1000).toFixed(2)} s` : 'not run',
    met: engine ? engine.openMs < 2000 : undefined,
  });
  targets.push({
    name: `RSS per live key (${records} keys)`,
    goal: '< 200 B',
    measured: engine ? `${engine.rssPerKey.toFixed(0)} B (heap ${engine.heapPerKey.toFixed(0)} B)` : 'not run',
    met: engine ? engine.rssPerKey < 200 : undefined,
  });
  const list = byId.get('list-c1');
  const listMs = list && result(list, 'zipkv')?.p50Ms;
  targets.push({
    name: `LIST page of 1000 from ${meta.listKeys.toLocaleString('en-US')} keys (p50, concurrency 1)`,
    goal: '< 10 ms',
    measured: listMs === undefined ? 'not run' : `${fmtMs(listMs)} ms (p99 ${fmtMs(result(list!, 'zipkv')!.p99Ms)} ms)`,
    met: listMs === undefined ? undefined : listMs < 10,
  });
  return targets;
}

// ------------------------------------------------------------------ console

const PLAIN = { head: [] as string[], border: [] as string[] };
/** No rule between body rows. */
const COMPACT = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' };

export function formatHeader(meta: Meta): string {
  const load = (l: number[]) => l.map((v) => v.toFixed(2)).join(' ');
  const turns = 'ABCDEFGH'.slice(0, meta.servers?.length ?? 4).split('').join(' ');
  return [
    `zipkv benchmark  ${meta.date}  (${meta.command})`,
    `machine: ${meta.cores} cores (${meta.cpu}), ${meta.memoryGiB.toFixed(0)} GiB, ${meta.platform}, Node ${meta.node}` +
      `${meta.commit ? `; code: commit ${meta.commit.slice(0, 12)}${meta.uncommitted ? ' + uncommitted changes' : ''}` : ''}`,
    `load average at start: ${load(meta.loadStart)}${meta.loadEnd.length ? `   at end: ${load(meta.loadEnd)}` : ''}`,
    ...(meta.disk ? [diskLine(meta.disk)] : []),
    ...(meta.original === undefined ? [] : [originalLine(meta.original)]),
    `each cell: ${meta.reps} run(s) per server, alternating servers (${turns}${meta.reps > 1 ? ` ${turns}` : ''}), ` +
      `${meta.warmupMs} ms warm-up + ${meta.windowMs} ms measured; best run shown (most ops/s)`,
  ].join('\n');
}

function originalLine(original: string | null): string {
  return original
    ? `original: ${original} (the Go zipkvserver: -bs 40 MiB like zipkv; keeps the open block in memory, never fsyncs)`
    : 'original: zipkvserver is not on the PATH: the Go original is not measured in this run (its ratios and targets show as not measured)';
}

function diskLine(d: DiskFigures): string {
  return (
    `disk (temporary directories): sequential write ${d.writeMBps.toFixed(0)} MB/s (${d.writtenBytes / 2 ** 20} MiB then fdatasync), ` +
    `fdatasync after a 4 KiB append p50 ${d.fdatasyncP50Ms.toFixed(2)} ms, p99 ${d.fdatasyncP99Ms.toFixed(2)} ms`
  );
}

/** One table per workload (e.g. "PUT 4 KiB"): a row per concurrency and server. */
export function formatWorkloadTables(cells: CellResult[]): string {
  const workloads: string[] = [];
  for (const c of cells) if (!workloads.includes(c.cell.workload)) workloads.push(c.cell.workload);
  const out: string[] = [];
  for (const w of workloads) {
    const table = new Table({
      head: ['conc', 'server', 'ops/s', 'MB/s', 'p50 ms', 'p99 ms', 'errors', 'vs original', 'vs s3rver', 'vs ceiling'],
      colAligns: ['right', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      style: PLAIN,
      chars: COMPACT,
    });
    const skippedNotes: string[] = [];
    for (const c of cells.filter((x) => x.cell.workload === w)) {
      for (const kind of SERVER_KINDS) {
        const s = c.servers.find((x) => x.kind === kind);
        if (!s) {
          const skipped = c.skipped?.find((x) => x.kind === kind);
          if (skipped) {
            table.push([String(c.cell.concurrency), SERVER_LABELS[kind], '-', '-', '-', '-', '-', '', '', '']);
            skippedNotes.push(`${SERVER_LABELS[kind]}: not measured: ${skipped.reason}`);
          }
          continue;
        }
        const zipkv = s.kind === 'zipkv' || s.kind === 'zipkv-nofsync';
        table.push([
          String(c.cell.concurrency),
          SERVER_LABELS[s.kind],
          fmtOps(s.best.opsPerSec),
          fmtMb(s.best.mbPerSec),
          fmtMs(s.best.p50Ms),
          fmtMs(s.best.p99Ms),
          String(errorsOf(s)),
          zipkv ? fmtRatio(ratio(c, s.kind, 'original')) : '',
          zipkv ? fmtRatio(ratio(c, s.kind, 's3rver')) : '',
          zipkv ? fmtRatio(ratio(c, s.kind, 'ceiling')) : '',
        ]);
      }
    }
    out.push(`\n${w}\n${table.toString()}`);
    for (const note of new Set(cells.filter((x) => x.cell.workload === w && x.note).map((x) => x.note!))) out.push(note);
    for (const note of new Set(skippedNotes)) out.push(note);
    const firstErrors = cells
      .filter((x) => x.cell.workload === w)
      .flatMap((x) => x.servers.filter((s) => errorsOf(s) > 0).map((s) => `  ${x.cell.id} ${s.kind}: ${s.runs.find((r) => r.firstError)?.firstError}`));
    if (firstErrors.length) out.push(`errors:\n${firstErrors.join('\n')}`);
  }
  return out.join('\n');
}

export function formatEngine(engine: EngineResults | undefined, error: string | undefined): string {
  if (!engine) return error ? `\nEngine figures: failed: ${error}` : '';
  const table = new Table({ head: ['engine figure', 'value', 'how'], style: PLAIN, chars: COMPACT, colAligns: ['left', 'right', 'left'] });
  const records = engine.records.toLocaleString('en-US');
  table.push(
    [
      `open a store of ${records} records`,
      `${(engine.openMs / 1000).toFixed(2)} s`,
      `writer open, fastest of ${engine.openRuns.length} (${engine.openRuns.map((r) => r.openSeconds.toFixed(2)).join(', ')} s` +
        `${engine.openRuns.every((r) => typeof r.cpuSeconds === 'number') ? `; CPU ${engine.openRuns.map((r) => r.cpuSeconds!.toFixed(2)).join(', ')} s` : ''}); ` +
        `db ${fmtBytes(engine.build.dbGzipBytes)} gzip`,
    ],
    [`RSS per live key (${records} keys)`, `${engine.rssPerKey.toFixed(0)} B`, `RSS delta across the open, after gc; heap ${engine.heapPerKey.toFixed(0)} B/key`],
  );
  for (const [name, t] of [
    ['zipkv history', engine.history],
    ['zipkv rebase', engine.rebase],
  ] as const) {
    table.push([
      name,
      t.ms !== undefined ? `${(t.ms / 1000).toFixed(2)} s` : 'skipped',
      t.ms !== undefined ? `${t.command}; CLI start-up alone ${t.startupMs !== undefined ? `${(t.startupMs / 1000).toFixed(2)} s` : '?'}` : `${t.command}: ${t.note}`,
    ]);
  }
  for (const wa of engine.writeAmp) {
    table.push([
      `db bytes written / object bytes (${wa.label})`,
      `${(wa.dbPerObjectByte * 100).toFixed(2)}%`,
      `${wa.puts.toLocaleString('en-US')} PUTs of 4 KiB: ${fmtBytes(wa.dbBytesWritten)} of db files (${wa.checkpoints} checkpoints during the run + 1 at close; final db ${fmtBytes(wa.finalDbBytes)}), ` +
        `journal ${fmtBytes(wa.journalBytes)} (${(wa.journalPerObjectByte * 100).toFixed(2)}%)`,
    ]);
  }
  const ckpt = engine.checkpointLatency;
  if (ckpt) {
    table.push([`PUT p99 during checkpoints, ${ckpt.records.toLocaleString('en-US')} records`, `${fmtMs(ckpt.p99Ms)} ms`, checkpointLatencyDetail(ckpt)]);
  } else if (engine.checkpointLatencyError) {
    table.push(['PUT p99 during checkpoints', 'failed', engine.checkpointLatencyError.slice(0, 200)]);
  }
  return `\nEngine (no HTTP)\n${table.toString()}`;
}

export function formatTargets(targets: Target[]): string {
  const table = new Table({ head: ['target', 'goal', 'measured', 'met'], style: PLAIN, chars: COMPACT });
  for (const t of targets) table.push([t.name, t.goal, t.measured, t.met === undefined ? '-' : t.met ? 'yes' : 'NO']);
  return `\nTargets (same run)\n${table.toString()}`;
}

// ------------------------------------------------------------------ Markdown

function mdTable(head: string[], rows: string[][], align?: Array<'l' | 'r'>): string {
  const sep = head.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  const line = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(head), line(sep), ...rows.map(line)].join('\n');
}

export function markdownResults(results: BenchResults): string {
  const { meta } = results;
  const out: string[] = [];
  out.push(
    `Produced by \`${meta.command}\` on ${meta.date.slice(0, 10)}: ${meta.cores} cores (${meta.cpu}), Node ${meta.node}, ` +
      `load average ${meta.loadStart.map((v) => v.toFixed(2)).join(' ')} at the start and ${meta.loadEnd.map((v) => v.toFixed(2)).join(' ')} at the end` +
      `${meta.commit ? `, commit ${meta.commit.slice(0, 12)}${meta.uncommitted ? ' with uncommitted changes to the sources' : ''}` : ''}. ` +
      `${meta.disk ? `Disk: sequential write ${meta.disk.writeMBps.toFixed(0)} MB/s, fdatasync p50 ${meta.disk.fdatasyncP50Ms.toFixed(2)} ms. ` : ''}` +
      `Best of ${meta.reps} alternating run(s) of ${meta.windowMs} ms per cell.`,
  );
  out.push('');
  out.push('![ops/s per workload and server](benchmarks.svg)');
  out.push('');
  const rows = results.cells.map((c) => {
    const cellOf = (k: ServerKind) => {
      const r = result(c, k);
      return r ? `${fmtOps(r.opsPerSec)}${r.mbPerSec >= 1 ? ` (${fmtMb(r.mbPerSec)} MB/s)` : ''}` : '-';
    };
    const z = result(c, 'zipkv');
    return [
      c.cell.label,
      cellOf('zipkv'),
      cellOf('zipkv-nofsync'),
      cellOf('original'),
      cellOf('s3rver'),
      cellOf('ceiling'),
      cellOf('ceiling-durable'),
      z ? `${fmtMs(z.p50Ms)} / ${fmtMs(z.p99Ms)}` : '-',
      fmtRatio(ratio(c, 'zipkv', 'original')),
      fmtRatio(ratio(c, 'zipkv-nofsync', 'original')),
      fmtRatio(ratio(c, 'zipkv', 's3rver')),
      fmtRatio(ratio(c, 'zipkv', 'ceiling')),
    ];
  });
  out.push(
    mdTable(
      [
        'workload',
        'zipkv ops/s',
        'zipkv --no-fsync',
        'original (Go)',
        's3rver',
        'ceiling',
        'durable ceiling',
        'zipkv p50 / p99 ms',
        'zipkv / original',
        '--no-fsync / original',
        'zipkv / s3rver',
        'zipkv / ceiling',
      ],
      rows,
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  if (meta.original === null) out.push('', 'zipkvserver (the Go original) was not on the PATH: its column and ratios are not measured in this run.');
  for (const note of new Set(results.cells.filter((c) => c.note).map((c) => `${c.cell.label}: ${c.note}`))) out.push('', `${note}.`);
  const skipped = results.cells.flatMap((c) => (c.skipped ?? []).map((s) => `${c.cell.label}: ${SERVER_LABELS[s.kind]} not measured: ${s.reason}`));
  for (const note of new Set(skipped)) out.push('', `${note}.`);
  out.push('');
  out.push(mdTable(['target', 'goal', 'measured', 'met'], results.targets.map((t) => [t.name, t.goal, t.measured, t.met === undefined ? '-' : t.met ? 'yes' : '**no**'])));
  const e = results.engine;
  if (e) {
    out.push('');
    const rows: string[][] = [
      [`open a store of ${e.records.toLocaleString('en-US')} history records`, `${(e.openMs / 1000).toFixed(2)} s`],
      ['RSS per live key', `${e.rssPerKey.toFixed(0)} B (heap ${e.heapPerKey.toFixed(0)} B)`],
      ['`zipkv history` over all records', e.history.ms !== undefined ? `${(e.history.ms / 1000).toFixed(2)} s` : `skipped: ${e.history.note}`],
      [`\`zipkv rebase --to ${Math.floor(e.records / 2)}\``, e.rebase.ms !== undefined ? `${(e.rebase.ms / 1000).toFixed(2)} s` : `skipped: ${e.rebase.note}`],
      ...e.writeAmp.map((wa) => [
        `db bytes written per object byte, ${wa.puts.toLocaleString('en-US')} PUTs of 4 KiB, ${wa.label}`,
        `${(wa.dbPerObjectByte * 100).toFixed(2)}% (journal ${(wa.journalPerObjectByte * 100).toFixed(2)}%)`,
      ]),
    ];
    if (e.checkpointLatency) {
      const c = e.checkpointLatency;
      rows.push([`PUT p99 during checkpoints, ${c.records.toLocaleString('en-US')} records (${checkpointLatencyDetail(c)})`, `${fmtMs(c.p99Ms)} ms`]);
    } else if (e.checkpointLatencyError) {
      rows.push(['PUT p99 during checkpoints', `failed: ${e.checkpointLatencyError.slice(0, 200)}`]);
    }
    out.push(mdTable(['engine figure', 'value'], rows, ['l', 'r']));
  }
  const c = results.compaction;
  if (c && c.rows.length > 0) {
    out.push('');
    out.push(
      `Online compaction (${(c.blockBytes / MIB).toFixed(0)} MiB of blocks, a third needed; ${(c.copiedBytes / MIB).toFixed(0)} MiB copied at up to 64 MiB/s (8 MiB/s while requests come in), ` +
        `${(c.freedBytes / MIB).toFixed(0)} MiB freed in ${c.compactionSeconds.toFixed(1)} s; ${c.overlappingRounds} of ${c.rounds} rounds measured while it ran):`,
    );
    out.push('');
    out.push(
      mdTable(
        ['workload', 'idle ops/s', 'idle p99 ms', 'compacting ops/s', 'compacting p99 ms', 'ops/s ratio', 'p99 ratio'],
        c.rows.map((r) => [
          r.workload,
          fmtOps(r.idle.opsPerSec),
          fmtMs(r.idle.p99Ms),
          fmtOps(r.compacting.opsPerSec),
          fmtMs(r.compacting.p99Ms),
          `${(r.compacting.opsPerSec / r.idle.opsPerSec).toFixed(2)}x`,
          `${(r.compacting.p99Ms / r.idle.p99Ms).toFixed(2)}x`,
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
      ),
    );
  }
  return out.join('\n');
}

const MIB = 1024 * 1024;

const DOC_START = '<!-- bench:results:start -->';
const DOC_END = '<!-- bench:results:end -->';

/** Replaces the results section of a Markdown file (between the markers), if it has one. */
export async function updateMarkdown(file: string, markdown: string): Promise<boolean> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return false;
  }
  const a = text.indexOf(DOC_START);
  const b = text.indexOf(DOC_END);
  if (a < 0 || b < a) return false;
  await fs.writeFile(file, `${text.slice(0, a + DOC_START.length)}\n${markdown}\n${text.slice(b)}`);
  return true;
}

export async function writeJson(file: string, results: BenchResults): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
}

// ------------------------------------------------------------------ SVG

const COLORS: Record<ServerKind, string> = {
  zipkv: '#1f5fa8',
  'zipkv-nofsync': '#7fb0e0',
  original: '#3a9a5b',
  s3rver: '#e0782a',
  ceiling: '#9a9a9a',
  'ceiling-durable': '#5e5e5e',
};

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function siLabel(v: number): string {
  if (v >= 1e6) return `${v / 1e6}M`;
  if (v >= 1e3) return `${v / 1e3}k`;
  return String(v);
}

/** A grouped bar chart of ops/s (log scale): one group per cell, one bar per server. */
export function svgChart(results: BenchResults): string {
  const cells = results.cells;
  const kinds = SERVER_KINDS.filter((k) => cells.some((c) => result(c, k)));
  const bar = 11;
  const groupGap = 16;
  const groupWidth = kinds.length * bar + groupGap;
  const left = 64;
  const right = 16;
  const top = 78;
  const plotHeight = 300;
  const bottom = 92;
  const legendWidth = kinds.reduce((w, k) => w + 24 + SERVER_LABELS[k].length * 6.2, 0);
  const width = Math.ceil(Math.max(640, left + right + cells.length * groupWidth, left + right + legendWidth));
  const height = top + plotHeight + bottom;
  const values = cells.flatMap((c) => kinds.map((k) => result(c, k)?.opsPerSec ?? 0)).filter((v) => v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values, 10))));
  const y = (v: number) => top + plotHeight - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotHeight;
  const { meta } = results;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">zipkv: operations per second by workload (log scale, higher is better)</text>`,
    `<text x="${left}" y="40" fill="#444">${esc(`${meta.command} · ${meta.date.slice(0, 10)} · ${meta.cores} cores · Node ${meta.node} · load ${meta.loadStart.map((v) => v.toFixed(1)).join(' ')} · best of ${meta.reps} × ${meta.windowMs} ms`)}</text>`,
  );
  let lx = left;
  for (const k of kinds) {
    parts.push(`<rect x="${lx}" y="52" width="12" height="12" fill="${COLORS[k]}"/>`, `<text x="${lx + 16}" y="62">${esc(SERVER_LABELS[k])}</text>`);
    lx += 24 + SERVER_LABELS[k].length * 6.2;
  }
  for (let v = lo; v <= hi; v *= 10) {
    const yy = y(v).toFixed(1);
    parts.push(
      `<line x1="${left}" x2="${width - right}" y1="${yy}" y2="${yy}" stroke="#e2e2e2"/>`,
      `<text x="${left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#444">${siLabel(v)}</text>`,
    );
  }
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotHeight}" stroke="#888"/>`);
  cells.forEach((c, i) => {
    const gx = left + groupGap / 2 + i * groupWidth;
    kinds.forEach((k, j) => {
      const r = result(c, k);
      if (!r || r.opsPerSec <= 0) return;
      const yy = y(r.opsPerSec);
      parts.push(
        `<rect x="${gx + j * bar}" y="${yy.toFixed(1)}" width="${bar - 1}" height="${(top + plotHeight - yy).toFixed(1)}" fill="${COLORS[k]}">` +
          `<title>${esc(`${c.cell.label} · ${SERVER_LABELS[k]}: ${fmtOps(r.opsPerSec)} ops/s, ${fmtMb(r.mbPerSec)} MB/s, p50 ${fmtMs(r.p50Ms)} ms, p99 ${fmtMs(r.p99Ms)} ms`)}</title></rect>`,
      );
    });
    const lxm = gx + (kinds.length * bar) / 2;
    const ly = top + plotHeight + 10;
    parts.push(`<text x="${lxm}" y="${ly}" text-anchor="end" transform="rotate(-45 ${lxm} ${ly})">${esc(c.cell.label)}</text>`);
  });
  parts.push(`<line x1="${left}" x2="${width - right}" y1="${top + plotHeight}" y2="${top + plotHeight}" stroke="#888"/>`, '</svg>');
  return `${parts.join('\n')}\n`;
}
