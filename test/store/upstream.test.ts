/**
 * The upstream tier (upstream.ts, restore.ts) against a real S3 server, reached through a proxy
 * that can be cut: by default a second zipkv in this process; with ZIPKV_TEST_RGW=1
 * (`npm run test:rgw`) a single-host Ceph radosgw brought up by scripts/rgw.sh. What is shipped
 * restores to the exact state shipped; a second writer is refused; an upstream that goes away
 * delays shipping and never a write.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { restoreStore } from '../../src/lib/store/restore.js';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { RemoteBucket } from '../../src/lib/store/storage/remote.js';
import { type Store, openStore } from '../../src/lib/store/store.js';
import { UpstreamError } from '../../src/lib/store/storage/remote.js';
import { LEASE_OBJECT, MANIFEST_OBJECT, UpstreamLeaseError } from '../../src/lib/store/upstream.js';
import fs from 'node:fs/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { S3Server } from '../../src/lib/s3/server.js';
import { type TestServer, clientFor, s3Fails, startServer } from '../helpers/server.js';
import { repoRoot, tempDir } from '../helpers/paths.js';
import { allKeys, md5Of, pseudoRandomBytes } from './util.js';

const BLOCK = 64 * 1024;

/** A TCP proxy in front of the upstream that can refuse and cut connections. */
class Cuttable {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  async up(): Promise<void> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}

const RGW = process.env.ZIPKV_TEST_RGW === '1';
const RGW_PORT = 17480;
/** The keys scripts/rgw.sh gives its S3 user; any keys do for a zipkv without credentials. */
const CREDENTIALS = RGW ? { accessKeyId: 'zipkvtest', secretAccessKey: 'zipkvtestsecret' } : { accessKeyId: 'k', secretAccessKey: 's' };
const rgwScript = path.join(repoRoot, 'scripts/rgw.sh');

let upstream: TestServer | undefined;
let rgwDir: string | undefined;
let proxy: Cuttable;
let prefixCount = 0;
const open: Store[] = [];

function remote(prefix: string, timeoutMs = 5000): RemoteBucket {
  return new RemoteBucket(
    { bucket: 'upstream', prefix },
    { endpoint: `http://127.0.0.1:${proxy.port}`, credentials: CREDENTIALS, timeoutMs },
  );
}

async function storeWithUpstream(dir: string, prefix: string, opts: { cacheBytes?: number; storage?: FaultyStorage } = {}): Promise<Store> {
  // An interval longer than any test: shipments happen when a test asks (shipUpstream).
  const s = await openStore(dir, {
    storage: opts.storage,
    fsync: false,
    blockSize: BLOCK,
    upstream: { remote: remote(prefix), intervalMs: 3_600_000, cacheBytes: opts.cacheBytes, log: () => undefined },
  });
  open.push(s);
  return s;
}

async function closeStore(s: Store): Promise<void> {
  open.splice(open.indexOf(s), 1);
  await s.close();
}

async function state(s: Store): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  for (const key of allKeys(s)) out.set(key, await md5Of(s, key));
  return out;
}

/** A self-contained restore (every block fetched), opened without the upstream. */
async function restoredState(prefix: string, opts: { to?: number } = {}): Promise<{ revision: number; objects: Map<string, string | undefined> }> {
  const dir = `${await tempDir('restored')}/store`;
  const r = remote(prefix);
  try {
    await restoreStore(r, dir, { ...opts, allBlocks: true });
  } finally {
    r.close();
  }
  const s = await openStore(dir, { readOnly: true });
  try {
    return { revision: s.revision, objects: await state(s) };
  } finally {
    await s.close();
  }
}

async function upstreamObjects(prefix: string): Promise<string[]> {
  const r = remote(prefix);
  try {
    return (await r.list()).sort();
  } finally {
    r.close();
  }
}

function newPrefix(): string {
  return `store${++prefixCount}/`;
}

