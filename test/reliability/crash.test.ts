/**
 * The short crash run for CI: about 20 kill -9 cycles of the real `zipkv serve` under load, on
 * one directory, with a 256 KiB block size (a roll-over every few PUTs, bodies larger than a
 * block) and a checkpoint every 4 KiB of journal. The long run is `npm run soak`.
 * ZIPKV_SEED=<n> repeats a run's choices; ZIPKV_CRASH_CYCLES=<n> changes the number of cycles.
 */
import path from 'node:path';
import { expect } from 'chai';
import { tempDir } from '../helpers/paths.js';
import { formatSummary, runCrashCycles } from './crash-cycles.js';
import { seedFromEnv } from './util.js';

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
    const report = formatSummary(summary);
    console.log(`      ${report.split('\n').join('\n      ')}`);
    const detail = `${report}\n${lines.join('\n')}`;
    expect(summary.problems, detail).to.deep.equal([]);
    expect(summary.lost, detail).to.equal(0);
    expect(summary.corrupted, detail).to.equal(0);
    expect(summary.wrongReads, detail).to.equal(0);
    expect(summary.unexpected, detail).to.equal(0);
    expect(summary.startFailures, detail).to.equal(0);
    expect(summary.cycles, detail).to.be.at.least(Math.min(cycles, 10));
    expect(summary.acknowledged, detail).to.be.greaterThan(summary.cycles * 10);
    // The interesting moments were hit, not just hoped for.
    expect(summary.kills.rollover + summary.kills.checkpoint, detail).to.be.greaterThan(0);
  });
});
