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
 *   --dir D            store directory (default: a fresh temporary one, removed after a clean run)
 *   --quiet            no line per cycle
 *
 * Prints one line per cycle and a summary (cycles, acknowledged operations, lost, corrupted);
 * exits 1 if anything was lost or corrupted, or any other problem was seen.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSummary, runCrashCycles } from '../reliability/crash-cycles.js';
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
      dir: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: npm run soak -- [--cycles N] [--minutes M] [--seed S] [--block-size B] [--checkpoint-bytes C] [--max-body B] [--clients N] [--keys N] [--dir D] [--quiet]');
    return;
  }
  const cycles = positiveInt('cycles', values.cycles, 120);
  const minutes = positiveInt('minutes', values.minutes, 30);
  const seed = values.seed !== undefined ? positiveInt('seed', values.seed, 1) >>> 0 : seedFromEnv();
  const blockSize = positiveInt('block-size', values['block-size'], 262_144);
  const temporary = values.dir === undefined;
  const dir = values.dir ?? path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-soak-')), 'store');

  const summary = await runCrashCycles({
    dir,
    seed,
    cycles,
    timeLimitMs: minutes * 60_000,
    blockSize,
    checkpointBytes: positiveInt('checkpoint-bytes', values['checkpoint-bytes'], 4096),
    clients: positiveInt('clients', values.clients, 8),
    keySpace: positiveInt('keys', values.keys, 64),
    maxBodySize: positiveInt('max-body', values['max-body'], 4_000_000),
    bigBodyChance: 0.05,
    loadMs: [300, 2500],
    startupKillChance: 0.25,
    log: values.quiet ? undefined : (line) => console.log(line),
  });
  console.log('');
  console.log('soak summary');
  console.log(formatSummary(summary));
  const failed = summary.lost > 0 || summary.corrupted > 0 || summary.wrongReads > 0 || summary.unexpected > 0 || summary.problems.length > 0;
  if (failed) {
    console.log(`FAILED; the store is kept in ${dir}; repeat with --seed ${seed}`);
    process.exitCode = 1;
  } else {
    console.log('OK: nothing acknowledged was lost or corrupted');
    if (temporary) await fs.rm(path.dirname(dir), { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
