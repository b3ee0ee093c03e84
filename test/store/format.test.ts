/**
 * A directory zipkv has closed cleanly is one the original reads. The checks decode the files
 * with zlib and a protobufjs schema holding only the original's fields, following the original
 * reader's rules, not with the engine's own reader.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { openStore, type Store } from '../../src/lib/store/store.js';
import { copyFixture, readManifest, tempDir } from '../helpers/paths.js';
import { blockFiles, copyStoreDir, dbFiles, md5hex, pseudoRandomBytes } from './util.js';

/** The original's schema (kvhttp/zipkv), without zipkv's additions. */
const original = protobuf.Root.fromJSON({
  nested: {
    Db: { fields: { nextBackendFile: { type: 'sint32', id: 2 }, history: { rule: 'repeated', type: 'HistoryRecord', id: 3 } } },
    HistoryRecord: {
      oneofs: { record: { oneof: ['put', 'delete'] } },
      fields: { put: { type: 'PutRecord', id: 1 }, delete: { type: 'DeleteRecord', id: 2 } },
    },
    PutRecord: { fields: { filename: { type: 'string', id: 1 }, location: { type: 'Location', id: 2 } } },
    DeleteRecord: { fields: { filename: { type: 'string', id: 1 } } },
    Location: {
      fields: {
        backendFile: { type: 'sint32', id: 1 },
        offset: { type: 'sint32', id: 2 },
        size: { type: 'sint32', id: 3 },
        metadata: { type: 'bytes', id: 4 },
      },
    },
    Metadata: { fields: { metadata: { keyType: 'string', type: 'string', id: 1 } } },
  },
} as unknown as protobuf.INamespace);
const DbType = original.lookupType('Db');
const MetadataType = original.lookupType('Metadata');

interface OrigLocation {
  backendFile?: number;
  offset?: number;
  size?: number;
  metadata?: Uint8Array;
}
interface OrigRecord {
  record?: 'put' | 'delete';
  put?: { filename?: string; location?: OrigLocation };
  delete?: { filename?: string };
}
interface OrigDb {
  nextBackendFile?: number;
  history?: OrigRecord[];
}

interface OriginalView {
  dbFile: string;
  db: OrigDb;
  /** Live key -> (bytes, metadata), by replaying the history as the original does. */
  live: Map<string, { bytes: Buffer; metadata: Record<string, string> }>;
}

/** Reads a directory the way the original server does, asserting each of its expectations. */
async function readAsOriginal(dir: string): Promise<OriginalView> {
  const dbs = await dbFiles(dir);
  expect(dbs, 'exactly one db file').to.have.length(1);
  const dbFile = dbs[0]!;
  const compressed = await fs.readFile(path.join(dir, dbFile));
  expect(compressed.subarray(0, 2).toString('hex'), 'gzip magic').to.equal('1f8b');
  const raw = zlib.gunzipSync(compressed);
  const db = DbType.toObject(DbType.decode(raw), { oneofs: true, defaults: false, longs: Number }) as OrigDb;
  const next = db.nextBackendFile ?? 0;
  const blocks = await blockFiles(dir);
  expect(blocks.length, 'next_backend_file is the number of block files').to.equal(next);
  expect(blocks, 'blocks are block0 .. next_backend_file - 1').to.deep.equal(
    Array.from({ length: next }, (_, i) => `block${String(i).padStart(10, '0')}`),
  );
  const contents = new Map<number, Buffer>();
  for (let i = 0; i < next; i++) contents.set(i, await fs.readFile(path.join(dir, blocks[i]!)));
  const live = new Map<string, { bytes: Buffer; metadata: Record<string, string> }>();
  (db.history ?? []).forEach((rec, rev) => {
    expect(rec.record, `revision ${rev} has its oneof set`).to.be.oneOf(['put', 'delete']);
    if (rec.record === 'put') {
      const loc = rec.put!.location;
      expect(loc, `revision ${rev} has a Location`).to.not.equal(undefined);
      const block = loc!.backendFile ?? 0;
      const offset = loc!.offset ?? 0;
      const size = loc!.size ?? 0;
      let bytes: Buffer = Buffer.alloc(0);
      if (size > 0) {
        // The original slices block[offset:offset+size]: it must lie within the block file.
        const data = contents.get(block);
        expect(data, `revision ${rev}: block ${block} exists`).to.not.equal(undefined);
        expect(offset + size, `revision ${rev}: within block ${block}`).to.be.at.most(data!.length);
        bytes = data!.subarray(offset, offset + size);
      }
      const metadata = loc!.metadata && loc!.metadata.length > 0
        ? ((MetadataType.toObject(MetadataType.decode(loc!.metadata)) as { metadata?: Record<string, string> }).metadata ?? {})
        : {};
      live.set(rec.put!.filename ?? '', { bytes, metadata });
    } else {
      live.delete(rec.delete!.filename ?? '');
    }
  });
  return { dbFile, db, live };
}

