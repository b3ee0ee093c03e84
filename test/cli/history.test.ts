import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { expect } from 'chai';
import { zipkv, unwrap } from '../helpers/cli.js';
import { type HistoryRecord, encodeDb } from '../../src/lib/store/schema.js';
import { openStore } from '../../src/lib/store/store.js';
import { copyFixture, readHistoryTxt, readManifest, tempDir } from '../helpers/paths.js';

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
}

type ManifestEntry = Awaited<ReturnType<typeof readManifest>>['history'][number] & { size?: number };

/** What `history` should call a manifest entry: copies of 0-byte objects cannot be told from puts. */
function expectedOp(entry: ManifestEntry): string {
  if (entry.op === 'delete') return 'delete';
  return entry.kind === 'copy' && (entry.location?.size ?? 0) > 0 ? 'copy' : 'put';
}

describe('cli: zipkv history', function () {
  this.timeout(30_000);

  for (const name of ['basic', 'one-block', 'empty']) {
    it(`${name}: piped output is byte for byte the original zipkvhistory's`, async () => {
      const run = await zipkv('history', await copyFixture(name));
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.equal(await readHistoryTxt(name));
      if (name === 'empty') expect(run.stderr).to.contain('no history yet');
    });
  }

  it('takes -dir as the original did, and reads a directory another process holds', async () => {
    const dir = await copyFixture('one-block');
    await fs.writeFile(path.join(dir, 'zipkv.lock'), `${process.pid}\n`);
    const before = await fs.readdir(dir);
    const run = await zipkv('history', '-dir', dir);
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stdout).to.equal(await readHistoryTxt('one-block'));
    expect(await fs.readdir(dir)).to.deep.equal(before);
  });

  it('--json: every record with its operation, location and liveness, as in the manifest', async () => {
    const manifest = await readManifest('basic');
    const run = await zipkv('history', await copyFixture('basic'), '--json');
    expect(run.code, run.stderr).to.equal(0);
    const lines = jsonLines(run.stdout);
    expect(lines).to.have.length(manifest.history.length);
    const lastRev = new Map<string, number>();
    for (const entry of manifest.history) lastRev.set(entry.key, entry.rev);
    for (const entry of manifest.history as ManifestEntry[]) {
      const line = lines[entry.rev]!;
      expect(line.rev).to.equal(entry.rev);
      expect(line.key).to.equal(entry.key);
      expect(line.op, `rev ${entry.rev}`).to.equal(expectedOp(entry));
      if (entry.op === 'put') {
        expect({ block: line.block, offset: line.offset, size: line.size }).to.deep.equal(entry.location);
        expect(line.live, `rev ${entry.rev}`).to.equal(lastRev.get(entry.key) === entry.rev);
      } else {
        expect(line.live).to.equal(false);
      }
    }
    const copies = manifest.history.filter((e) => e.kind === 'copy' && (e.location?.size ?? 0) > 0);
    expect(copies.length).to.be.greaterThan(5);
    expect(lines.filter((l) => l.op === 'copy').map((l) => l.rev)).to.deep.equal(copies.map((e) => e.rev));
    expect(lines.filter((l) => l.live).map((l) => l.key).sort()).to.deep.equal(Object.keys(manifest.live).sort());
  });

  it('--rev N: the record, its decoded metadata and location', async () => {
    const manifest = await readManifest('basic');
    const dir = await copyFixture('basic');
    const withMeta = (manifest.history as Array<ManifestEntry & { metadata_stored?: Record<string, string> | null }>).find(
      (e) => e.op === 'put' && e.metadata_stored && Object.keys(e.metadata_stored).length > 1,
    )!;
    const run = await zipkv('history', dir, '--rev', String(withMeta.rev), '--json');
    expect(run.code, run.stderr).to.equal(0);
    const detail = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(detail).to.include({ rev: withMeta.rev, key: withMeta.key, op: 'put' });
    expect({ block: detail.block, offset: detail.offset, size: detail.size }).to.deep.equal(withMeta.location);
    expect(detail.metadata).to.deep.equal(withMeta.metadata_stored);

    const copy = manifest.history.find((e) => e.kind === 'copy' && (e.location?.size ?? 0) > 0)!;
    const plain = await zipkv('history', dir, '-rev', String(copy.rev));
    expect(plain.code, plain.stderr).to.equal(0);
    const fields = new Map(plain.stdout.trim().split('\n').map((l) => l.split('\t') as [string, string]));
    expect(fields.get('operation')).to.equal('copy');
    expect(fields.get('key')).to.equal(copy.key);
    const source = manifest.history[Number(fields.get('copy_of'))]!;
    expect(source.op).to.equal('put');
    expect(source.location).to.deep.equal(copy.location);
  });

  it('filters: --key, --prefix, --from/--to, --tail, --op', async () => {
    const manifest = await readManifest('basic');
    const dir = await copyFixture('basic');
    const revsOf = (stdout: string) => jsonLines(stdout).map((l) => l.rev);
    const revsWhere = (pick: (e: ManifestEntry) => boolean) => (manifest.history as ManifestEntry[]).filter(pick).map((e) => e.rev);

    const [byKey, byPrefix, range, tail, deletes, copies, combined] = await Promise.all([
      zipkv('history', dir, '--key', 'obj/0001', '--json'),
      zipkv('history', dir, '--prefix', 'copy/', '--json'),
      zipkv('history', dir, '--from', '100', '--to', '120'),
      zipkv('history', dir, '--tail', '5', '--json'),
      zipkv('history', dir, '--op', 'delete', '--json'),
      zipkv('history', dir, '--op', 'copy', '--json'),
      zipkv('history', dir, '--prefix', 'obj/', '--op', 'delete', '--tail', '3', '--json'),
    ]);
    expect(revsOf(byKey.stdout)).to.deep.equal(revsWhere((e) => e.key === 'obj/0001'));
    expect(revsOf(byPrefix.stdout)).to.deep.equal(revsWhere((e) => e.key.startsWith('copy/')));
    const original = (await readHistoryTxt('basic')).split('\n');
    expect(range.stdout).to.equal([original[0], ...original.slice(101, 122)].join('\n') + '\n');
    expect(revsOf(tail.stdout)).to.deep.equal([235, 236, 237, 238, 239]);
    expect(revsOf(deletes.stdout)).to.deep.equal(revsWhere((e) => e.op === 'delete'));
    expect(revsOf(copies.stdout)).to.deep.equal(revsWhere((e) => expectedOp(e) === 'copy'));
    expect(revsOf(combined.stdout)).to.deep.equal(revsWhere((e) => e.op === 'delete' && e.key.startsWith('obj/')).slice(-3));
  });

  it('--stats: record counts by kind, live objects and bytes', async () => {
    const manifest = await readManifest('basic');
    const run = await zipkv('history', await copyFixture('basic'), '--stats', '--json');
    expect(run.code, run.stderr).to.equal(0);
    const stats = JSON.parse(run.stdout) as Record<string, number>;
    const entries = manifest.history as ManifestEntry[];
    expect(stats.revisions).to.equal(entries.length);
    expect(stats.copies).to.equal(entries.filter((e) => expectedOp(e) === 'copy').length);
    expect(stats.puts).to.equal(entries.filter((e) => expectedOp(e) === 'put').length);
    expect(stats.deletes).to.equal(entries.filter((e) => e.op === 'delete').length);
    expect(stats.live_objects).to.equal(Object.keys(manifest.live).length);
    expect(stats.live_bytes).to.equal(Object.values(manifest.live).reduce((sum, o) => sum + o.size, 0));
    expect(stats.blocks).to.equal(manifest.db_next_backend_file);
  });

  it('a missing directory or a revision out of range: a clear message and a non-zero exit', async () => {
    const missing = path.join(await tempDir(), 'no-such-dir');
    const dir = await copyFixture('one-block');
    const [gone, range, none] = await Promise.all([
      zipkv('history', missing),
      zipkv('history', dir, '--rev', '7'),
      zipkv('history'),
    ]);
    expect(gone.code).to.equal(2);
    expect(unwrap(gone.stderr)).to.contain(`${missing}: no such directory`);
    expect(gone.stdout).to.equal('');
    await fs.access(missing).then(() => expect.fail('the directory was created'), () => undefined);
    expect(range.code).to.equal(2);
    expect(unwrap(range.stderr)).to.contain('revision 7 is out of range').and.contain('0..6');
    expect(none.code).to.equal(2);
    expect(none.stderr).to.contain('a store directory is required');
  });

  it('includes the journal of a store that is open (records not yet in a db)', async () => {
    const dir = await tempDir('journal');
    const store = await openStore(dir, { fsync: false });
    try {
      await store.put('a', Buffer.from('first'));
      await store.copy('a', 'b');
      await store.delete('a');
      const run = await zipkv('history', dir, '--json');
      expect(run.code, run.stderr).to.equal(0);
      expect(jsonLines(run.stdout).map((l) => [l.rev, l.op, l.key, l.live])).to.deep.equal([
        [0, 'put', 'a', false],
        [1, 'copy', 'b', true],
        [2, 'delete', 'a', false],
      ]);
      expect(jsonLines(run.stdout)[0]!.time).to.be.a('string');
    } finally {
      await store.close();
    }
  });

  it('streams a history of 100,000 records', async () => {
    const dir = await tempDir('long');
    const count = 100_000;
    const history: HistoryRecord[] = [];
    for (let i = 0; i < count; i++) {
      const key = `k/${i % 5000}`;
      history.push(i % 4 === 3 ? { kind: 'delete', key } : { kind: 'put', key, location: { block: 0, offset: i, size: 1 } });
    }
    await fs.writeFile(path.join(dir, 'block0000000000'), Buffer.alloc(count));
    await fs.writeFile(path.join(dir, 'db0000000000'), zlib.gzipSync(encodeDb(1, history)));
    const [plain, json] = await Promise.all([zipkv('history', dir), zipkv('history', dir, '--json', '--tail', '2')]);
    expect(plain.code, plain.stderr).to.equal(0);
    const lines = plain.stdout.split('\n');
    expect(lines).to.have.length(count + 2); // header, records, and the empty string after the last newline
    expect(lines[count]).to.equal(`${count - 1}\tdelete\tk/${(count - 1) % 5000}`);
    expect(jsonLines(json.stdout).map((l) => [l.rev, l.live])).to.deep.equal([
      [count - 2, true],
      [count - 1, false],
    ]);
  });
});
