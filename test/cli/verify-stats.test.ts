import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { zipkv, unwrap } from '../helpers/cli.js';
import { blockFileName } from '../../src/lib/store/files.js';
import { openStore } from '../../src/lib/store/store.js';
import { copyFixture, readManifest, tempDir } from '../helpers/paths.js';

/** A store written by zipkv (so every object has a stored MD5): `victim` is overwritten once. */
async function zipkvStore(): Promise<string> {
  const dir = await tempDir('written');
  const store = await openStore(dir, { fsync: false, blockSize: 4096 });
  await store.put('victim', Buffer.alloc(100, 'v'));
  await store.put('other', Buffer.alloc(300, 'o'), { metadata: { 'x-amz-meta-color': 'blue' } });
  await store.put('victim', Buffer.alloc(200, 'w'));
  await store.copy('other', 'other-copy');
  await store.put('empty', Buffer.alloc(0));
  await store.close();
  return dir;
}

describe('cli: zipkv verify and zipkv stats', function () {
  this.timeout(30_000);

  it('verify passes on the fixtures, counting the original\'s objects as unverifiable', async () => {
    const [basic, oneBlock, empty] = await Promise.all(['basic', 'one-block', 'empty'].map(async (n) => zipkv('verify', await copyFixture(n))));
    const live = Object.keys((await readManifest('basic')).live).length;
    expect(basic.code, basic.stderr).to.equal(0);
    expect(basic.stdout).to.contain(`${live} live objects: 0 verified by MD5, ${live} unverifiable (no stored MD5)`);
    expect(oneBlock.code, oneBlock.stderr).to.equal(0);
    expect(empty.code, empty.stderr).to.equal(0);
  });

  it('verify checks the bytes of a store zipkv wrote, and names the key whose bytes changed', async () => {
    const dir = await zipkvStore();
    const good = await zipkv('verify', dir);
    expect(good.code, good.stdout + good.stderr).to.equal(0);
    expect(good.stdout).to.contain('4 live objects: 4 verified by MD5, 0 unverifiable');

    const store = await openStore(dir, { readOnly: true });
    const { block, offset } = store.head('victim')!.entry;
    await store.close();
    const file = path.join(dir, blockFileName(block));
    const bytes = await fs.readFile(file);
    bytes[offset + 10] ^= 0xff;
    await fs.writeFile(file, bytes);

    const bad = await zipkv('verify', dir);
    expect(bad.code).to.equal(1);
    expect(bad.stdout).to.match(/problem: victim \(revision 2\b/);
    expect(bad.stdout).to.contain('3 verified by MD5');
    expect(unwrap(bad.stderr)).to.contain(`1 problem found in ${dir}`);
  });

  it('verify reports a db that cannot be read, and a missing directory', async () => {
    const dir = await copyFixture('one-block');
    await fs.writeFile(path.join(dir, 'db0000000000'), 'garbage');
    const missing = path.join(await tempDir(), 'no-such-dir');
    const [bad, gone] = await Promise.all([zipkv('verify', dir), zipkv('verify', missing)]);
    expect(bad.code).to.equal(1);
    expect(bad.stdout).to.contain(path.join(dir, 'db0000000000'));
    expect(gone.code).to.equal(2);
    expect(unwrap(gone.stderr)).to.contain(`${missing}: no such directory`);
  });

  it('stats: live and dead bytes per block, and totals', async () => {
    const dir = await zipkvStore();
    const run = await zipkv('stats', '-dir', dir, '--json');
    expect(run.code, run.stderr).to.equal(0);
    const usage = JSON.parse(run.stdout) as {
      liveObjects: number;
      liveBytes: number;
      storedLiveBytes: number;
      deadBytes: number;
      blockBytes: number;
      records: Record<string, number>;
      blocks: Array<{ id: number; fileSize: number; liveBytes: number; deadBytes: number }>;
    };
    expect(usage.records).to.deep.equal({ put: 4, copy: 1, delete: 0 });
    expect(usage.liveObjects).to.equal(4);
    expect(usage.liveBytes).to.equal(300 + 200 + 300); // the copy counts again in a listing...
    expect(usage.storedLiveBytes).to.equal(300 + 200); // ...but its bytes are stored once
    expect(usage.deadBytes).to.equal(100); // the first body of `victim`
    expect(usage.blockBytes).to.equal(600);
    expect(usage.blocks.map((b) => [b.id, b.fileSize, b.liveBytes, b.deadBytes])).to.deep.equal([[0, 600, 500, 100]]);
  });

  it('stats on basic, piped: one line per block, then the totals', async () => {
    const manifest = (await readManifest('basic')) as Awaited<ReturnType<typeof readManifest>> & { files: Array<{ name: string; size: number }> };
    const run = await zipkv('stats', await copyFixture('basic'));
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout.trim().split('\n').map((l) => l.split('\t'));
    expect(lines[0]).to.deep.equal(['block', 'size', 'live', 'dead', 'live_objects']);
    const blocks = manifest.files.filter((f) => f.name.startsWith('block'));
    expect(lines.slice(1, -1).map((l) => Number(l[1]))).to.deep.equal(blocks.map((f) => f.size));
    const total = lines.at(-1)!;
    expect(total[0]).to.equal('total');
    expect(Number(total[1])).to.equal(blocks.reduce((sum, f) => sum + f.size, 0));
    expect(Number(total[2]) + Number(total[3])).to.equal(Number(total[1]));
    expect(Number(total[4])).to.equal(Object.keys(manifest.live).length);
  });
});
