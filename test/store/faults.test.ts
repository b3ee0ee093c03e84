/**
 * I/O faults at every call site of the engine, injected through the storage seam
 * (storage/faults.ts): a failed fsync stops all writes until a restart, a failed open, write or
 * rename fails only what it must, and nothing acknowledged is ever lost.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { DurabilityError, StoreFailedError } from '../../src/lib/store/errors.js';
import { rebaseInPlace } from '../../src/lib/store/rebase.js';
import { FaultyStorage, type FaultRule } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { type OpenOptions, type Store, openStore } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';
import { allKeys, blockFiles, copyStoreDir, md5Of, md5hex, pseudoRandomBytes } from './util.js';

interface Harness {
  dir: string;
  faults: FaultyStorage;
  store: Store;
  failures: StoreFailedError[];
  warnings: string[];
  /** key -> MD5 of every acknowledged put (undefined: acknowledged delete). */
  acked: Map<string, string | undefined>;
  put(key: string, body: Buffer): Promise<void>;
}

const open: Store[] = [];

async function harness(opts: OpenOptions = {}): Promise<Harness> {
  const dir = await tempDir('faults');
  const faults = new FaultyStorage(new LocalStorage(dir));
  const failures: StoreFailedError[] = [];
  const warnings: string[] = [];
  const store = await openStore(dir, { storage: faults, onFailure: (f) => failures.push(f), warn: (m) => warnings.push(m), ...opts });
  open.push(store);
  const acked = new Map<string, string | undefined>();
  return {
    dir,
    faults,
    store,
    failures,
    warnings,
    acked,
    async put(key, body) {
      await store.put(key, body);
      acked.set(key, md5hex(body));
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Reopens a copy of the directory as a kill -9 at this moment would leave it, and checks every acknowledged write. */
async function expectAckedAfterCrash(h: Harness): Promise<Store> {
  const crashed = await tempDir('faults-crashed');
  await copyStoreDir(h.dir, crashed);
  const again = await openStore(crashed, { warn: () => undefined });
  open.push(again);
  for (const [key, md5] of h.acked) expect(await md5Of(again, key), key).to.equal(md5);
  return again;
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => undefined);
});

describe('store: I/O faults', () => {
  describe('a failed fsync stops every write until a restart, and reads go on', () => {
    const cases: Array<{ what: string; rule: FaultRule }> = [
      { what: 'fdatasync of a block', rule: { op: 'datasync', name: /^block/ } },
      { what: 'fdatasync of the journal', rule: { op: 'datasync', name: /^zipkv-journal$/ } },
      { what: 'fsync of the directory after a new block', rule: { op: 'syncDir' } },
    ];
    for (const { what, rule } of cases) {
      it(what, async () => {
        const h = await harness({ blockSize: 4096 });
        await h.put('before', Buffer.from('acknowledged before the fault'));
        h.faults.fail({ ...rule, times: 1 });
        const err = await rejection(h.store.put('failing', pseudoRandomBytes(5000, 1)));
        expect(err).to.be.instanceOf(StoreFailedError);
        expect(err.message).to.match(/EIO/).and.match(rule.op === 'syncDir' ? /fsync of \// : rule.name!.source.includes('block') ? /block\d{10}/ : /zipkv-journal/);
        expect(h.store.head('failing'), 'never acknowledged, never visible').to.equal(undefined);
        // The kernel reports a writeback error once: the next fsync would succeed over lost
        // pages. Every later write is refused, even though the fault is gone.
        for (const write of [
          () => h.store.put('after', Buffer.from('x')),
          () => h.store.delete('before'),
          () => h.store.copy('before', 'copy'),
          () => h.store.checkpoint(),
          () => h.store.stage(Buffer.from('part')),
        ]) {
          expect(await rejection(write())).to.equal(err);
        }
        expect(h.failures, 'reported once').to.have.length(1);
        expect(h.store.stats().failure).to.equal(err.message);
        expect((await h.store.read(h.store.head('before')!)).toString()).to.equal('acknowledged before the fault');
        await h.store.close();
        // A restart recovers from what is on disk: everything acknowledged, nothing half-done.
        const again = await openStore(h.dir, { warn: () => undefined });
        open.push(again);
        expect(await md5Of(again, 'before')).to.equal(md5hex(Buffer.from('acknowledged before the fault')));
        // Never acknowledged: it may or may not be there, but never with other bytes.
        if (again.head('failing')) expect(await md5Of(again, 'failing')).to.equal(md5hex(pseudoRandomBytes(5000, 1)));
        await again.put('after', Buffer.from('writes again'));
      });
    }

    it('fsync of the next db during a checkpoint', async () => {
      const h = await harness();
      await h.put('a', Buffer.from('a'));
      h.faults.fail({ op: 'sync', name: /^db\d{10}\.zipkv-tmp$/ });
      const err = await rejection(h.store.checkpoint());
      expect(err).to.be.instanceOf(StoreFailedError);
      expect((err as StoreFailedError).reason).to.be.instanceOf(DurabilityError);
      expect(err.message).to.include('db0000000000.zipkv-tmp');
      expect(await rejection(h.store.put('b', Buffer.from('b')))).to.equal(err);
      expect(h.failures).to.have.length(1);
      await expectAckedAfterCrash(h);
    });

    it('fsync of a new journal during a checkpoint', async () => {
      const h = await harness();
      await h.put('a', Buffer.from('a'));
      h.faults.fail({ op: 'datasync', name: /^zipkv-journal\.zipkv-tmp$/ });
      expect(await rejection(h.store.checkpoint())).to.be.instanceOf(StoreFailedError);
      expect(await rejection(h.store.put('b', Buffer.from('b')))).to.be.instanceOf(StoreFailedError);
      await expectAckedAfterCrash(h);
    });

    it('a journal that cannot be cut back after a failed write', async () => {
      const h = await harness();
      await h.put('a', Buffer.from('a'));
      h.faults.fail({ op: 'write', name: /^zipkv-journal$/, times: 1, code: 'EIO' }).fail({ op: 'truncate', name: /^zipkv-journal$/ });
      expect(await rejection(h.store.put('b', Buffer.from('b')))).to.be.instanceOf(StoreFailedError);
      expect(await rejection(h.store.put('c', Buffer.from('c')))).to.be.instanceOf(StoreFailedError);
      await expectAckedAfterCrash(h);
    });
  });

  describe('a failed open, write or rename fails only what it must', () => {
    it('a full disk on a journal append fails that batch; the next writes go on', async () => {
      const h = await harness();
      await h.put('a', Buffer.from('a'));
      h.faults.fail({ op: 'write', name: /^zipkv-journal$/, times: 1, code: 'ENOSPC' });
      const err = await rejection(h.store.put('b', Buffer.from('b')));
      expect((err as NodeJS.ErrnoException).code).to.equal('ENOSPC');
      expect(h.store.failure).to.equal(undefined);
      expect(h.store.head('b')).to.equal(undefined);
      await h.put('c', Buffer.from('c'));
      const again = await expectAckedAfterCrash(h);
      expect(allKeys(again)).to.deep.equal(['a', 'c']);
    });

    it('a full disk while a large body streams into its block fails that put only', async () => {
      const h = await harness();
      h.faults.fail({ op: 'write', name: /^block/, times: 1, code: 'ENOSPC' });
      const err = await rejection(h.store.put('big', pseudoRandomBytes(3 << 20, 2)));
      expect((err as NodeJS.ErrnoException).code).to.equal('ENOSPC');
      expect(h.store.failure).to.equal(undefined);
      await h.put('small', Buffer.from('small'));
      await expectAckedAfterCrash(h);
    });

    it('a block file that cannot be created does not become the open block', async () => {
      const h = await harness({ blockSize: 1000 });
      await h.put('first', pseudoRandomBytes(800, 3)); // block0000000000
      h.faults.fail({ op: 'create', name: /^block0000000001$/, code: 'EMFILE' });
      const err = await rejection(h.store.put('second', pseudoRandomBytes(800, 4)));
      expect((err as NodeJS.ErrnoException).code).to.equal('EMFILE');
      // The next reservation starts a new block instead of piling onto the one that failed.
      await h.put('third', pseudoRandomBytes(100, 5));
      await h.put('fourth', pseudoRandomBytes(100, 6));
      expect(h.store.head('third')!.entry.block).to.equal(2);
      expect(await blockFiles(h.dir)).to.deep.equal(['block0000000000', 'block0000000002']);
      expect(h.store.failure).to.equal(undefined);
      await h.store.checkpoint();
      await expectAckedAfterCrash(h);
    });

    for (const [what, rule] of [
      ['the new journal cannot be opened (EMFILE)', { op: 'create', name: /^zipkv-journal\.zipkv-tmp$/, code: 'EMFILE' }],
      ['the new journal cannot be renamed into place', { op: 'rename', name: /^zipkv-journal\.zipkv-tmp$/, code: 'EIO' }],
    ] as Array<[string, FaultRule]>) {
      it(`a checkpoint whose ${what} leaves the writer on the current journal`, async () => {
        const h = await harness();
        for (let i = 0; i < 5; i++) await h.put(`before-${i}`, pseudoRandomBytes(100, i));
        h.faults.fail({ ...rule, times: 1 });
        const err = await rejection(h.store.checkpoint());
        expect((err as NodeJS.ErrnoException).code).to.equal(rule.code);
        expect(h.store.failure).to.equal(undefined);
        expect(h.warnings.join('\n')).to.match(/checkpoint failed/);
        // Writes acknowledged now must be in the file that is the journal, not an unlinked one.
        for (let i = 0; i < 5; i++) await h.put(`after-${i}`, pseudoRandomBytes(100, 10 + i));
        await h.store.delete('before-0');
        h.acked.set('before-0', undefined);
        await expectAckedAfterCrash(h);
        // The next checkpoint replaces the journal after all.
        await h.store.checkpoint();
        await h.put('last', Buffer.from('last'));
        await expectAckedAfterCrash(h);
        expect(await fs.readdir(h.dir)).to.not.include('zipkv-journal.zipkv-tmp');
      });
    }

    it('a full disk while writing the next db: the checkpoint fails, writes go on, the next one succeeds', async () => {
      const h = await harness();
      await h.put('a', Buffer.from('a'));
      h.faults.fail({ op: 'write', name: /^db\d{10}\.zipkv-tmp$/, times: 1, code: 'ENOSPC' });
      expect((await rejection(h.store.checkpoint()) as NodeJS.ErrnoException).code).to.equal('ENOSPC');
      expect(await fs.readdir(h.dir)).to.not.include('db0000000000.zipkv-tmp');
      await h.put('b', Buffer.from('b'));
      await h.store.checkpoint();
      expect(await fs.readdir(h.dir)).to.include('db0000000000');
      await expectAckedAfterCrash(h);
    });
  });

  describe('rebase never loses history to a crash or a failed write', () => {
    for (const [what, rule] of [
      ['the rebased db cannot be created', { op: 'create', name: /^db\d{10}\.zipkv-tmp$/ }],
      ['the rebased db cannot be renamed into place', { op: 'rename', name: /^db\d{10}\.zipkv-tmp$/, after: 1 }],
    ] as Array<[string, FaultRule]>) {
      it(`${what}: the whole history, journal records included, is still there`, async () => {
        const dir = await tempDir('rebase-fault');
        const s = await openStore(dir, { checkpointBytes: 1 << 30 });
        await s.put('a', Buffer.from('a'));
        await s.checkpoint();
        // These live only in the journal when the rebase starts.
        await s.put('b', Buffer.from('b'));
        await s.put('c', Buffer.from('c'));
        // Closing would fold them; the lock file is removed instead, as after a crash.
        const crashed = await tempDir('rebase-fault-crashed');
        await copyStoreDir(dir, crashed);
        await s.close();
        const faults = new FaultyStorage(new LocalStorage(crashed)).fail({ ...rule, code: 'EIO' });
        const err = await rejection(rebaseInPlace(crashed, 0, { storage: faults }));
        expect((err as NodeJS.ErrnoException).code).to.equal('EIO');
        const again = await openStore(crashed, { readOnly: true });
        open.push(again);
        expect(again.revision).to.equal(2);
        expect(allKeys(again)).to.deep.equal(['a', 'b', 'c']);
        // And the rebase goes through once the fault is gone.
        await again.close();
        await rebaseInPlace(crashed, 0);
        const rebased = await openStore(crashed, { readOnly: true });
        open.push(rebased);
        expect(allKeys(rebased)).to.deep.equal(['a']);
        expect(path.basename(crashed)).to.match(/rebase-fault-crashed/);
      });
    }
  });

  describe('a commit syncs small bodies and its journal records at once; recovery checks the last commit', () => {
    /** A crash copy of a store whose journal holds the puts, with the bytes of `damaged` changed as a lost page would leave them. */
    async function crashWithLostBytes(keys: string[], damaged: string[], size = 100): Promise<{ again: Store; warnings: string[] }> {
      const dir = await tempDir('lost-bytes');
      const s = await openStore(dir, { checkpointBytes: 1 << 30 });
      open.push(s);
      for (const [i, key] of keys.entries()) await s.put(key, pseudoRandomBytes(size, i));
      const crashed = await tempDir('lost-bytes-crashed');
      await copyStoreDir(dir, crashed);
      for (const key of damaged) {
        const { block, offset } = s.head(key)!.entry;
        const file = path.join(crashed, `block${String(block).padStart(10, '0')}`);
        const handle = await fs.open(file, 'r+');
        await handle.write(Buffer.alloc(size), 0, size, offset); // a page that never reached the disk
        await handle.close();
      }
      const warnings: string[] = [];
      const again = await openStore(crashed, { warn: (m) => warnings.push(m) });
      open.push(again);
      return { again, warnings };
    }

    it('a body of the last commit whose bytes are lost: recovery stops before that commit, with a warning', async () => {
      const { again, warnings } = await crashWithLostBytes(['a', 'b', 'c', 'd'], ['d']);
      expect(allKeys(again)).to.deep.equal(['a', 'b', 'c']);
      expect(warnings.join('\n')).to.match(/revision 3 do not match their MD5.*never acknowledged; recovery stops before it/);
      // Nothing it serves is garbage, and it takes writes again.
      for (const [i, key] of ['a', 'b', 'c'].entries()) expect(await md5Of(again, key)).to.equal(md5hex(pseudoRandomBytes(100, i)));
      await again.put('e', Buffer.from('e'));
    });

    it('damage in an earlier, acknowledged commit drops nothing: only the last commit can be torn', async () => {
      const { again, warnings } = await crashWithLostBytes(['a', 'b', 'c', 'd'], ['b']);
      expect(allKeys(again)).to.deep.equal(['a', 'b', 'c', 'd']);
      expect(warnings).to.deep.equal([]);
    });

    it('records after the last commit mark belong to a commit never completed: ignored, with a warning', async () => {
      const dir = await tempDir('unfinished');
      const s = await openStore(dir, { checkpointBytes: 1 << 30 });
      open.push(s);
      for (const key of ['a', 'b', 'c']) await s.put(key, Buffer.from(key));
      const crashed = await tempDir('unfinished-crashed');
      await copyStoreDir(dir, crashed);
      // Clear the commit mark of the last record, as an append cut short before its end would.
      const file = path.join(crashed, 'zipkv-journal');
      const journal = await fs.readFile(file);
      let pos = 16;
      let last = 16;
      while (pos + 8 <= journal.length) {
        last = pos;
        pos += 8 + (journal.readUInt32LE(pos) & 0x7fffffff);
      }
      journal.writeUInt32LE(journal.readUInt32LE(last) & 0x7fffffff, last);
      await fs.writeFile(file, journal);
      const warnings: string[] = [];
      const again = await openStore(crashed, { warn: (m) => warnings.push(m) });
      open.push(again);
      expect(allKeys(again)).to.deep.equal(['a', 'b']);
      expect(warnings.join('\n')).to.match(/ignored 1 records of a commit that was never completed/);
    });

    it('only the records one commit can hold are checked, and only small bodies', async () => {
      const keys = Array.from({ length: 1030 }, (_, i) => `k${String(i).padStart(4, '0')}`);
      const { again, warnings } = await crashWithLostBytes(keys, ['k0000']);
      expect(allKeys(again)).to.have.length(1030);
      expect(warnings).to.deep.equal([]);
      const large = await crashWithLostBytes(['big'], ['big'], 200 * 1024);
      expect(allKeys(large.again)).to.deep.equal(['big']);
    });
  });
});

describe('store: I/O faults that persist', () => {
  it('a disk that stays full for db writes: checkpoints back off, writes go on, close returns', async function () {
    this.timeout(30_000);
    const dir = await tempDir('full-db');
    const faults = new FaultyStorage(new LocalStorage(dir)).fail({ op: 'write', name: /^db\d{10}\.zipkv-tmp$/, code: 'ENOSPC' });
    const warnings: string[] = [];
    const s = await openStore(dir, { storage: faults, checkpointBytes: 1, blockSize: 1 << 20, warn: (m) => warnings.push(m) });
    for (let i = 0; i < 200; i++) await s.put(`k${i}`, pseudoRandomBytes(100, i));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const attempts = faults.failures.filter((f) => f.startsWith('write db')).length;
    expect(attempts, 'failed checkpoints are not retried at every commit').to.be.at.most(3);
    expect((await blockFiles(dir)).length, 'no new block per commit').to.be.at.most(4);
    const started = Date.now();
    let closeError: unknown;
    await s.close().catch((err: unknown) => (closeError = err));
    expect(Date.now() - started).to.be.below(5000);
    expect((closeError as NodeJS.ErrnoException | undefined)?.code).to.equal('ENOSPC');
    const again = await openStore(dir);
    expect(allKeys(again)).to.have.length(200);
    await again.close();
  });

  it('a write whose block sync failed is not a version either', async () => {
    const dir = await tempDir('unacked-version');
    const faults = new FaultyStorage(new LocalStorage(dir));
    const s = await openStore(dir, { storage: faults, onFailure: () => undefined });
    await s.put('a', Buffer.from('v0'));
    faults.fail({ op: 'datasync', name: /^block/ });
    await s.put('a', Buffer.from('v1, never acknowledged')).catch(() => undefined);
    expect(s.revision).to.equal(0);
    const versions = await s.listVersions({ limit: 10 });
    expect(versions.versions.map((v) => v.revision)).to.deep.equal([0]);
    faults.heal();
    await s.close();
  });

  it('a directory that cannot be opened to be synced is not a failed sync', async () => {
    const gone = new LocalStorage(path.join(await tempDir('gone'), 'missing'));
    const err = await gone.syncDir().then(() => undefined, (e: unknown) => e);
    const { durably } = await import('../../src/lib/store/errors.js');
    const wrapped = await durably('x', 'fsync', () => Promise.reject(err)).then(() => undefined, (e: unknown) => e);
    expect(wrapped).to.not.be.instanceOf(DurabilityError);
    expect((wrapped as NodeJS.ErrnoException).code).to.equal('ENOENT');
  });
});
