/**
 * Retention and compaction (compaction.ts): the horizon, which blocks are rewritten or dropped,
 * copies that land byte for byte, version ids that survive, and a compacted directory that every
 * reader (and the reference decoder, standing for the original) still opens.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { BlockReader } from '../../src/lib/store/blocks.js';
import { planCompaction } from '../../src/lib/store/compaction.js';
import { RevisionOutOfRangeError } from '../../src/lib/store/errors.js';
import { rebaseInPlace } from '../../src/lib/store/rebase.js';
import { closeSnapshot, historyEntries, readSnapshot } from '../../src/lib/store/history.js';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { type Store, openStore } from '../../src/lib/store/store.js';
import { verifyStore } from '../../src/lib/store/verify.js';
import { readDbSummary } from '../helpers/reference-db.js';
import { tempDir } from '../helpers/paths.js';
import { allKeys, blockFiles, copyStoreDir, md5Of, md5hex, pseudoRandomBytes } from './util.js';

const open: Store[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => undefined);
});

const BLOCK = 64 * 1024;

async function store(dir: string, opts = {}): Promise<Store> {
  const s = await openStore(dir, { fsync: false, blockSize: BLOCK, ...opts });
  open.push(s);
  return s;
}

async function closeStore(s: Store): Promise<void> {
  open.splice(open.indexOf(s), 1);
  await s.close();
}

async function dirBlockBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await blockFiles(dir)) total += (await fs.stat(path.join(dir, name))).size;
  return total;
}

/** Every version a store lists, as "key@revision" (" x" for a delete marker). */
async function versionsOf(s: Store): Promise<string[]> {
  const out: string[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: number | undefined;
  for (;;) {
    const page = await s.listVersions({ keyMarker, versionIdMarker, limit: 100 });
    out.push(...page.versions.map((v) => `${v.key}@${v.revision}${v.entry ? '' : ' x'}`));
    if (!page.truncated) return out;
    keyMarker = page.nextKeyMarker;
    versionIdMarker = page.nextVersionIdMarker;
  }
}

async function expectRejection(p: Promise<unknown>, type: new (...args: never[]) => Error): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).to.be.instanceOf(type);
}

/** The keep-history that puts the horizon at the first operation after `since` (a Date.now()). */
const keepSince = (since: number) => Date.now() - since;

interface Written {
  /** key -> MD5 of its live body. */
  live: Map<string, string>;
  /** key -> revision of its live body. */
  liveRevision?: Map<string, number>;
  /** revision -> MD5 of every put's body. */
  bodies: Map<number, string>;
}

/** Old history: 24 keys of 6 KiB written three times over, a third of them deleted. */
async function writeOldHistory(s: Store, written: Written): Promise<void> {
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 24; i++) {
      const body = pseudoRandomBytes(6 * 1024, round * 100 + i + 1);
      const info = await s.put(`k${i}`, body);
      written.live.set(`k${i}`, md5hex(body));
      written.liveRevision?.set(`k${i}`, info.version!);
      written.bodies.set(info.version!, md5hex(body));
    }
  }
  for (let i = 0; i < 24; i += 3) {
    await s.delete(`k${i}`);
    written.live.delete(`k${i}`);
    written.liveRevision?.delete(`k${i}`);
  }
}

