/** Versions: every put and delete of the history, with its revision as version id. */
import { expect } from 'chai';
import { closeSnapshot, historyEntries, readSnapshot } from '../../src/lib/store/history.js';
import { type Store, type Version, openStore } from '../../src/lib/store/store.js';
import { copyFixture, readManifest, tempDir } from '../helpers/paths.js';

const open: Store[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function store(dir?: string, opts = {}): Promise<Store> {
  const s = await openStore(dir ?? (await tempDir('versions')), { fsync: false, ...opts });
  open.push(s);
  return s;
}

const brief = (v: Version) => `${v.key}@${v.revision}${v.entry ? '' : ' (deleted)'}${v.isLatest ? ' latest' : ''}`;

async function allVersions(s: Store, page: number, opts: { prefix?: string; delimiter?: string } = {}): Promise<{ versions: string[]; prefixes: string[]; pages: number }> {
  const versions: string[] = [];
  const prefixes: string[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: number | undefined;
  for (let pages = 1; pages < 1000; pages++) {
    const list = await s.listVersions({ ...opts, keyMarker, versionIdMarker, limit: page });
    versions.push(...list.versions.map(brief));
    prefixes.push(...list.commonPrefixes);
    if (!list.truncated) return { versions, prefixes, pages };
    keyMarker = list.nextKeyMarker;
    versionIdMarker = list.nextVersionIdMarker;
  }
  throw new Error('listing never ended');
}

describe('store: versions', () => {
  it('every put, copy and delete is a version whose id is the revision history shows', async () => {
    const dir = await tempDir('versions');
    const s = await store(dir);
    const a1 = await s.put('a', Buffer.from('one'));
    const b1 = await s.put('b', Buffer.from('bee'));
    const a2 = await s.put('a', Buffer.from('two'));
    const deleted = await s.delete('b');
    const c = (await s.copy('a', 'c'))!;
    expect([a1.version, b1.version, a2.version, deleted, c.version]).to.deep.equal([0, 1, 2, 3, 4]);
    expect(await s.delete('b'), 'no record for a key that is not there').to.equal(undefined);
    expect((await allVersions(s, 1000)).versions).to.deep.equal(['a@2 latest', 'a@0', 'b@3 (deleted) latest', 'b@1', 'c@4 latest']);
    const old = (await s.version('a', 0))!;
    expect((await s.read(s.versionInfo(old as Version & { entry: NonNullable<Version['entry']> }))).toString()).to.equal('one');
    expect(await s.version('a', 1), 'revision 1 is b').to.equal(undefined);
    expect(await s.version('a', 99)).to.equal(undefined);
    // The same revisions as `zipkv history` prints.
    const snapshot = await readSnapshot(dir);
    const history: string[] = [];
    for await (const e of historyEntries(snapshot)) history.push(`${e.key}@${e.rev}`);
    await closeSnapshot(snapshot);
    expect(history).to.deep.equal(['a@0', 'b@1', 'a@2', 'b@3', 'c@4']);
  });

  it('pages of any size, with markers landing between two versions of one key, list every version once', async () => {
    const s = await store();
    for (let round = 0; round < 4; round++) for (const key of ['k1', 'k2', 'dir/x', 'dir/y', 'é']) await s.put(key, Buffer.from(`${key}${round}`));
    await s.delete('k1');
    const whole = await allVersions(s, 1000);
    expect(whole.versions).to.have.length(21);
    for (const page of [1, 2, 3, 5, 7]) {
      const paged = await allVersions(s, page);
      expect(paged.versions, `pages of ${page}`).to.deep.equal(whole.versions);
      expect(paged.pages, 'no empty last page').to.equal(Math.ceil(21 / page));
    }
    const rolled = await allVersions(s, 2, { delimiter: '/' });
    expect(rolled.prefixes).to.deep.equal(['dir/']);
    expect(rolled.versions.filter((v) => v.startsWith('dir/'))).to.deep.equal([]);
    expect((await allVersions(s, 3, { prefix: 'dir/' })).versions).to.have.length(8);
  });

  it('built while writes and checkpoints go on, then kept up to date; the same after a restart', async () => {
    const dir = await tempDir('versions');
    const s = await store(dir, { checkpointBytes: 1 });
    for (let i = 0; i < 200; i++) await s.put(`k${i % 20}`, Buffer.from(String(i)));
    const writes = (async () => {
      for (let i = 200; i < 400; i++) await s.put(`k${i % 20}`, Buffer.from(String(i)));
    })();
    const first = await s.listVersions({ limit: 1 });
    expect(first.versions).to.have.length(1);
    await writes;
    await s.checkpoint();
    const all = await allVersions(s, 97);
    expect(all.versions).to.have.length(400);
    expect(all.versions.filter((v) => v.endsWith('latest'))).to.have.length(20);
    await s.close();
    open.splice(open.indexOf(s), 1);
    const again = await store(dir);
    expect((await allVersions(again, 1000)).versions).to.deep.equal(all.versions);
  });

  it("objects the original wrote have versions too: their revisions", async () => {
    const s = await store(await copyFixture('basic'));
    const manifest = await readManifest('basic');
    const list = await allVersions(s, 1000);
    expect(list.versions).to.have.length(manifest.history.length);
  });
});