function expectLive(view: OriginalView, model: Map<string, Buffer>, metadata: Map<string, Record<string, string>> = new Map()) {
  expect([...view.live.keys()].sort()).to.deep.equal([...model.keys()].sort());
  for (const [key, body] of model) {
    expect(md5hex(view.live.get(key)!.bytes), key).to.equal(md5hex(body));
    if (metadata.has(key)) expect(view.live.get(key)!.metadata, key).to.deep.equal(metadata.get(key));
  }
}

describe('store: a cleanly closed directory is one the original reads', () => {
  it('after puts, overwrites, copies, deletes, large and empty objects and failed puts, over several sessions', async () => {
    const dir = await tempDir('format');
    const model = new Map<string, Buffer>();
    const metadata = new Map<string, Record<string, string>>();
    const put = async (s: Store, key: string, body: Buffer, meta?: Record<string, string>) => {
      await s.put(key, body, { metadata: meta });
      model.set(key, body);
      metadata.set(key, meta ?? {});
    };
    let s = await openStore(dir, { blockSize: 4096 });
    await put(s, 'a', pseudoRandomBytes(1000, 1), { 'X-Amz-Meta-Color': 'blue', 'Content-Type': 'text/plain' });
    await put(s, 'empty', Buffer.alloc(0));
    await put(s, 'big', pseudoRandomBytes(10_000, 2));
    await put(s, 'b', pseudoRandomBytes(3000, 3));
    await put(s, 'c', pseudoRandomBytes(3000, 4));
    await s.copy('a', 'a-copy', { 'X-Amz-Meta-Color': 'red' });
    model.set('a-copy', model.get('a')!);
    metadata.set('a-copy', { 'X-Amz-Meta-Color': 'red' });
    await s.put('bad', Readable.from([Buffer.alloc(10)]), { size: 20 }).catch(() => undefined);
    await s.close();
    let view = await readAsOriginal(dir);
    expectLive(view, model, metadata);

    s = await openStore(dir, { blockSize: 4096 });
    await put(s, 'a', pseudoRandomBytes(500, 5));
    await s.delete('b');
    model.delete('b');
    await s.copy('c', 'c2');
    model.set('c2', model.get('c')!);
    await put(s, '\u{1F600}/ü', pseudoRandomBytes(10, 6), { 'X-Amz-Meta-Empty': '' });
    await s.close();
    view = await readAsOriginal(dir);
    expectLive(view, model, metadata);

    // A session that only deletes, copies and writes empty objects: no new bytes at all.
    s = await openStore(dir, { blockSize: 4096 });
    await s.delete('c');
    model.delete('c');
    await s.copy('big', 'big2');
    model.set('big2', model.get('big')!);
    await put(s, 'empty2', Buffer.alloc(0));
    await s.close();
    view = await readAsOriginal(dir);
    expectLive(view, model, metadata);
    expect(view.db.history).to.have.length(13);

    // A session that changes nothing leaves a directory the original reads just the same.
    await (await openStore(dir, { blockSize: 4096 })).close();
    expectLive(await readAsOriginal(dir), model, metadata);
  });

  it('after a session that ended without close (journal and open block), the next clean close', async () => {
    const dir = await tempDir('format-crash');
    const crashed = await tempDir('format-crash');
    const s = await openStore(dir, { blockSize: 8192, checkpointBytes: 1 << 30 });
    const model = new Map<string, Buffer>();
    for (let i = 0; i < 20; i++) {
      const body = pseudoRandomBytes(i * 300, i);
      await s.put(`k${i}`, body);
      model.set(`k${i}`, body);
    }
    await s.delete('k3');
    model.delete('k3');
    await copyStoreDir(dir, crashed);
    await s.close();
    const t = await openStore(crashed);
    await t.close();
    expectLive(await readAsOriginal(crashed), model);
  });

  it("after writing to a directory the original wrote (the basic fixture)", async () => {
    const dir = await copyFixture('basic');
    const manifest = await readManifest('basic');
    const before = await readAsOriginal(dir);
    expect(before.dbFile).to.equal('db0000000002');
    const model = new Map<string, Buffer>([...before.live].map(([k, v]) => [k, v.bytes]));
    expect(model.size).to.equal(Object.keys(manifest.live).length);
    const s = await openStore(dir, { blockSize: 65536 });
    const [first, second] = [...model.keys()].sort();
    await s.delete(first!);
    model.delete(first!);
    await s.copy(second!, 'copied from the original');
    model.set('copied from the original', model.get(second!)!);
    const body = pseudoRandomBytes(100_000, 8);
    await s.put('new and large', body);
    model.set('new and large', body);
    await s.close();
    const after = await readAsOriginal(dir);
    expect(after.dbFile).to.equal('db0000000003');
    expect(after.db.nextBackendFile).to.equal(34); // one new block, holding the large object
    expect(after.db.history).to.have.length(manifest.history.length + 3);
    expectLive(after, model);
  });

  it('rotates the db slot (cur + 1) % 10 at each checkpoint, wrapping 9 -> 0', async () => {
    const dir = await tempDir('slots');
    const s = await openStore(dir, { fsync: false });
    const seen: string[] = [];
    for (let i = 0; i < 23; i++) {
      await s.put(`k${i}`, Buffer.from(`v${i}`));
      await s.checkpoint();
      const dbs = await dbFiles(dir);
      expect(dbs).to.have.length(1);
      seen.push(dbs[0]!);
    }
    expect(seen).to.deep.equal(Array.from({ length: 23 }, (_, i) => `db000000000${i % 10}`));
    await s.close();
    expect(await dbFiles(dir)).to.deep.equal(['db0000000002']);
    expect(((await readAsOriginal(dir)).db.history ?? []).length).to.equal(23);
  });

  it('checkpoints on its own once the journal passes checkpointBytes, rotating the slots', async () => {
    const dir = await tempDir('auto-slots');
    const s = await openStore(dir, { checkpointBytes: 64, fsync: false });
    const slots: number[] = [];
    for (let i = 0; i < 5000 && slots.length < 13; i++) {
      await s.put(`key-${i}`, Buffer.from(`value ${i}`));
      const slot = s.stats().dbSlot;
      if (slot !== undefined && slot !== slots.at(-1)) slots.push(slot);
    }
    expect(slots.length).to.be.at.least(12);
    slots.forEach((slot, i) => expect(slot).to.equal(i % 10));
    await s.close();
    expect(await dbFiles(dir)).to.have.length(1);
    expect((await readAsOriginal(dir)).live.size).to.equal(s.stats().liveObjects);
  });

  describe('two adjacent db slots (a crash between writing the next db and deleting the previous)', () => {
    for (const [older, newer] of [[0, 1], [4, 5], [9, 0]] as const) {
      it(`db${older} + db${newer}: db${newer} is used, and the stale one goes`, async () => {
        const dir = await tempDir('two-slots');
        const s = await openStore(dir, { fsync: false });
        // Advance to `older`.
        for (let i = 0; i <= older; i++) {
          await s.put(`k${i}`, Buffer.from(`v${i}`));
          await s.checkpoint();
        }
        const olderName = `db${String(older).padStart(10, '0')}`;
        expect(await dbFiles(dir)).to.deep.equal([olderName]);
        const saved = await fs.readFile(path.join(dir, olderName));
        await s.put('only-in-newer', Buffer.from('new'));
        await s.delete('k0');
        await s.close();
        const newerName = `db${String(newer).padStart(10, '0')}`;
        expect(await dbFiles(dir)).to.deep.equal([newerName]);
        await fs.writeFile(path.join(dir, olderName), saved);

        const ro = await openStore(dir, { readOnly: true });
        expect(ro.head('only-in-newer')).to.not.equal(undefined);
        expect(ro.head('k0')).to.equal(undefined);
        await ro.close();

        const w = await openStore(dir);
        expect(w.head('only-in-newer')).to.not.equal(undefined);
        expect(w.head('k0')).to.equal(undefined);
        await w.close();
        // The original takes the lowest slot present: only the newer may be left.
        expect(await dbFiles(dir)).to.deep.equal([newerName]);
        const view = await readAsOriginal(dir);
        expect(view.live.has('only-in-newer')).to.equal(true);
        expect(view.live.has('k0')).to.equal(false);

        // And the store keeps working across further checkpoints.
        const again = await openStore(dir);
        await again.put('later', Buffer.from('later'));
        await again.close();
        const last = await openStore(dir, { readOnly: true });
        expect(last.head('later')).to.not.equal(undefined);
        expect(last.head('only-in-newer')).to.not.equal(undefined);
        await last.close();
        expect(await dbFiles(dir)).to.have.length(1);
      });
    }
  });
});
