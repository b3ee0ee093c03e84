import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import {
  BodySizeMismatchError,
  DigestMismatchError,
  ObjectTooLargeError,
  StoreStateError,
} from '../../src/lib/store/errors.js';
import { openStore, type Store } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';
import { allKeys, blockFiles, md5Of, md5hex, parallel, pseudoRandomBytes, utf8Sort } from './util.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the promise to be rejected');
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('store: basic operations', () => {
  let dir: string;
  let store: Store | undefined;

  beforeEach(async () => {
    dir = await tempDir('store');
  });
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  async function reopen(opts: Parameters<typeof openStore>[1] = {}): Promise<Store> {
    await store?.close();
    store = await openStore(dir, opts);
    return store;
  }

  it('an empty store lists nothing and survives a reopen', async () => {
    const s = await reopen();
    expect(s.revision).to.equal(-1);
    expect(s.list({ limit: 100 })).to.deep.include({ objects: [], commonPrefixes: [], truncated: false });
    expect(s.head('nothing')).to.equal(undefined);
    expect(await s.delete('nothing')).to.equal(undefined);
    expect(s.revision).to.equal(-1);
    const again = await reopen();
    expect(again.revision).to.equal(-1);
    expect(allKeys(again)).to.deep.equal([]);
  });

  it('puts and reads back, with metadata, md5 and time', async () => {
    const s = await reopen();
    const body = Buffer.from('hello, world');
    const before = Date.now();
    const info = await s.put('greeting', body, { metadata: { 'X-Amz-Meta-Lang': 'en', 'Content-Type': 'text/plain' } });
    expect(info.size).to.equal(body.length);
    expect(info.etag).to.equal(md5hex(body));
    expect(info.lastModified.getTime()).to.be.within(Math.floor(before / 1000) * 1000, Date.now());
    expect((await s.read(s.head('greeting')!)).toString()).to.equal('hello, world');
    expect(s.head('greeting')!.metadata).to.deep.equal({ 'X-Amz-Meta-Lang': 'en', 'Content-Type': 'text/plain' });
    const again = await reopen();
    const back = again.head('greeting')!;
    expect(back.etag).to.equal(md5hex(body));
    expect(back.metadata).to.deep.equal({ 'X-Amz-Meta-Lang': 'en', 'Content-Type': 'text/plain' });
    expect((await again.read(back)).toString()).to.equal('hello, world');
    expect(again.revision).to.equal(0);
  });

  it('a 10 MB object reads back whole and in slices', async () => {
    const s = await reopen();
    const body = pseudoRandomBytes(10 * 1024 * 1024 + 17, 7);
    await s.put('big', Readable.from([body.subarray(0, 3_000_000), body.subarray(3_000_000)]), { size: body.length });
    for (const again of [false, true]) {
      const store = again ? await reopen() : s;
      const info = store.head('big')!;
      expect(info.size).to.equal(body.length);
      expect(info.etag).to.equal(md5hex(body));
      expect(await md5Of(store, 'big')).to.equal(md5hex(body));
      const start = 4_194_301;
      const end = 8_388_607;
      expect((await store.read(info, start, end)).equals(body.subarray(start, end + 1))).to.equal(true);
      expect((await collect(store.createReadStream(info, start, end))).equals(body.subarray(start, end + 1))).to.equal(true);
      expect((await collect(store.createReadStream(info, body.length - 5))).equals(body.subarray(body.length - 5))).to.equal(true);
      expect((await store.read(info, 0, 0)).equals(body.subarray(0, 1))).to.equal(true);
    }
  });

  it('reads never go past the end of the object into its neighbour', async () => {
    const s = await reopen();
    await s.put('a', Buffer.from('aaaa'));
    await s.put('b', Buffer.from('bbbb'));
    const a = s.head('a')!;
    expect((await s.read(a, 0, 100)).toString()).to.equal('aaaa');
    expect((await s.read(a, 2)).toString()).to.equal('aa');
    expect((await collect(s.createReadStream(a, 1, 100))).toString()).to.equal('aaa');
    expect((await s.read(a, 10, 20)).length).to.equal(0);
  });

  it('10,000 small objects: all listed in order and all readable after a reopen', async function () {
    this.timeout(60_000);
    const s = await reopen({ fsync: false });
    const keys = Array.from({ length: 10_000 }, (_, i) => `many/${String(i).padStart(5, '0')}`);
    await parallel(keys, 64, async (key, i) => {
      await s.put(key, pseudoRandomBytes(i % 700, i));
    });
    expect(s.revision).to.equal(9_999);
    expect(allKeys(s, 777)).to.deep.equal(keys);
    const again = await reopen({ fsync: false });
    expect(again.revision).to.equal(9_999);
    expect(allKeys(again)).to.deep.equal(keys);
    for (let i = 0; i < keys.length; i += 97) {
      const info = again.head(keys[i]!)!;
      expect(info.size).to.equal(i % 700);
      expect(md5hex(await again.read(info))).to.equal(md5hex(pseudoRandomBytes(i % 700, i)));
    }
  });

  it('delete removes a key, writes no record for a missing key, and survives a reopen', async () => {
    const s = await reopen();
    await s.put('keep', Buffer.from('1'));
    await s.put('gone', Buffer.from('2'));
    expect(await s.delete('gone')).to.be.a('number');
    expect(await s.delete('gone')).to.equal(undefined);
    expect(await s.delete('never')).to.equal(undefined);
    expect(s.revision).to.equal(2);
    expect(s.head('gone')).to.equal(undefined);
    const again = await reopen();
    expect(again.revision).to.equal(2);
    expect(allKeys(again)).to.deep.equal(['keep']);
  });

  it('zero-length puts, copies and deletes (no new bytes) survive a reopen', async () => {
    const s = await reopen();
    await s.put('empty', Buffer.alloc(0), { metadata: { 'X-Amz-Meta-E': '' } });
    await s.put('empty-stream', Readable.from([]), { size: 0 });
    await s.put('src', Buffer.from('source bytes'), { metadata: { 'X-Amz-Meta-Who': 'src' } });
    await s.put('victim', Buffer.from('to be deleted'));
    const before = (await blockFiles(dir)).length;
    const copied = await s.copy('src', 'dst', { 'X-Amz-Meta-Who': 'dst' });
    const kept = await s.copy('src', 'dst-same-meta');
    expect(kept!.metadata).to.deep.equal({ 'X-Amz-Meta-Who': 'src' }); // COPY keeps the source's metadata
    expect(await s.copy('missing', 'x')).to.equal(undefined);
    expect(await s.delete('victim')).to.be.a('number');
    expect(copied!.etag).to.equal(md5hex(Buffer.from('source bytes')));
    const src = s.head('src')!.entry;
    expect([copied!.entry.block, copied!.entry.offset, copied!.entry.size]).to.deep.equal([src.block, src.offset, src.size]);
    expect((await blockFiles(dir)).length).to.equal(before);

    const again = await reopen();
    expect(allKeys(again)).to.deep.equal(['dst', 'dst-same-meta', 'empty', 'empty-stream', 'src']);
    expect(again.head('empty')!.size).to.equal(0);
    expect(again.head('empty')!.etag).to.equal(md5hex(Buffer.alloc(0)));
    expect(again.head('empty')!.metadata).to.deep.equal({ 'X-Amz-Meta-E': '' });
    expect((await again.read(again.head('empty')!)).length).to.equal(0);
    expect((await collect(again.createReadStream(again.head('empty-stream')!))).length).to.equal(0);
    const dst = again.head('dst')!;
    const src2 = again.head('src')!;
    expect([dst.entry.block, dst.entry.offset, dst.size]).to.deep.equal([src2.entry.block, src2.entry.offset, src2.size]);
    expect(dst.metadata).to.deep.equal({ 'X-Amz-Meta-Who': 'dst' });
    expect(src2.metadata).to.deep.equal({ 'X-Amz-Meta-Who': 'src' });
    expect(again.head('dst-same-meta')!.metadata).to.deep.equal({ 'X-Amz-Meta-Who': 'src' });
    expect(dst.etag).to.equal(md5hex(Buffer.from('source bytes')));
    expect((await again.read(dst)).toString()).to.equal('source bytes');
    expect(again.head('victim')).to.equal(undefined);
  });

  it('lists in UTF-8 byte order, not UTF-16 order', async () => {
    const s = await reopen();
    const keys = ['z', 'a', '\u{1F600}', '\uE000', '\uFFFD', '\uFF21', 'é', '\u{10000}', 'a\u{1F600}', 'a\uFFFF', 'a\uE001', 'A', ''];
    for (const key of keys) await s.put(key, Buffer.from(key));
    const expected = utf8Sort(keys);
    // The two orders really differ for these keys.
    expect([...keys].sort()).to.not.deep.equal(expected);
    expect(allKeys(s)).to.deep.equal(expected);
    expect(allKeys(s, 1)).to.deep.equal(expected);
    expect(allKeys(await reopen())).to.deep.equal(expected);
    expect(store!.list({ prefix: 'a', limit: 10 }).objects.map((o) => o.key)).to.deep.equal(utf8Sort(['a', 'a\u{1F600}', 'a\uFFFF', 'a\uE001']));
    expect(store!.list({ after: '\uFFFD', limit: 10 }).objects.map((o) => o.key)).to.deep.equal(['\u{10000}', '\u{1F600}']);
  });

  it('lists with prefix, after and limit', async () => {
    const s = await reopen();
    for (const key of ['a/1', 'a/2', 'a/3', 'ab', 'b/1', 'b/2']) await s.put(key, Buffer.from(key));
    const keys = (opts: Parameters<Store['list']>[0]) => s.list(opts).objects.map((o) => o.key);
    expect(keys({ prefix: 'a/', limit: 10 })).to.deep.equal(['a/1', 'a/2', 'a/3']);
    expect(keys({ prefix: 'a', limit: 10 })).to.deep.equal(['a/1', 'a/2', 'a/3', 'ab']);
    expect(keys({ prefix: 'a/', after: 'a/1', limit: 10 })).to.deep.equal(['a/2', 'a/3']);
    expect(keys({ prefix: 'a/', after: 'a/15', limit: 10 })).to.deep.equal(['a/2', 'a/3']);
    expect(keys({ prefix: 'a/', after: '0', limit: 10 })).to.deep.equal(['a/1', 'a/2', 'a/3']);
    expect(keys({ prefix: 'a/', after: 'a/3', limit: 10 })).to.deep.equal([]);
    expect(keys({ prefix: 'a/', after: 'zzz', limit: 10 })).to.deep.equal([]);
    expect(keys({ prefix: 'c', limit: 10 })).to.deep.equal([]);
    expect(keys({ after: 'ab', limit: 10 })).to.deep.equal(['b/1', 'b/2']);
    expect(s.list({ limit: 0 }).objects).to.deep.equal([]);
    const page = s.list({ prefix: 'a', limit: 2 });
    expect(page.objects.map((o) => o.key)).to.deep.equal(['a/1', 'a/2']);
    expect(page.truncated).to.equal(true);
    expect(page.nextMarker).to.equal('a/2');
    const last = s.list({ prefix: 'a', after: page.nextMarker, limit: 2 });
    expect(last.objects.map((o) => o.key)).to.deep.equal(['a/3', 'ab']);
    expect(last.truncated).to.equal(false);
    expect(last.nextMarker).to.equal(undefined);
    expect(s.list({ prefix: 'a/', limit: 3 }).truncated).to.equal(false);
  });

  it('rolls keys up into common prefixes, counted against the limit', async () => {
    const s = await reopen();
    const all = ['dir/a', 'dir/b', 'dir/sub/x', 'dir/sub/y', 'dir/sub2/z', 'dir/t', 'dis', 'e/1', 'e/2', 'f'];
    for (const key of all) await s.put(key, Buffer.from(key));
    const full = s.list({ delimiter: '/', limit: 100 });
    expect(full.objects.map((o) => o.key)).to.deep.equal(['dis', 'f']);
    expect(full.commonPrefixes).to.deep.equal(['dir/', 'e/']);
    const inDir = s.list({ prefix: 'dir/', delimiter: '/', limit: 100 });
    expect(inDir.objects.map((o) => o.key)).to.deep.equal(['dir/a', 'dir/b', 'dir/t']);
    expect(inDir.commonPrefixes).to.deep.equal(['dir/sub/', 'dir/sub2/']);

    // Page through with limit 2: common prefixes count, and the marker equal to a common
    // prefix skips that prefix on the next page.
    const seen: string[] = [];
    let after: string | undefined;
    const markers: string[] = [];
    for (;;) {
      const page = s.list({ prefix: 'dir/', delimiter: '/', after, limit: 2 });
      const entries = [...page.objects.map((o) => o.key), ...page.commonPrefixes].sort();
      expect(entries.length).to.be.at.most(2);
      seen.push(...entries);
      if (!page.truncated) break;
      markers.push(page.nextMarker!);
      after = page.nextMarker;
    }
    expect(seen).to.deep.equal(['dir/a', 'dir/b', 'dir/sub/', 'dir/sub2/', 'dir/t']);
    expect(markers).to.deep.equal(['dir/b', 'dir/sub2/']);
    const afterPrefix = s.list({ prefix: 'dir/', delimiter: '/', after: 'dir/sub/', limit: 10 });
    expect(afterPrefix.commonPrefixes).to.deep.equal(['dir/sub2/']);
    expect(afterPrefix.objects.map((o) => o.key)).to.deep.equal(['dir/t']);
    const one = s.list({ delimiter: '/', limit: 1 });
    expect(one.commonPrefixes).to.deep.equal(['dir/']);
    expect(one.objects).to.deep.equal([]);
    expect(one.truncated).to.equal(true);
    expect(one.nextMarker).to.equal('dir/');
    // A multi-character delimiter.
    const multi = s.list({ prefix: 'dir/', delimiter: 'ub', limit: 10 });
    expect(multi.commonPrefixes).to.deep.equal(['dir/sub']);
    expect(multi.objects.map((o) => o.key)).to.deep.equal(['dir/a', 'dir/b', 'dir/t']);
  });

  it('an object larger than the block size gets a block of its own', async () => {
    const s = await reopen({ blockSize: 1000 });
    await s.put('small1', pseudoRandomBytes(100, 1));
    await s.put('huge', pseudoRandomBytes(5000, 2));
    await s.put('small2', pseudoRandomBytes(100, 3));
    await s.put('exact', pseudoRandomBytes(1000, 4));
    await s.put('small3', pseudoRandomBytes(900, 5));
    await s.put('small4', pseudoRandomBytes(100, 6));
    const where = (k: string) => [s.head(k)!.entry.block, s.head(k)!.entry.offset];
    expect(where('small1')).to.deep.equal([0, 0]);
    expect(where('huge')).to.deep.equal([1, 0]);
    expect(where('small2')).to.deep.equal([2, 0]);
    expect(where('exact')).to.deep.equal([3, 0]);
    expect(where('small3')).to.deep.equal([4, 0]);
    expect(where('small4')).to.deep.equal([4, 900]);
    const again = await reopen({ blockSize: 1000 });
    expect(await md5Of(again, 'huge')).to.equal(md5hex(pseudoRandomBytes(5000, 2)));
    expect(await md5Of(again, 'small4')).to.equal(md5hex(pseudoRandomBytes(100, 6)));
    const sizes = await Promise.all((await blockFiles(dir)).map(async (f) => (await fs.stat(path.join(dir, f))).size));
    expect(sizes).to.deep.equal([100, 5000, 100, 1000, 1000]);
  });

  it('refuses an announced size over 2 GiB - 1 before writing any byte', async () => {
    const s = await reopen();
    await s.put('first', Buffer.from('x'));
    const blocks = await blockFiles(dir);
    let pulled = false;
    const body = new Readable({
      read() {
        pulled = true;
        this.push(Buffer.alloc(1024));
      },
    });
    const err = await rejection(s.put('too-big', body, { size: 2 ** 31 }));
    body.destroy();
    expect(err).to.be.instanceOf(ObjectTooLargeError);
    expect(pulled).to.equal(false);
    expect(await blockFiles(dir)).to.deep.equal(blocks);
    expect((await fs.stat(path.join(dir, blocks[0]!))).size).to.equal(1);
    expect(s.head('too-big')).to.equal(undefined);
    expect(s.revision).to.equal(0);
  });

  it('refuses a nonsensical announced size', async () => {
    const s = await reopen();
    for (const size of [-1, -5, 1.5, Number.NaN, Infinity]) {
      for (const body of [Readable.from([]), Readable.from([Buffer.from('x')])]) {
        const err = await rejection(s.put('bad', body, { size }));
        expect(err, String(size)).to.be.instanceOf(RangeError);
      }
    }
    expect(s.head('bad')).to.equal(undefined);
    expect(s.revision).to.equal(-1);
  });

  it('refuses a body shorter or longer than announced, and records nothing', async () => {
    const s = await reopen();
    await s.put('k', Buffer.from('original'));
    const short = await rejection(s.put('k', Readable.from([Buffer.from('abc')]), { size: 10 }));
    expect(short).to.be.instanceOf(BodySizeMismatchError);
    expect((short as BodySizeMismatchError).received).to.equal(3);
    const long = await rejection(s.put('k', Readable.from([Buffer.from('abcdef'), Buffer.from('ghijk')]), { size: 10 }));
    expect(long).to.be.instanceOf(BodySizeMismatchError);
    const zero = await rejection(s.put('k', Readable.from([Buffer.from('a')]), { size: 0 }));
    expect(zero).to.be.instanceOf(BodySizeMismatchError);
    const buf = await rejection(s.put('k', Buffer.from('abc'), { size: 4 }));
    expect(buf).to.be.instanceOf(BodySizeMismatchError);
    const fresh = await rejection(s.put('new', Readable.from([Buffer.from('abc')]), { size: 4 }));
    expect(fresh).to.be.instanceOf(BodySizeMismatchError);
    expect(s.revision).to.equal(0);
    expect((await s.read(s.head('k')!)).toString()).to.equal('original');
    await s.put('after', Buffer.from('fine'));
    const again = await reopen();
    expect(again.revision).to.equal(1);
    expect(allKeys(again)).to.deep.equal(['after', 'k']);
    expect((await again.read(again.head('k')!)).toString()).to.equal('original');
    expect((await again.read(again.head('after')!)).toString()).to.equal('fine');
  });

  it('refuses a body whose MD5 is not the announced one, and records nothing', async () => {
    const s = await reopen();
    const body = Buffer.from('payload');
    const err = await rejection(s.put('k', body, { expectedMd5: Buffer.from(md5hex(Buffer.from('other')), 'hex') }));
    expect(err).to.be.instanceOf(DigestMismatchError);
    const err0 = await rejection(s.put('k0', Buffer.alloc(0), { expectedMd5: Buffer.alloc(16) }));
    expect(err0).to.be.instanceOf(DigestMismatchError);
    expect(s.head('k')).to.equal(undefined);
    expect(s.revision).to.equal(-1);
    const ok = await s.put('k', Readable.from([body]), { size: body.length, expectedMd5: Buffer.from(md5hex(body), 'hex') });
    expect(ok.etag).to.equal(md5hex(body));
    const again = await reopen();
    expect(again.revision).to.equal(0);
    expect(allKeys(again)).to.deep.equal(['k']);
  });

  it('takes a body of unknown size (spooled first)', async () => {
    const s = await reopen({ blockSize: 64 * 1024 });
    const body = pseudoRandomBytes(200_000, 11);
    const chunks = [body.subarray(0, 1), body.subarray(1, 70_000), body.subarray(70_000)];
    const info = await s.put('spooled', Readable.from(chunks));
    expect(info.size).to.equal(body.length);
    expect(info.etag).to.equal(md5hex(body));
    const empty = await s.put('spooled-empty', Readable.from([]));
    expect(empty.size).to.equal(0);
    const bad = await rejection(s.put('spooled-bad', Readable.from([body]), { expectedMd5: Buffer.alloc(16) }));
    expect(bad).to.be.instanceOf(DigestMismatchError);
    const again = await reopen();
    expect(await md5Of(again, 'spooled')).to.equal(md5hex(body));
    expect(again.head('spooled-empty')!.size).to.equal(0);
    expect(again.head('spooled-bad')).to.equal(undefined);
    const scratch = await fs.readdir(path.join(dir, 'zipkv-tmp')).catch(() => []);
    expect(scratch).to.deep.equal([]);
  });

  it('concurrent puts of one key: the last acknowledged one wins, after a reopen too', async () => {
    const s = await reopen();
    const results: string[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const body = pseudoRandomBytes(1000 + i * 100, i);
        await s.put('same', body);
        results.push(md5hex(body));
      }),
    );
    expect(await md5Of(s, 'same')).to.equal(results.at(-1));
    expect(await md5Of(await reopen(), 'same')).to.equal(results.at(-1));
  });

  it('writes are refused after close and on a read-only store', async () => {
    const s = await reopen();
    await s.put('a', Buffer.from('a'));
    await s.close();
    store = undefined;
    expect(await rejection(s.put('b', Buffer.from('b')))).to.be.instanceOf(StoreStateError);
    // Reads of a closed store fail instead of opening block files nobody would close.
    const info = s.head('a')!;
    expect(await rejection(s.read(info))).to.be.instanceOf(StoreStateError);
    expect(() => s.createReadStream(info)).to.throw(StoreStateError);
    const ro = await openStore(dir, { readOnly: true });
    try {
      expect(await rejection(ro.put('b', Buffer.from('b')))).to.be.instanceOf(StoreStateError);
      expect(await rejection(ro.delete('a'))).to.be.instanceOf(StoreStateError);
      expect((await ro.read(ro.head('a')!)).toString()).to.equal('a');
    } finally {
      await ro.close();
    }
  });

  it('close waits for writes in flight', async () => {
    const s = await reopen();
    const body = pseudoRandomBytes(300_000, 5);
    const slow = new Readable({ read() {} });
    const pending = s.put('slow', slow, { size: body.length });
    const closing = s.close();
    store = undefined;
    setTimeout(() => {
      slow.push(body.subarray(0, 100_000));
      setTimeout(() => {
        slow.push(body.subarray(100_000));
        slow.push(null);
      }, 20);
    }, 20);
    await pending;
    await closing;
    const again = await reopen();
    expect(await md5Of(again, 'slow')).to.equal(md5hex(body));
  });
});
