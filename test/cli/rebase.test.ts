import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { zipkv, unwrap } from '../helpers/cli.js';
import { listStore } from '../../src/lib/store/files.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { type Store, openStore } from '../../src/lib/store/store.js';
import { readDbSummary } from '../helpers/reference-db.js';
import { type ManifestLive, copyFixture, fixturesDir, readHistoryTxt, readManifest, tempDir } from '../helpers/paths.js';

/** Name -> sha256 of every file in a directory, to show that nothing was written. */
async function fingerprint(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await fs.readdir(dir)).sort()) {
    out[name] = createHash('sha256').update(await fs.readFile(path.join(dir, name))).digest('hex');
  }
  return out;
}

function lowerKeys(m: Record<string, string> | null | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(m ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

function allKeys(store: Store): string[] {
  const keys: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = store.list({ after, limit: 1000 });
    keys.push(...page.objects.map((o) => o.key));
    if (!page.truncated) return keys;
    after = page.nextMarker;
  }
}

/** The store in `dir` serves exactly `live`: keys, bytes (by MD5) and metadata. */
async function expectLiveSet(dir: string, live: Record<string, ManifestLive>): Promise<void> {
  const store = await openStore(dir, { readOnly: true });
  try {
    expect(allKeys(store).sort()).to.deep.equal(Object.keys(live).sort());
    for (const [key, expected] of Object.entries(live)) {
      const info = store.head(key)!;
      expect(info.size, key).to.equal(expected.size);
      expect(createHash('md5').update(await store.read(info)).digest('hex'), key).to.equal(expected.md5);
      expect(lowerKeys(info.metadata), key).to.deep.equal(lowerKeys(expected.metadata));
    }
  } finally {
    await store.close();
  }
}

async function dbSlots(dir: string): Promise<number[]> {
  return (await listStore(new LocalStorage(dir))).dbSlots;
}

describe('cli: zipkv rebase', function () {
  this.timeout(30_000);

  it('--to 120 on basic serves the live set of rebase-120, keeps the old db and says how to undo', async () => {
    const dir = await copyFixture('basic');
    const basic = await readManifest('basic');
    const run = await zipkv('rebase', dir, '--to', '120');
    expect(run.code, run.stderr).to.equal(0);
    await expectLiveSet(dir, (await readManifest('rebase-120')).live);

    // The original's rules: one db slot, the next one, and next_backend_file never lower.
    expect(await dbSlots(dir)).to.deep.equal([3]);
    const { nextBlockId, records } = await readDbSummary(path.join(dir, 'db0000000003'));
    expect(records).to.equal(121);
    expect(nextBlockId).to.equal(basic.db_next_backend_file);

    // The replaced db is kept, byte for byte, under the name printed.
    const backup = /kept as (\S+)/.exec(run.stdout)?.[1];
    expect(backup, run.stdout).to.match(/db-before-rebase-\d{8}T\d{6}Z$/);
    expect(await fs.readFile(backup!)).to.deep.equal(await fs.readFile(path.join(fixturesDir, 'basic/data/db0000000002')));

    const history = await zipkv('history', dir);
    const original = (await readHistoryTxt('basic')).split('\n');
    expect(history.stdout).to.equal(original.slice(0, 122).join('\n') + '\n');

    // The printed undo commands bring the whole history back.
    const undo = run.stdout.split('\n').filter((l) => /^ {2}(rm|cp) /.test(l));
    expect(undo.length).to.be.greaterThan(1);
    for (const command of undo) await promisify(execFile)('sh', ['-c', command]);
    expect((await zipkv('history', dir)).stdout).to.equal(await readHistoryTxt('basic'));
    expect(await dbSlots(dir)).to.deep.equal([2]);
  });

  it('--dry-run reports what would change and writes nothing', async () => {
    const dir = await copyFixture('basic');
    const before = await fingerprint(dir);
    const run = await zipkv('rebase', dir, '--to', '120', '--dry-run', '--json');
    expect(run.code, run.stderr).to.equal(0);
    expect(await fingerprint(dir)).to.deep.equal(before);

    const basic = await readManifest('basic');
    const atTo = (await readManifest('rebase-120')).live;
    const lastPut = (limit: number) => {
      const last = new Map<string, number>();
      for (const e of basic.history.slice(0, limit)) {
        if (e.op === 'put') last.set(e.key, e.rev);
        else last.delete(e.key);
      }
      return last;
    };
    const then = lastPut(121);
    const now = lastPut(basic.history.length);
    const summary = JSON.parse(run.stdout) as Record<string, { count: number; bytes: number; sample: string[] }> & { dropped: number };
    expect(summary.dropped).to.equal(basic.history.length - 121);
    const reappear = [...then.keys()].filter((k) => !now.has(k));
    const disappear = [...now.keys()].filter((k) => !then.has(k));
    const change = [...then.keys()].filter((k) => now.has(k) && now.get(k) !== then.get(k));
    expect(summary.reappear!.count).to.equal(reappear.length);
    expect(summary.reappear!.bytes).to.equal(reappear.reduce((sum, k) => sum + atTo[k]!.size, 0));
    expect(summary.disappear!.count).to.equal(disappear.length);
    expect(summary.disappear!.bytes).to.equal(disappear.reduce((sum, k) => sum + basic.live[k]!.size, 0));
    expect(summary.change!.count).to.equal(change.length);
    expect(summary.reappear!.sample).to.include(reappear.sort()[0]);
  });

  it('--into copies the live objects into a new store with fewer blocks; the source is untouched', async () => {
    const src = await copyFixture('basic');
    const dst = path.join(await tempDir('into'), 'new');
    const before = await fingerprint(src);
    const run = await zipkv('rebase', src, '--into', dst);
    expect(run.code, run.stderr).to.equal(0);
    expect(await fingerprint(src)).to.deep.equal(before);
    await expectLiveSet(dst, (await readManifest('basic')).live);
    const blocks = (await listStore(new LocalStorage(dst))).blocks.size;
    expect(blocks).to.be.greaterThan(0).and.lessThan((await listStore(new LocalStorage(src))).blocks.size);
    expect(await dbSlots(dst)).to.have.length(1);

    // A destination that already holds a store is refused, and left as it was.
    const dstBefore = await fingerprint(dst);
    const again = await zipkv('rebase', src, '--into', dst);
    expect(again.code).to.equal(2);
    expect(unwrap(again.stderr)).to.contain('already holds a store');
    expect(await fingerprint(dst)).to.deep.equal(dstBefore);
  });

  it('--into with --to and -bs: the live set at that revision, in blocks of that size', async () => {
    const dst = path.join(await tempDir('into'), 'new');
    const run = await zipkv('rebase', '-dir', await copyFixture('basic'), '-into', dst, '-to', '120', '-bs', '65536');
    expect(run.code, run.stderr).to.equal(0);
    await expectLiveSet(dst, (await readManifest('rebase-120')).live);
    const listing = await listStore(new LocalStorage(dst));
    for (const name of listing.blocks.values()) expect((await fs.stat(path.join(dst, name))).size).to.be.at.most(65536);
    expect(listing.blocks.size).to.be.greaterThan(1);
  });

  it('refuses a revision out of range, a missing directory and a corrupt db, writing nothing', async () => {
    const dir = await copyFixture('basic');
    const missing = path.join(await tempDir(), 'no-such-dir');
    const corrupt = await copyFixture('one-block');
    const dbFile = path.join(corrupt, 'db0000000000');
    await fs.writeFile(dbFile, 'this is not a gzip file\n');
    const before = await fingerprint(dir);
    const corruptBefore = await fingerprint(corrupt);

    const [range, gone, bad] = await Promise.all([
      zipkv('rebase', dir, '--to', '240'),
      zipkv('rebase', missing, '--to', '1'),
      zipkv('rebase', corrupt, '--to', '1'),
    ]);
    expect(range.code).to.equal(2);
    expect(unwrap(range.stderr)).to.contain('revision 240 is out of range').and.contain('0..239');
    expect(await fingerprint(dir)).to.deep.equal(before);

    expect(gone.code).to.equal(2);
    expect(unwrap(gone.stderr)).to.contain(`${missing}: no such directory`);
    await fs.access(missing).then(() => expect.fail('the directory was created'), () => undefined);

    expect(bad.code).to.equal(2);
    expect(unwrap(bad.stderr)).to.contain(dbFile);
    expect(await fingerprint(corrupt)).to.deep.equal(corruptBefore);
  });

  it('refuses while another process holds the directory, naming its pid', async () => {
    const dir = await copyFixture('one-block');
    await fs.writeFile(path.join(dir, 'zipkv.lock'), `${process.pid}\n`);
    const before = await fingerprint(dir);
    const run = await zipkv('rebase', dir, '--to', '3');
    expect(run.code).to.equal(2);
    expect(unwrap(run.stderr)).to.contain(`process ${process.pid}`);
    expect(await fingerprint(dir)).to.deep.equal(before);
  });

  it('drops journal records beyond the revision and never reuses a block id', async () => {
    const running = await tempDir('journal');
    const store = await openStore(running, { fsync: false, blockSize: 16 });
    await store.put('a', Buffer.from('0123456789'));
    await store.close(); // db0000000000 and block0000000000
    const reopened = await openStore(running, { fsync: false, blockSize: 16 });
    await reopened.put('b', Buffer.from('abcdefghij')); // in the journal and the open block1
    await reopened.delete('a');
    // The directory as a crash would leave it: records in the journal, no checkpoint.
    const dir = await tempDir('crashed');
    await fs.cp(running, dir, { recursive: true });
    await fs.rm(path.join(dir, 'zipkv.lock'));
    await reopened.close();

    const run = await zipkv('rebase', dir, '--to', '0');
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stdout).to.contain('zipkv-journal-before-rebase-');
    // The journal's records were first folded into a db of their own (slot 1), so that no step
    // of the rebase could lose them; the rebased db then took the next slot.
    expect(await dbSlots(dir)).to.deep.equal([2]);
    const { nextBlockId } = await readDbSummary(path.join(dir, 'db0000000002'));
    expect(nextBlockId).to.equal(2); // past block1, which only a dropped record used

    const after = await openStore(dir, { fsync: false });
    try {
      expect(after.revision).to.equal(0);
      expect(allKeys(after)).to.deep.equal(['a']);
      await after.put('c', Buffer.from('x'));
      expect(after.head('c')!.entry.block).to.equal(2);
    } finally {
      await after.close();
    }
  });
});
