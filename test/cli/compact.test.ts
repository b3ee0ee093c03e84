/** `zipkv compact`, and what `stats` and `history` say of a compacted store. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { startZipkvServe, unwrap, zipkv } from '../helpers/cli.js';
import { copyFixture, readManifest } from '../helpers/paths.js';

async function blockBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(dir)) if (name.startsWith('block')) total += (await fs.stat(path.join(dir, name))).size;
  return total;
}

describe('cli: zipkv compact', function () {
  this.timeout(60_000);

  it('stats --keep-history previews, compact does it, and stats, history and verify then say where the history begins', async () => {
    const dir = await copyFixture('basic'); // 240 revisions written by the original, 125 live objects
    const live = Object.keys((await readManifest('basic')).live).length;
    const preview = await zipkv('stats', dir, '--keep-history', '1s', '--json');
    expect(preview.code, preview.stderr).to.equal(0);
    const planned = (JSON.parse(preview.stdout) as { historyStart: number; compaction: { historyStart: number; forgottenRecords: number; reclaimableBytes: number } });
    expect(planned.historyStart).to.equal(0);
    expect(planned.compaction.historyStart).to.equal(240);
    expect(planned.compaction.forgottenRecords).to.equal(240);
    expect(planned.compaction.reclaimableBytes).to.be.greaterThan(0);
    const before = await blockBytes(dir);

    const done = await zipkv('compact', dir, '--keep-history', '1s');
    expect(done.code, done.stderr).to.equal(0);
    expect(unwrap(done.stdout)).to.match(new RegExp(`history now begins at revision 240: 240 older operations forgotten, ${live} objects live before it kept`));
    expect(unwrap(done.stdout)).to.match(/Read [\d.]+ KiB, wrote [\d.]+ KiB, freed [\d.]+ KiB: \d+ blocks rewritten, \d+ deleted/);
    const after = await blockBytes(dir);
    expect(after).to.be.lessThan(before);
    // The space freed is about what stats announced (net of the copies).
    expect(before - after).to.be.closeTo(planned.compaction.reclaimableBytes, planned.compaction.reclaimableBytes * 0.01 + 1);

    const stats = await zipkv('stats', dir);
    expect(unwrap(stats.stdout + stats.stderr)).to.not.contain('warning');
    const json = JSON.parse((await zipkv('stats', dir, '--json')).stdout) as { historyStart: number; liveObjects: number };
    expect(json).to.include({ historyStart: 240, liveObjects: live });
    const history = await zipkv('history', dir);
    expect(history.code).to.equal(0);
    expect(unwrap(history.stderr)).to.contain('history begins at revision 240');
    // Piped, still the original's three columns: one kept record per live object.
    expect(history.stdout.trim().split('\n')).to.have.length(1 + live);
    const forgotten = await zipkv('history', dir, '--rev', '3');
    expect(forgotten.code).to.equal(2);
    expect(unwrap(forgotten.stderr)).to.contain('revision 3 is out of range').and.contain('holds revisions 239..239');
    const verify = await zipkv('verify', dir);
    expect(verify.code, verify.stdout + verify.stderr).to.equal(0);

    // Nothing left to do: said, and nothing written.
    const again = await zipkv('compact', dir, '--keep-history', '1s', '--json');
    expect(JSON.parse(again.stdout)).to.include({ compacted: false, historyStart: 240 });
  });

  it('refuses a bad duration, and a directory a server holds', async () => {
    const dir = await copyFixture('one-block');
    const bad = await zipkv('compact', dir, '--keep-history', '5x');
    expect(bad.code).to.equal(2);
    expect(unwrap(bad.stderr)).to.contain('--keep-history must be a duration').and.contain('not "5x"');
    const missing = await zipkv('compact', dir);
    expect(missing.code).to.equal(2);
    expect(unwrap(missing.stderr)).to.contain('Missing required flag keep-history');

    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
    try {
      await sleep(50);
      const held = await zipkv('compact', dir, '--keep-history', '1s');
      expect(held.code).to.equal(2);
      expect(unwrap(held.stderr)).to.match(/held by|in use|another process|locked/i);
    } finally {
      await server.stop();
    }
  });
});
