/**
 * The short crash run for CI: about 20 kill -9 cycles of the real `zipkv serve` under load, on
 * one directory, with a 256 KiB block size (a roll-over every few PUTs, bodies larger than a
 * block) and a checkpoint every 4 KiB of journal. The long run is `npm run soak`.
 * ZIPKV_SEED=<n> repeats a run's choices; ZIPKV_CRASH_CYCLES=<n> changes the number of cycles.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { tempDir } from '../helpers/paths.js';
import { startZipkvServe } from '../helpers/cli.js';
import { type CrashSummary, formatSummary, runCrashCycles } from './crash-cycles.js';
import { seedFromEnv, sleep } from './util.js';

/** Prints the summary and checks that nothing acknowledged was lost or damaged; returns the detail for further checks. */
function expectNothingLost(summary: CrashSummary, lines: string[]): string {
  const report = formatSummary(summary);
  console.log(`      ${report.split('\n').join('\n      ')}`);
  const detail = `${report}\n${lines.join('\n')}`;
  expect(summary.problems, detail).to.deep.equal([]);
  expect(summary.lost, detail).to.equal(0);
  expect(summary.corrupted, detail).to.equal(0);
  expect(summary.wrongReads, detail).to.equal(0);
  expect(summary.unexpected, detail).to.equal(0);
  expect(summary.startFailures, detail).to.equal(0);
  return detail;
}

describe('reliability: kill -9 cycles of zipkv serve under load', function () {
  this.timeout(150_000);

  it('loses and corrupts nothing acknowledged over ~20 cycles (kills at random, at checkpoints, at roll-overs, during recovery)', async () => {
    const seed = seedFromEnv();
    const cycles = Number(process.env['ZIPKV_CRASH_CYCLES'] ?? 20);
    const dir = path.join(await tempDir('crash-cycles'), 'store');
    const lines: string[] = [];
    const summary = await runCrashCycles({
      dir,
      seed,
      cycles,
      timeLimitMs: 80_000,
      blockSize: 262_144,
      checkpointBytes: 4096,
      clients: 6,
      keySpace: 40,
      maxBodySize: 1_500_000,
      bigBodyChance: 0.04,
      loadMs: [300, 1200],
      startupKillChance: 0.25,
      log: (line) => lines.push(line),
    });
    const detail = expectNothingLost(summary, lines);
    expect(summary.cycles, detail).to.be.at.least(Math.min(cycles, 10));
    expect(summary.acknowledged, detail).to.be.greaterThan(summary.cycles * 10);
    // The interesting moments were hit, not just hoped for.
    expect(summary.kills.rollover + summary.kills.checkpoint, detail).to.be.greaterThan(0);
  });

  it('with --keep-history 1s and compactions every 200 ms: nothing acknowledged lost, kills land while compactions delete blocks', async () => {
    const seed = seedFromEnv() + 1;
    const cycles = Number(process.env['ZIPKV_CRASH_CYCLES'] ?? 14);
    const dir = path.join(await tempDir('crash-compaction'), 'store');
    const lines: string[] = [];
    const summary = await runCrashCycles({
      dir,
      seed,
      cycles,
      timeLimitMs: 70_000,
      blockSize: 131_072,
      checkpointBytes: 16_384,
      keepHistory: '1s',
      clients: 6,
      keySpace: 30,
      maxBodySize: 400_000,
      bigBodyChance: 0.04,
      loadMs: [600, 1800],
      startupKillChance: 0.15,
      log: (line) => lines.push(line),
    });
    const detail = expectNothingLost(summary, lines);
    expect(summary.cycles, detail).to.be.at.least(Math.min(cycles, 8));
    expect(summary.kills.compaction, detail).to.be.greaterThan(0);
    // And the space comes back: once the window has passed, a server left running keeps about
    // one block per live object (a block is rewritten when less than 70% of it is needed).
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', '131072', '--keep-history', '1s', '--compaction-interval', '200']);
    let left = Infinity;
    try {
      for (let i = 0; i < 100 && left > summary.finalObjects + 4; i++) {
        await sleep(150);
        left = (await fs.readdir(dir)).filter((n) => /^block\d{10}$/.test(n)).length;
      }
    } finally {
      await server.stop();
    }
    console.log(`      block files left: ${left} of ${summary.blocksCreated} created, for ${summary.finalObjects} live objects`);
    expect(left, detail).to.be.at.most(summary.finalObjects + 4);
  });
});