describe(`upstream tier (on ${RGW ? 'Ceph radosgw' : 'a second zipkv'})`, function () {
  this.timeout(60_000);
  before(async function () {
    this.timeout(120_000);
    let port: number;
    if (RGW) {
      rgwDir = await tempDir('rgw');
      await promisify(execFile)('bash', [rgwScript, 'up', rgwDir, String(RGW_PORT)]);
      port = RGW_PORT;
      const client = new S3Client({ endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', credentials: CREDENTIALS });
      await client.send(new CreateBucketCommand({ Bucket: 'upstream' }));
      client.destroy();
    } else {
      upstream = await startServer({ bucket: 'upstream' });
      port = upstream.port;
    }
    proxy = new Cuttable(port);
    await proxy.up();
  });
  after(async function () {
    this.timeout(60_000);
    await proxy.down();
    await upstream?.stop();
    if (rgwDir) await promisify(execFile)('bash', [rgwScript, 'down', rgwDir]);
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close().catch(() => undefined);
  });

  it('ships sealed blocks, the db and the committed journal; a restore gives the state shipped, byte for byte', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    // Bodies of several sizes: some fill and seal blocks, small ones stay in the open block.
    for (let i = 0; i < 40; i++) await s.put(`k${i}`, pseudoRandomBytes(i % 7 === 0 ? 50_000 : 1000 + i * 37, i));
    await s.delete('k3');
    await s.copy('k4', 'k4-copy');
    await s.shipUpstream();
    const shipped = await state(s);
    const restored = await restoredState(prefix);
    expect(restored.revision).to.equal(s.revision);
    expect(restored.objects).to.deep.equal(shipped);
    const names = await upstreamObjects(prefix);
    expect(names).to.include.members([MANIFEST_OBJECT, LEASE_OBJECT]);
    expect(names.filter((n) => /^block\d+$/.test(n)).length).to.be.greaterThan(2);
    expect(names.some((n) => n.startsWith('zipkv-journal.'))).to.equal(true);
  });

  it('ships only what was committed: writes after the last shipment are not upstream, and the next shipment brings them', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    for (let i = 0; i < 10; i++) await s.put(`a${i}`, pseudoRandomBytes(3000, i));
    await s.shipUpstream();
    const first = await state(s);
    const firstRevision = s.revision;
    for (let i = 0; i < 10; i++) await s.put(`b${i}`, pseudoRandomBytes(3000, 100 + i));
    // The machine is lost now: what a restore finds is the first shipment exactly.
    const lost = await restoredState(prefix);
    expect(lost.revision).to.equal(firstRevision);
    expect(lost.objects).to.deep.equal(first);
    await s.shipUpstream();
    const second = await restoredState(prefix);
    expect(second.revision).to.equal(s.revision);
    expect(second.objects).to.deep.equal(await state(s));
  });

  it('restores to an earlier revision with --to', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    for (let i = 0; i < 8; i++) await s.put(`k${i}`, pseudoRandomBytes(2000, i));
    const at = s.revision;
    const then = await state(s);
    for (let i = 0; i < 8; i++) await s.put(`k${i}`, pseudoRandomBytes(2500, 50 + i));
    await s.delete('k0');
    await s.shipUpstream();
    const restored = await restoredState(prefix, { to: at });
    expect(restored.revision).to.equal(at);
    expect(restored.objects).to.deep.equal(then);
  });

  it('a clean shutdown ships the final checkpoint and gives the lease back; a server on the restored directory carries on', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    for (let i = 0; i < 12; i++) await s.put(`k${i}`, pseudoRandomBytes(9000, i));
    const before = await state(s);
    await closeStore(s);
    expect(await upstreamObjects(prefix)).to.not.include(LEASE_OBJECT);
    const dir = `${await tempDir('restored')}/store`;
    const r = remote(prefix);
    await restoreStore(r, dir);
    r.close();
    const t = await storeWithUpstream(dir, prefix);
    expect(await state(t)).to.deep.equal(before);
    await t.put('after-restore', pseudoRandomBytes(5000, 99));
    await t.shipUpstream();
    const again = await restoredState(prefix);
    expect(again.objects.get('after-restore')).to.equal(await md5Of(t, 'after-restore'));
    expect(again.objects.size).to.equal(before.size + 1);
  });

  it('refuses a second server on the same prefix while the first holds the lease, and says who holds it', async () => {
    const prefix = newPrefix();
    const first = await storeWithUpstream(await tempDir('up'), prefix);
    const otherDir = await tempDir('up-other');
    let refused: unknown;
    try {
      await storeWithUpstream(otherDir, prefix);
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(UpstreamLeaseError);
    expect((refused as Error).message).to.match(/written by another zipkv server .*pid \d+/);
    await closeStore(first);
    const second = await storeWithUpstream(otherDir, prefix);
    await second.put('x', Buffer.from('second'));
    await second.shipUpstream();
  });

  it('keeps taking writes while the upstream is down, and catches up when it is back', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    await s.put('before', pseudoRandomBytes(4000, 1));
    await s.shipUpstream();
    await proxy.down();
    try {
      for (let i = 0; i < 20; i++) await s.put(`during${i}`, pseudoRandomBytes(6000, i));
      let failed: unknown;
      await s.shipUpstream().catch((err: unknown) => (failed = err));
      expect((failed as Error | undefined)?.message).to.match(/upstream|ECONNREFUSED|reading|uploading/i);
      expect(s.stats().upstream!.records).to.be.greaterThan(0);
    } finally {
      await proxy.up();
    }
    await s.shipUpstream();
    expect(s.stats().upstream!.records).to.equal(0);
    const restored = await restoredState(prefix);
    expect(restored.objects).to.deep.equal(await state(s));
  });

  it('deletes upstream the blocks compaction dropped, once the db without them is shipped', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    for (let round = 0; round < 3; round++) for (let i = 0; i < 6; i++) await s.put(`k${i}`, pseudoRandomBytes(30_000, round * 10 + i));
    await s.shipUpstream();
    const blocksBefore = (await upstreamObjects(prefix)).filter((n) => /^block\d+$/.test(n));
    const result = await s.compact({ keepHistoryMs: 0, bytesPerSecond: 0, minForgottenRecords: 0 });
    expect(result?.blocksDeleted).to.be.greaterThan(0);
    await s.shipUpstream();
    const blocksAfter = (await upstreamObjects(prefix)).filter((n) => /^block\d+$/.test(n));
    expect(blocksAfter.length).to.be.lessThan(blocksBefore.length);
    const restored = await restoredState(prefix);
    expect(restored.objects).to.deep.equal(await state(s));
  });

  it('with a cache size, evicts sealed blocks that are upstream and reads them from there, also after a restart', async () => {
    const prefix = newPrefix();
    const dir = await tempDir('up');
    const s = await storeWithUpstream(dir, prefix, { cacheBytes: 2 * BLOCK });
    for (let i = 0; i < 24; i++) await s.put(`k${i}`, pseudoRandomBytes(30_000, i));
    const expected = await state(s);
    await s.shipUpstream();
    const localBlocks = async () => (await fs.readdir(dir)).filter((n) => /^block\d+$/.test(n));
    let bytes = 0;
    for (const name of await localBlocks()) bytes += (await fs.stat(`${dir}/${name}`)).size;
    expect(bytes).to.be.at.most(2 * BLOCK);
    expect(s.stats().upstream!.evictions).to.be.greaterThan(5);
    // Every object reads back, most of them from upstream.
    expect(await state(s)).to.deep.equal(expected);
    await closeStore(s);
    const again = await storeWithUpstream(dir, prefix, { cacheBytes: 2 * BLOCK });
    expect(await state(again)).to.deep.equal(expected);
    await again.put('new', pseudoRandomBytes(10_000, 77));
    await again.shipUpstream();
    const restored = await restoredState(prefix);
    expect(restored.objects).to.deep.equal(await state(again));
  });

  it('a read of an evicted block while upstream is down fails within seconds, never hangs; local ones are still served', async () => {
    const prefix = newPrefix();
    const dir = await tempDir('up');
    const s = await storeWithUpstream(dir, prefix, { cacheBytes: BLOCK });
    // Larger than the cache of small bodies, so reads go to the block.
    for (let i = 0; i < 10; i++) await s.put(`k${i}`, pseudoRandomBytes(70_000, i));
    await s.shipUpstream();
    await s.put('local', pseudoRandomBytes(1000, 5));
    await proxy.down();
    try {
      const started = Date.now();
      let failed: unknown;
      await s.read(s.head('k0')!).catch((err: unknown) => (failed = err));
      expect(failed).to.be.instanceOf(UpstreamError);
      expect(Date.now() - started).to.be.below(12_000);
      expect((await s.read(s.head('local')!)).length).to.equal(1000);
    } finally {
      await proxy.up();
    }
    // Through S3: 503 while upstream is down, for small and streamed objects alike.
    await s.put('streamed', pseudoRandomBytes(300_000, 3));
    await s.put('seals-the-block-before', pseudoRandomBytes(70_000, 4));
    await s.shipUpstream();
    const server = new S3Server(s, { host: '127.0.0.1', port: 0, bucket: 'bucket' });
    const { port } = await server.listen();
    const client = clientFor(`http://127.0.0.1:${port}`);
    await proxy.down();
    try {
      for (const key of ['k1', 'streamed']) {
        const err = await s3Fails(client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key })));
        expect(err.$metadata.httpStatusCode, key).to.equal(503);
      }
    } finally {
      await proxy.up();
      client.destroy();
      await server.close();
    }
    expect((await s.read(s.head('k0')!)).equals(pseudoRandomBytes(70_000, 0))).to.equal(true);
  });

  it('after a crash in the middle of a shipment, the next start deletes what no manifest names and ships the rest', async () => {
    const prefix = newPrefix();
    const dir = await tempDir('up');
    const s = await storeWithUpstream(dir, prefix);
    for (let i = 0; i < 6; i++) await s.put(`k${i}`, pseudoRandomBytes(40_000, i));
    await s.shipUpstream();
    // What a shipment cut short leaves: objects uploaded, never named by a manifest.
    const r = remote(prefix);
    await r.put('block0000009999', Buffer.from('half a block'));
    await r.put('zipkv-journal.dead.0.0-16', Buffer.alloc(16));
    r.close();
    await s.put('unshipped', pseudoRandomBytes(2000, 42));
    await closeStore(s);
    const again = await storeWithUpstream(dir, prefix);
    await again.shipUpstream();
    const names = await upstreamObjects(prefix);
    expect(names).to.not.include('block0000009999');
    expect(names).to.not.include('zipkv-journal.dead.0.0-16');
    expect((await restoredState(prefix)).objects).to.deep.equal(await state(again));
  });

  it('by default a restore leaves sealed blocks upstream: served with the upstream they read from there, opened without it the directory is refused', async () => {
    const prefix = newPrefix();
    const s = await storeWithUpstream(await tempDir('up'), prefix);
    for (let i = 0; i < 12; i++) await s.put(`k${i}`, pseudoRandomBytes(30_000, i));
    const expected = await state(s);
    await closeStore(s);
    const dir = `${await tempDir('restored')}/store`;
    const r = remote(prefix);
    const summary = await restoreStore(r, dir);
    r.close();
    expect(summary.blocksLeftUpstream).to.be.greaterThan(2);
    expect((await fs.readdir(dir)).filter((n) => /^block\d+$/.test(n))).to.deep.equal([]);
    let refused: unknown;
    await openStore(dir, { readOnly: true }).then((x) => x.close(), (err: unknown) => (refused = err));
    expect((refused as Error | undefined)?.message).to.match(/blocks .* are only upstream, in s3:\/\/upstream\/store\d+\/: open it with --upstream/);
    const served = await storeWithUpstream(dir, prefix);
    expect(await state(served)).to.deep.equal(expected);
  });

  it('a local read or write the shipper needs that fails (reading a block, the journal, the db; keeping the manifest copy) delays shipping and loses nothing', async () => {
    const cases: Array<{ op: 'openRead' | 'read' | 'stat' | 'list' | 'create' | 'rename' | 'datasync'; name?: RegExp }> = [
      { op: 'openRead', name: /^block/ },
      { op: 'read', name: /zipkv-journal/ },
      { op: 'openRead', name: /^db/ },
      { op: 'list' },
      { op: 'create', name: /zipkv-upstream/ },
      { op: 'rename', name: /zipkv-upstream/ },
    ];
    for (const [i, rule] of cases.entries()) {
      const prefix = newPrefix();
      const dir = await tempDir('up');
      const storage = new FaultyStorage(new LocalStorage(dir));
      const s = await storeWithUpstream(dir, prefix, { storage });
      for (let k = 0; k < 8; k++) await s.put(`k${k}`, pseudoRandomBytes(40_000, i * 10 + k));
      await s.checkpoint();
      await s.put('after-checkpoint', pseudoRandomBytes(500, i));
      storage.fail({ op: rule.op, name: rule.name, code: 'EIO' });
      let failed: unknown;
      await s.shipUpstream().catch((err: unknown) => (failed = err));
      const label = `${rule.op} ${rule.name ?? ''}`;
      // A failure before the manifest leaves upstream behind; one in the local copy after it only delays eviction.
      if (rule.name?.source.includes('zipkv-upstream')) expect(failed, label).to.equal(undefined);
      else expect((failed as Error | undefined)?.message, label).to.match(/EIO/);
      // Writes go on meanwhile.
      await s.put('during', pseudoRandomBytes(700, i));
      storage.heal();
      await s.shipUpstream();
      expect((await restoredState(prefix)).objects, label).to.deep.equal(await state(s));
      await closeStore(s);
    }
  });
});
