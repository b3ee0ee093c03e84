/**
 * The long crash run for release checks: `npm run soak -- [options]`.
 *
 *   --cycles N         kill -9 cycles to run (default 120)
 *   --minutes M        stop starting new cycles after M minutes (default 30)
 *   --seed S           PRNG seed (default: from the clock; printed, so a run can be repeated)
 *   --block-size B     server block size (default 262144: a roll-over every few PUTs)
 *   --checkpoint-bytes C   journal size between checkpoints (default 4096)
 *   --max-body B       largest PUT body (default 4000000)
 *   --clients N        concurrent clients (default 8)
 *   --keys N           key space (default 64)
 *   --generation N     cycles per store directory (default 30): each generation starts a fresh
 *                      store, so its db stays small and checkpoints keep happening under load
 *                      (with one long-lived store they become rare as the db grows); 0: one store
 *   --dir D            parent of the store directories (default: a fresh temporary one, removed
 *                      after a clean run)
 *   --quiet            no line per cycle
 *
 * Prints one line per cycle and a summary (cycles, acknowledged operations, lost, corrupted);
 * exits 1 if anything was lost or corrupted, or any other problem was seen.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type CrashSummary, emptySummary, formatSummary, runCrashCycles } from '../reliability/crash-cycles.js';
import { seedFromEnv } from '../reliability/util.js';

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    console.error(`--${name} must be a positive whole number, not ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return Number(value);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cycles: { type: 'string' },
      minutes: { type: 'string' },
      seed: { type: 'string' },
      'block-size': { type: 'string' },
      'checkpoint-bytes': { type: 'string' },
      'max-body': { type: 'string' },
      clients: { type: 'string' },
      keys: { type: 'string' },
      generation: { type: 'string' },
      dir: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: npm run soak -- [--cycles N] [--minutes M] [--seed S] [--block-size B] [--checkpoint-bytes C] [--max-body B] [--clients N] [--keys N] [--generation N] [--dir D] [--quiet]');
    return;
  }
  const cycles = positiveInt('cycles', values.cycles, 120);
  const minutes = positiveInt('minutes', values.minutes, 30);
  const seed = values.seed !== undefined ? positiveInt('seed', values.seed, 1) >>> 0 : seedFromEnv();
  const blockSize = positiveInt('block-size', values['block-size'], 262_144);
  const generation = values.generation === '0' ? 0 : positiveInt('generation', values.generation, 30);
  const temporary = values.dir === undefined;
  const parent = values.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-soak-')));
  const started = Date.now();
  const limitMs = minutes * 60_000;

  const summaries: CrashSummary[] = [];
  let done = 0;
  for (let gen = 0; done < cycles && Date.now() - started < limitMs; gen++) {
    const count = generation === 0 ? cycles : Math.min(generation, cycles - done);
    const dir = path.join(parent, `store-${gen}`);
    const summary = await runCrashCycles({
      dir,
      seed: (seed + gen) >>> 0,
      cycles: count,
      timeLimitMs: limitMs - (Date.now() - started),
      blockSize,
      checkpointBytes: positiveInt('checkpoint-bytes', values['checkpoint-bytes'], 4096),
      clients: positiveInt('clients', values.clients, 8),
      keySpace: positiveInt('keys', values.keys, 64),
      maxBodySize: positiveInt('max-body', values['max-body'], 4_000_000),
      bigBodyChance: 0.05,
      loadMs: [300, 2500],
      startupKillChance: 0.25,
      log: values.quiet ? undefined : (line) => console.log(`[store ${gen}] ${line}`),
    });
    summaries.push(summary);
    done += summary.cycles;
    if (!values.quiet) console.log(`[store ${gen}] ${formatSummary(summary).split('\n').join(`\n[store ${gen}] `)}`);
    if (failed(summary)) break;
  }
  const total = combine(seed, summaries, Date.now() - started);
  console.log('');
  console.log(`soak summary (${summaries.length} store${summaries.length === 1 ? '' : 's'} of up to ${generation || cycles} cycles; --seed ${seed} repeats the run)`);
  console.log(formatSummary(total));
  if (failed(total)) {
    console.log(`FAILED; the stores are kept in ${parent}; repeat with --seed ${seed}`);
    process.exitCode = 1;
  } else {
    console.log('OK: nothing acknowledged was lost or corrupted');
    if (temporary) await fs.rm(parent, { recursive: true, force: true });
  }
}

function failed(s: CrashSummary): boolean {
  return s.lost > 0 || s.corrupted > 0 || s.wrongReads > 0 || s.unexpected > 0 || s.startFailures > 0 || s.problems.length > 0;
}

/** The sum of the generations' summaries. */
function combine(seed: number, parts: CrashSummary[], elapsedMs: number): CrashSummary {
  const total: CrashSummary = { ...emptySummary(seed), elapsedMs };
  for (const p of parts) {
    for (const field of ['cycles', 'acknowledged', 'lost', 'corrupted', 'inFlightAtKill', 'inFlightLanded', 'unexpected', 'wrongReads', 'startupKills', 'killsMidCheckpoint', 'blocksCreated', 'recoveryWarnings', 'startFailures', 'finalObjects'] as const) {
      total[field] += p[field];
    }
    for (const [kind, n] of Object.entries(p.acknowledgedByKind)) total.acknowledgedByKind[kind] = (total.acknowledgedByKind[kind] ?? 0) + n;
    for (const mode of ['timer', 'checkpoint', 'rollover', 'compaction'] as const) total.kills[mode] += p.kills[mode];
    total.finalRevision = (total.finalRevision ?? 0) + (p.finalRevision ?? 0);
    total.problems.push(...p.problems);
  }
  return total;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