describe('store: compaction', () => {
  it('retired blocks keep their handles for reads under way, and a new read still opens its block while they are all pinned', async () => {
    const dir = await tempDir('compact');
    const storage = new LocalStorage(dir);
    const ids = Array.from({ length: 150 }, (_, i) => i);
    for (const id of ids) await fs.writeFile(path.join(dir, `block${String(id).padStart(10, '0')}`), Buffer.alloc(16, id));
    const reader = new BlockReader(storage);
    try {
      // More pinned handles than the cache holds (128).
      await reader.retire(ids.slice(0, 140), 60_000);
      for (const id of ids.slice(0, 140)) await fs.rm(path.join(dir, `block${String(id).padStart(10, '0')}`));
      for (const id of [3, 139, 145, 149, 0]) expect((await reader.read(id, 4, 8)).equals(Buffer.alloc(8, id)), `block ${id}`).to.equal(true);
    } finally {
      await reader.close();
    }
  });

  it('plans from the horizon: rewrites sealed blocks with few needed bytes, drops unneeded ones, leaves the open block', async () => {
    const dir = await tempDir('compact');
    const s = await store(dir);
    const written: Written = { live: new Map(), bodies: new Map() };
    await writeOldHistory(s, written);
    await sleep(20);
    const mid = Date.now();
    await sleep(20);
    const recent = await s.put('recent', pseudoRandomBytes(1000, 9));
    await s.checkpoint();

    const storage = new LocalStorage(dir);
    const view = { dbName: (await fs.readdir(dir)).find((n) => n.startsWith('db')), tail: [], records: s.revision + 1, historyStart: 0 };
    const plan = await planCompaction(storage, view, { cutoffMs: mid, rewriteBelow: 0.7, sealedBelow: s.stats().nextBlockId, isLive: () => false });
    expect(plan.horizon).to.equal(recent.version);
    // Needed: the 16 live keys before the horizon (6 KiB each) and the recent put.
    expect(plan.neededBytes).to.equal(16 * 6 * 1024 + 1000);
    expect(plan.blockBytes).to.equal(await dirBlockBytes(dir));
    // Each of the first two rounds' blocks holds only overwritten bodies: unneeded.
    expect(plan.unneeded.length).to.be.greaterThan(0);
    for (const [id, ranges] of plan.rewrite) {
      const size = (await fs.stat(path.join(dir, `block${String(id).padStart(10, '0')}`))).size;
      const needed = ranges.reduce((n, [, len]) => n + len, 0);
      expect(needed, `block ${id}`).to.be.lessThan(0.7 * size).and.greaterThan(0);
    }
    expect(plan.forgottenRecords).to.equal(recent.version);
    const reclaim = plan.reclaimableBytes;
    expect(reclaim).to.be.greaterThan(plan.blockBytes / 2);

    // Nothing old enough: the horizon stays at the history's start and nothing is unneeded.
    const none = await planCompaction(storage, view, { cutoffMs: 0, rewriteBelow: 0.7, sealedBelow: s.stats().nextBlockId, isLive: () => false });
    expect(none.horizon).to.equal(0);
    expect(none.unneeded).to.deep.equal([]);
    expect(none.rewrite.size).to.equal(0);
    // A block that is still being written is never touched.
    const live = await planCompaction(storage, view, { cutoffMs: mid, rewriteBelow: 0.7, sealedBelow: 1, isLive: () => false });
    expect(live.unneeded.concat([...live.rewrite.keys()]).every((id) => id < 1)).to.equal(true);
  });

  it('forgets what is older than the window, keeps every live object and every version inside it, and gives the space back', async () => {
    const dir = await tempDir('compact');
    const s = await store(dir);
    // Version ids before compaction: the live objects' revisions.
    const liveRevisions = new Map<string, number>();
    const written: Written = { live: new Map(), bodies: new Map(), liveRevision: liveRevisions };
    await writeOldHistory(s, written);
    expect(liveRevisions.size).to.equal(16);
    await sleep(20);
    const mid = Date.now();
    await sleep(20);
    const horizon = s.revision + 1;
    for (let i = 0; i < 4; i++) {
      const body = pseudoRandomBytes(3000, 500 + i);
      const info = await s.put(`k${i}`, body);
      written.live.set(`k${i}`, md5hex(body));
      written.bodies.set(info.version!, md5hex(body));
    }
    await s.delete('k1');
    written.live.delete('k1');
    const copied = await s.copy('k2', 'copy-of-k2');
    written.live.set('copy-of-k2', written.live.get('k2')!);
    const before = await dirBlockBytes(dir);
    const versionsBefore = await versionsOf(s);

    const result = await s.compact({ keepHistoryMs: keepSince(mid), bytesPerSecond: 0 });
    expect(result).to.not.equal(undefined);
    expect(result!.historyStart).to.equal(horizon);
    expect(result!.forgottenRecords).to.equal(horizon);
    expect(result!.keptRecords).to.equal(liveRevisions.size);
    expect(result!.blocksDeleted).to.be.greaterThan(0);
    expect(result!.bytesFreed).to.be.greaterThan(0);
    const after = await dirBlockBytes(dir);
    expect(before - after).to.equal(result!.bytesFreed);
    expect(after).to.be.lessThan(before / 2);
    expect(s.stats().historyStart).to.equal(horizon);

    const check = async (st: Store) => {
      expect(new Set(allKeys(st))).to.deep.equal(new Set(written.live.keys()));
      for (const [key, md5] of written.live) expect(await md5Of(st, key), key).to.equal(md5);
      // Versions: the kept ones keep their ids, everything from the horizon on is there, the rest is gone.
      const versions = await versionsOf(st);
      const expected = versionsBefore.filter((v) => {
        const [key, rest] = v.split('@') as [string, string];
        const rev = Number.parseInt(rest, 10);
        return rev >= horizon || liveRevisions.get(key) === rev;
      });
      expect(versions).to.deep.equal(expected);
      for (const v of versions.filter((x) => !x.endsWith(' x'))) {
        const [key, rest] = v.split('@') as [string, string];
        const version = await st.version(key, Number(rest));
        const bytes = await st.read(st.versionInfo(version as never));
        expect(md5hex(bytes), v).to.equal(written.bodies.get(Number(rest)) ?? written.live.get(key));
      }
      expect(await st.version('k5', 0 + 5)).to.equal(undefined); // k5's first write: forgotten
    };
    await check(s);
    expect(copied!.version).to.be.greaterThan(horizon);

    // Reopened: the same state and history start; a revision before it is refused by name.
    await closeStore(s);
    const again = await store(dir);
    expect(again.stats().historyStart).to.equal(horizon);
    await check(again);
    await closeStore(again);
    const report = await verifyStore(dir);
    expect(report.problems).to.deep.equal([]);
    expect(report.liveObjects).to.equal(written.live.size);

    // history shows the kept records with their own revisions, then everything from the horizon.
    const snapshot = await readSnapshot(dir);
    try {
      expect(snapshot.historyStart).to.equal(horizon);
      const revs: number[] = [];
      for await (const e of historyEntries(snapshot)) revs.push(e.rev);
      expect(revs.slice(0, liveRevisions.size)).to.deep.equal([...liveRevisions.values()].sort((a, b) => a - b));
      expect(revs.slice(liveRevisions.size)).to.deep.equal(Array.from({ length: revs.length - liveRevisions.size }, (_, i) => horizon + i));
    } finally {
      await closeSnapshot(snapshot);
    }
    for (const rev of [0, horizon - 2]) {
      const err = await openStore(dir, { revision: rev }).then(
        (st) => st.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err, `revision ${rev}`).to.be.instanceOf(RevisionOutOfRangeError);
      expect((err as Error).message).to.contain(`holds revisions ${horizon - 1}..`);
    }
    // The oldest revision one can still open: the state just before the horizon.
    const oldest = await openStore(dir, { revision: horizon - 1 });
    expect(new Set(allKeys(oldest))).to.deep.equal(new Set(liveRevisions.keys()));
    await oldest.close();

    // The reference decoder (fields the original does not know are skipped) reads the db.
    const dbName = (await fs.readdir(dir)).find((n) => /^db\d{10}$/.test(n))!;
    const summary = await readDbSummary(path.join(dir, dbName));
    expect(summary.historyStart).to.equal(horizon);
    expect(summary.firstRevision).to.equal(horizon - liveRevisions.size);
  });

  it('reads that started before the move finish on the old block; copies and writes go on during compaction', async () => {
    const dir = await tempDir('compact');
    const s = await store(dir);
    const written: Written = { live: new Map(), bodies: new Map() };
    await writeOldHistory(s, written);
    // A read of every live object, started now and finished after compaction deleted blocks.
    const reads = allKeys(s).map((key) => {
      const info = s.head(key)!;
      const stream = s.createReadStream(info);
      stream.pause();
      return { key, block: info.entry.block, stream };
    });
    await sleep(20);
    const mid = Date.now();
    await sleep(20);

    let stop = false;
    let n = 0;
    const writes = (async () => {
      while (!stop && n < 400) {
        const body = pseudoRandomBytes(2000, 7000 + n);
        await s.put(`new${n % 50}`, body);
        written.live.set(`new${n % 50}`, md5hex(body));
        const c = await s.copy(`k${1 + (n % 23)}`.replace(/^k(0|3|6|9|12|15|18|21)$/, 'k1'), `c${n % 10}`);
        if (c) written.live.set(`c${n % 10}`, (await md5Of(s, `c${n % 10}`))!);
        n++;
      }
    })();
    const result = await s.compact({ keepHistoryMs: keepSince(mid), bytesPerSecond: 256 * 1024 });
    stop = true;
    await writes;
    expect(n).to.be.greaterThan(0);
    expect(result!.blocksDeleted).to.be.greaterThan(0);
    const blocksNow = new Set(await blockFiles(dir));
    const moved = reads.filter((r) => !blocksNow.has(`block${String(r.block).padStart(10, '0')}`));
    expect(moved.length).to.be.greaterThan(0);
    const oldBodies = new Map(reads.map((r) => [r.key, written.live.get(r.key)]));
    for (const r of reads) {
      const chunks: Buffer[] = [];
      for await (const chunk of r.stream) chunks.push(chunk as Buffer);
      expect(md5hex(Buffer.concat(chunks)), r.key).to.equal(oldBodies.get(r.key));
    }
    for (const [key, md5] of written.live) expect(await md5Of(s, key), key).to.equal(md5);
    await closeStore(s);
    expect((await verifyStore(dir)).problems).to.deep.equal([]);
    const again = await store(dir);
    for (const [key, md5] of written.live) expect(await md5Of(again, key), key).to.equal(md5);
  });

  it('a copy whose source was looked up before compaction moved it lands on the copy; one whose version was forgotten fails, writing nothing', async () => {
    const dir = await tempDir('compact');
    const s = await store(dir);
    const written: Written = { live: new Map(), bodies: new Map() };
    await writeOldHistory(s, written);
    // Looked up now, used after the compaction: every live object, and k2's first version.
    const before = allKeys(s).map((key) => s.head(key)!);
    const firstOfK2 = (await s.listVersions({ prefix: 'k2', limit: 1000 })).versions.filter((v) => v.key === 'k2').at(-1)!;
    const oldVersion = s.versionInfo({ ...firstOfK2, entry: firstOfK2.entry! });
    await sleep(10);
    const result = await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 });
    const gone = new Set(await blockFiles(dir));
    const moved = before.filter((info) => !gone.has(`block${String(info.entry.block).padStart(10, '0')}`));
    expect(moved.length, 'live objects whose block was rewritten').to.be.greaterThan(0);
    expect(result!.blocksRewritten).to.be.greaterThan(0);
    for (const info of moved) {
      const copy = await s.copy(info, `copy-of-${info.key}`);
      expect(await md5Of(s, `copy-of-${info.key}`), info.key).to.equal(written.live.get(info.key));
      expect(gone.has(`block${String(copy!.entry.block).padStart(10, '0')}`)).to.equal(true);
    }
    const revision = s.revision;
    const err = await s.copy(oldVersion, 'restore').then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/older than the history kept/);
    expect(s.head('restore')).to.equal(undefined);
    expect(s.revision).to.equal(revision);
    await closeStore(s);
    expect((await verifyStore(dir)).problems).to.deep.equal([]);
  });

  it('runs by itself with a retention window, and keeps the whole history without one', async () => {
    const dir = await tempDir('compact');
    const results: number[] = [];
    const s = await store(dir, { keepHistoryMs: 50, compaction: { intervalMs: 100, bytesPerSecond: 0 }, onCompaction: (r: { blocksDeleted: number }) => results.push(r.blocksDeleted) });
    const written: Written = { live: new Map(), bodies: new Map() };
    await writeOldHistory(s, written);
    for (let i = 0; i < 50 && results.length === 0; i++) await sleep(100);
    expect(results.length).to.be.greaterThan(0);
    expect(s.stats().historyStart).to.be.greaterThan(0);
    for (const [key, md5] of written.live) expect(await md5Of(s, key), key).to.equal(md5);

    const keepAll = await tempDir('compact');
    const t = await store(keepAll, { compaction: { intervalMs: 50 } });
    await writeOldHistory(t, { live: new Map(), bodies: new Map() });
    const blocks = await blockFiles(keepAll);
    await sleep(300);
    expect(await blockFiles(keepAll)).to.deep.equal(blocks);
    expect(t.stats().historyStart).to.equal(0);
  });

  it('after finding nothing to do, does not look again before the oldest operation in the window leaves it', async () => {
    const dir = await tempDir('compact');
    // Counts the plans: each one reads the db from its start.
    class CountingStorage extends FaultyStorage {
      dbReads = 0;
      override check(op: Parameters<FaultyStorage['check']>[0], ...names: string[]): void {
        if (op === 'openRead' && names.some((n) => /^db\d{10}$/.test(n))) this.dbReads++;
        super.check(op, ...names);
      }
    }
    const storage = new CountingStorage(new LocalStorage(dir));
    const s = await store(dir, { storage, keepHistoryMs: 3_600_000, compaction: { intervalMs: 20 } });
    for (let i = 0; i < 5; i++) await s.put(`k${i}`, Buffer.from(String(i)));
    await s.checkpoint();
    const reads = storage.dbReads;
    await sleep(400);
    // One look (a plan reads the db twice), then quiet until the first put is an hour old.
    expect(storage.dbReads - reads).to.be.at.most(2);
    expect(s.stats().historyStart).to.equal(0);
  });

  it('compacts again after a compaction; a compacted store rebases to its oldest kept state and no further', async () => {
    const dir = await tempDir('compact');
    const s = await store(dir);
    const written: Written = { live: new Map(), bodies: new Map() };
    await writeOldHistory(s, written);
    await sleep(10);
    const first = await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 });
    expect(first!.historyStart).to.equal(s.revision + 1);
    await writeOldHistory(s, written);
    await sleep(10);
    const second = await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 });
    expect(second!.historyStart).to.equal(s.revision + 1);
    // Nothing more to forget, nothing to free.
    await sleep(10);
    expect(await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 })).to.equal(undefined);
    for (const [key, md5] of written.live) expect(await md5Of(s, key), key).to.equal(md5);
    expect(await dirBlockBytes(dir)).to.be.lessThan(2 * BLOCK + 16 * 6 * 1024);
    // Back to the oldest state kept: the live objects of before the second horizon.
    const start = second!.historyStart;
    await s.delete('k1');
    await closeStore(s);
    expect((await verifyStore(dir)).problems).to.deep.equal([]);
    await expectRejection(rebaseInPlace(dir, start - 2), RevisionOutOfRangeError);
    await rebaseInPlace(dir, start - 1);
    const rebased = await store(dir);
    expect(rebased.revision).to.equal(start - 1);
    expect(rebased.stats().historyStart).to.equal(start);
    for (const [key, md5] of written.live) expect(await md5Of(rebased, key), key).to.equal(md5);
    await rebased.put('after', Buffer.from('x'));
    await closeStore(rebased);
    expect((await verifyStore(dir)).problems).to.deep.equal([]);
  });
});

describe('store: compaction under I/O faults', function () {
  this.timeout(120_000);

  /**
   * Every storage call a compaction makes fails in turn (the n-th call of each kind): the
   * compaction fails or finishes, a failed sync stops the writes, anything else leaves the
   * store serving; then a second compaction on the healed disk, a crash image taken right after
   * it, and a restart all hold every object with its bytes.
   */
  it('a failure at any call of a compaction loses nothing, and a failed sync stops the writes', async () => {
    const template = await tempDir('compact-template');
    const written: Written = { live: new Map(), bodies: new Map() };
    {
      const s = await openStore(template, { fsync: true, blockSize: BLOCK });
      await writeOldHistory(s, written);
      await s.close();
    }
    const syncs = new Set(['datasync', 'sync', 'syncDir']);
    const ops = ['list', 'stat', 'create', 'openRead', 'read', 'write', 'datasync', 'sync', 'syncDir', 'rename', 'remove'] as const;
    let failedRuns = 0;
    for (const op of ops) {
      for (let after = 0; after < 40; after++) {
        const dir = path.join(await tempDir('compact-fault'), 'd');
        await fs.cp(template, dir, { recursive: true });
        const faults = new FaultyStorage(new LocalStorage(dir));
        const s = await openStore(dir, { fsync: true, blockSize: BLOCK, storage: faults, warn: () => undefined });
        open.push(s);
        await sleep(5);
        faults.fail({ op, after, times: 1 });
        const outcome = await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 }).then(
          () => undefined,
          (err: Error) => err,
        );
        const fired = faults.failures.length > 0;
        faults.heal();
        const what = `${op} #${after + 1}${outcome ? `: ${outcome.message}` : ''}`;
        if (fired && outcome) failedRuns++;
        if (outcome && syncs.has(op)) {
          expect(s.failure, what).to.not.equal(undefined);
          expect(await s.put('x', Buffer.from('x')).then(() => 'ok', () => 'refused'), what).to.equal('refused');
        } else {
          expect(s.failure, what).to.equal(undefined);
          // Still serving, and a second compaction on the healed disk finishes the job.
          await s.put('after-fault', Buffer.from(op));
          await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 });
          for (const [key, md5] of written.live) expect(await md5Of(s, key), `${what}: ${key}`).to.equal(md5);
          const image = path.join(await tempDir('compact-crash'), 'd');
          await copyStoreDir(dir, image);
          const crashed = await store(image);
          for (const [key, md5] of written.live) expect(await md5Of(crashed, key), `${what}, crash image: ${key}`).to.equal(md5);
          await closeStore(crashed);
          expect((await verifyStore(image)).problems, what).to.deep.equal([]);
        }
        await closeStore(s).catch(() => undefined);
        const again = await store(dir);
        for (const [key, md5] of written.live) expect(await md5Of(again, key), `${what}, reopened: ${key}`).to.equal(md5);
        await closeStore(again);
        expect((await verifyStore(dir)).problems, what).to.deep.equal([]);
        // Past the last call of this kind: the rule never fired.
        if (!fired) {
          expect(outcome, what).to.equal(undefined);
          break;
        }
      }
    }
    expect(failedRuns).to.be.greaterThan(20);
  });
});

describe('store: a compacted directory and the original zipkvserver', () => {
  // The original's schema: it drops every field it does not know when it rewrites the db.
  const original = protobuf.parse(`
    syntax = "proto3";
    message Db { sint32 next_backend_file = 2; repeated HistoryRecord history = 3; }
    message HistoryRecord { oneof record { PutRecord put = 1; DeleteRecord delete = 2; } }
    message PutRecord { string filename = 1; Location location = 2; }
    message DeleteRecord { string filename = 1; }
    message Location { sint32 backend_file = 1; sint32 offset = 2; sint32 size = 3; bytes metadata = 4; }
  `).root.lookupType('Db');

  it('reads it as a shorter history, and after the original rewrote it (writing one more object) zipkv opens it again', async () => {
    const dir = await tempDir('compact-original');
    const written: Written = { live: new Map(), bodies: new Map() };
    const s = await store(dir);
    await writeOldHistory(s, written);
    await sleep(10);
    const result = await s.compact({ keepHistoryMs: 1, bytesPerSecond: 0 });
    await closeStore(s);

    // As the original reads it: a history of one record per live object, every byte in place.
    const dbName = (await fs.readdir(dir)).find((n) => /^db\d{10}$/.test(n))!;
    const decoded = original.toObject(original.decode(zlib.gunzipSync(await fs.readFile(path.join(dir, dbName)))), { longs: Number }) as {
      nextBackendFile: number;
      history: Array<{ put?: { filename: string; location: { backendFile?: number; offset?: number; size?: number } } }>;
    };
    expect(decoded.history.length).to.equal(result!.keptRecords);
    for (const record of decoded.history) {
      const { filename, location } = record.put!;
      const block = await fs.readFile(path.join(dir, `block${String(location.backendFile ?? 0).padStart(10, '0')}`));
      const bytes = block.subarray(location.offset ?? 0, (location.offset ?? 0) + (location.size ?? 0));
      expect(md5hex(bytes), filename).to.equal(written.live.get(filename));
      expect(location.backendFile ?? 0).to.be.lessThan(decoded.nextBackendFile);
    }

    // The original writes an object into a new block and rewrites the db, without zipkv's fields.
    const block = `block${String(decoded.nextBackendFile).padStart(10, '0')}`;
    await fs.writeFile(path.join(dir, block), 'from the original');
    decoded.history.push({ put: { filename: 'new', location: { backendFile: decoded.nextBackendFile, offset: 0, size: 17 } } });
    decoded.nextBackendFile++;
    const slot = (Number(dbName.slice(2)) + 1) % 10;
    await fs.writeFile(path.join(dir, `db${String(slot).padStart(10, '0')}`), zlib.gzipSync(original.encode(original.fromObject(decoded)).finish()));
    await fs.rm(path.join(dir, dbName));

    const warnings: string[] = [];
    const again = await store(dir, { warn: (m: string) => warnings.push(m) });
    expect(warnings.join('\n')).to.match(/no longer says where its history begins .*the original zipkvserver/);
    expect(again.revision).to.equal(result!.keptRecords);
    expect(again.stats().historyStart).to.equal(0);
    for (const [key, md5] of written.live) expect(await md5Of(again, key), key).to.equal(md5);
    expect((await again.read(again.head('new')!)).toString()).to.equal('from the original');
    await again.put('after', Buffer.from('zipkv again'));
    await closeStore(again);
    expect((await verifyStore(dir)).problems).to.deep.equal([]);
  });
});
