/** Memory the engine holds for bodies: bounded in total, whatever the clients do. */
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { BodyCache, CACHED_BODY_MAX } from '../../src/lib/store/body-cache.js';
import { BodySizeMismatchError } from '../../src/lib/store/errors.js';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { openStore, type Store } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';
import { md5Of, md5hex, pseudoRandomBytes } from './util.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `body` on a store whose block reads fail once `blockReadsFail` is called: what the store
 * serves after that comes from its cache of small bodies.
 */
async function withCacheOnlyReads(name: string, body: (store: Store, blockReadsFail: () => void) => Promise<void>): Promise<void> {
  const dir = await tempDir(name);
  const faults = new FaultyStorage(new LocalStorage(dir));
  const store = await openStore(dir, { storage: faults, fsync: false });
  try {
    await body(store, () => void faults.fail({ op: 'read', name: /^block/ }));
  } finally {
    faults.heal();
    await store.close();
  }
}

describe('store: memory for bodies', () => {
  it('1,000 slow uploads of small bodies hold at most 64 MiB until their commit, and all land', async function () {
    this.timeout(60_000);
    const store = await openStore(await tempDir('slow'), { fsync: false });
    try {
      const size = 100 * 1024;
      const streams = Array.from({ length: 1000 }, () => new PassThrough());
      const puts = streams.map((stream, i) => store.put(`slow/${i}`, stream, { size }));
      // Half of every body arrives, then the clients stall.
      streams.forEach((stream, i) => stream.write(pseudoRandomBytes(size, i).subarray(0, size / 2)));
      await sleep(200);
      const held = store.stats().heldBodyBytes;
      expect(held).to.be.at.most(64 * 1024 * 1024).and.above(0);
      streams.forEach((stream, i) => stream.end(pseudoRandomBytes(size, i).subarray(size / 2)));
      await Promise.all(puts);
      expect(store.stats().heldBodyBytes).to.equal(0);
      for (const i of [0, 1, 500, 999]) expect(await md5Of(store, `slow/${i}`)).to.equal(md5hex(pseudoRandomBytes(size, i)));
    } finally {
      await store.close();
    }
  });

  it('a small upload cut off mid-body, or failing, writes nothing and gives its memory back', async () => {
    const store = await openStore(await tempDir('cut'), { fsync: false });
    try {
      const revision = store.stats().revision;
      const gone = new PassThrough();
      gone.destroy(); // closed, and its 'close' emitted, before the store ever sees it
      const cut = new PassThrough();
      const cutPut = store.put('cut', cut, { size: 4096 });
      cut.write(Buffer.alloc(1000, 1));
      await sleep(20);
      expect(store.stats().heldBodyBytes).to.equal(4096);
      cut.destroy(); // the client went away
      const failing = new PassThrough();
      const failingPut = store.put('failing', failing, { size: 4096 });
      failing.write(Buffer.alloc(1000, 2));
      failing.destroy(new Error('the decoder failed'));
      const long = new PassThrough();
      const longPut = store.put('long', long, { size: 10 });
      long.end(Buffer.alloc(11, 3));
      const short = new PassThrough();
      const shortPut = store.put('short', short, { size: 10 });
      short.end(Buffer.alloc(9, 4));
      const gonePut = store.put('gone', gone, { size: 4096 });
      const errors = await Promise.all([cutPut, failingPut, longPut, shortPut, gonePut].map((p) => p.then(() => undefined, (err: Error) => err)));
      expect((errors[0] as NodeJS.ErrnoException | undefined)?.code).to.equal('ERR_STREAM_PREMATURE_CLOSE');
      expect(errors[1]?.message).to.equal('the decoder failed');
      expect(errors[2]).to.be.instanceOf(BodySizeMismatchError);
      expect(errors[3]).to.be.instanceOf(BodySizeMismatchError);
      expect((errors[4] as NodeJS.ErrnoException | undefined)?.code).to.equal('ERR_STREAM_PREMATURE_CLOSE');
      for (const key of ['cut', 'failing', 'long', 'short', 'gone']) expect(store.head(key), key).to.equal(undefined);
      expect(store.stats().heldBodyBytes).to.equal(0);
      expect(store.stats().revision).to.equal(revision);
      // The same body whole is stored, hashed in one call.
      const whole = new PassThrough();
      const wholePut = store.put('whole', whole, { size: 4096 });
      whole.end(pseudoRandomBytes(4096, 5));
      expect((await wholePut).etag).to.equal(md5hex(pseudoRandomBytes(4096, 5)));
    } finally {
      await store.close();
    }
  });

  it('streamed reads reuse piece buffers given back, never one still held: concurrent reads, some abandoned, are all intact', async function () {
    this.timeout(60_000);
    const store = await openStore(await tempDir('pieces'), { fsync: false });
    try {
      const sizes = [3 * 1024 * 1024 + 7, 2 * 1024 * 1024, 1024 * 1024 + 1, 5 * 1024 * 1024 + 3];
      for (let i = 0; i < sizes.length; i++) await store.put(`big/${i}`, pseudoRandomBytes(sizes[i]!, 10 + i));
      const memories = new Set<ArrayBufferLike>();
      let chunks = 0;
      // A consumer like the S3 GET: hashes a chunk, then gives it back; every third abandons its read.
      const readOnce = (i: number, n: number) =>
        new Promise<string | undefined>((resolve, reject) => {
          const stream = store.createReadStream(store.head(`big/${i}`)!);
          const hash = createHash('md5');
          let seen = 0;
          stream.on('data', (chunk: Buffer) => {
            hash.update(chunk);
            memories.add(chunk.buffer);
            chunks++;
            if (n % 3 === 2 && ++seen === 2) {
              stream.destroy();
              return resolve(undefined);
            }
            // Given back a little later, as a socket would once it has sent the bytes.
            setImmediate(() => store.recycle(chunk));
          });
          stream.on('end', () => resolve(hash.digest('hex')));
          stream.on('error', reject);
        });
      for (let round = 0; round < 4; round++) {
        const reads = Array.from({ length: 8 }, (_, n) => ({ i: n % sizes.length, n }));
        const digests = await Promise.all(reads.map(({ i, n }) => readOnce(i, n)));
        reads.forEach(({ i, n }, k) => {
          if (n % 3 !== 2) expect(digests[k], `read ${n} of big/${i}`).to.equal(md5hex(pseudoRandomBytes(sizes[i]!, 10 + i)));
        });
      }
      expect(memories.size, 'buffers were used again').to.be.below(chunks / 2);
      // A buffer given back twice, or one that was never lent, goes to one stream at most: the
      // first chunks of two reads at once, both still held, hold each its own bytes.
      const first = await new Promise<Buffer>((resolve) => store.createReadStream(store.head('big/0')!).once('data', resolve));
      store.recycle(first);
      store.recycle(first);
      store.recycle(Buffer.alloc(1024 * 1024));
      const [a, b] = await Promise.all(
        [0, 3].map((i) => new Promise<Buffer>((resolve) => store.createReadStream(store.head(`big/${i}`)!).once('data', resolve))),
      );
      expect(a!.equals(pseudoRandomBytes(sizes[0]!, 10).subarray(0, a!.length))).to.equal(true);
      expect(b!.equals(pseudoRandomBytes(sizes[3]!, 13).subarray(0, b!.length))).to.equal(true);
    } finally {
      await store.close();
    }
  });

  it('small bodies just written or read are served from memory; large ones from their block', () =>
    withCacheOnlyReads('cache', async (store, blockReadsFail) => {
      const small = pseudoRandomBytes(4096, 1);
      const large = pseudoRandomBytes(CACHED_BODY_MAX + 1, 2);
      await store.put('small', small);
      await store.put('large', large);
      blockReadsFail();
      const info = store.head('small')!;
      expect((await store.read(info)).equals(small)).to.equal(true);
      expect((await store.read(info, 100, 199)).equals(small.subarray(100, 200))).to.equal(true);
      let failed = false;
      await store.read(store.head('large')!).catch(() => (failed = true));
      expect(failed, 'a large body is not cached').to.equal(true);
    }));

  it("the cache never shares a caller's buffer: bytes written into it after the put change nothing served", () =>
    withCacheOnlyReads('cache-copy', async (store, blockReadsFail) => {
      const given = pseudoRandomBytes(4096, 3);
      const kept = Buffer.from(given);
      await store.put('given', given);
      given.fill(0); // the caller reuses its buffer
      // Streamed: one chunk, and one that is a slice of a much larger buffer.
      const streamed = pseudoRandomBytes(4096, 4);
      const one = new PassThrough();
      const onePut = store.put('one', one, { size: 4096 });
      one.end(Buffer.from(streamed));
      await onePut;
      const wide = Buffer.alloc(64 * 1024, 9);
      streamed.copy(wide, 1000);
      const slice = new PassThrough();
      const slicePut = store.put('slice', slice, { size: 4096 });
      slice.end(wide.subarray(1000, 1000 + 4096));
      await slicePut;
      wide.fill(0);
      blockReadsFail(); // served from the cache, or not at all
      expect((await store.read(store.head('given')!)).equals(kept)).to.equal(true);
      expect((await store.read(store.head('one')!)).equals(streamed)).to.equal(true);
      expect((await store.read(store.head('slice')!)).equals(streamed)).to.equal(true);
    }));

  it('the cache keeps the most recently used bodies within its bytes', () => {
    const cache = new BodyCache(10_000);
    for (let i = 0; i < 10; i++) cache.set(0, i * 4000, [Buffer.alloc(4000, i)]);
    expect(cache.size).to.be.at.most(10_000);
    expect(cache.get(0, 9 * 4000, 4000)?.[0]).to.equal(9);
    expect(cache.get(0, 0, 4000)).to.equal(undefined);
    expect(cache.get(0, 9 * 4000, 3999), 'a different size is not a hit').to.equal(undefined);
  });

  it('the cache never returns bytes other than those set for a place, whatever the order of sets and reads', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (const capacity of [10_000, 65_536, 200_000]) {
      const cache = new BodyCache(capacity);
      const truth = new Map<number, Buffer>();
      const handedOut: Array<{ got: Buffer; want: Buffer; step: number }> = [];
      let last: number | undefined;
      for (let step = 0; step < 20_000; step++) {
        const place = rand(300);
        if (rand(3) === 0) {
          // Sizes from 1 byte to the largest a cache takes, in one or several chunks.
          const size = 1 + (rand(10) === 0 ? rand(CACHED_BODY_MAX) : rand(5000));
          const body = pseudoRandomBytes(size, step);
          const cut = rand(size);
          cache.set(2, place * 100_000, cut > 0 && rand(2) === 0 ? [body.subarray(0, cut), body.subarray(cut)] : [body]);
          if (size <= capacity) {
            truth.set(place, body);
            last = place;
          } else {
            truth.delete(place);
            if (last === place) last = undefined;
          }
          expect(cache.size, `step ${step}`).to.be.at.most(capacity);
          if (last !== undefined) expect(cache.get(2, last * 100_000, truth.get(last)!.length), 'the body just set').to.not.equal(undefined);
        } else {
          const want = truth.get(place);
          if (!want) continue;
          const got = cache.get(2, place * 100_000, want.length);
          if (got) {
            expect(got.equals(want), `place ${place} at step ${step}`).to.equal(true);
            if (step % 50 === 0) handedOut.push({ got, want, step });
          }
        }
      }
      // A hit is the caller's own copy: later bodies written over the ring never change it.
      for (const { got, want, step } of handedOut) expect(got.equals(want), `the hit of step ${step}, read again at the end`).to.equal(true);
    }
  });

  it('the cache drops the least recently used first: a body read again outlives later ones', () => {
    const cache = new BodyCache(100_000);
    for (let i = 0; i < 20; i++) cache.set(1, i * 4096, [Buffer.alloc(4000, i)]);
    expect(cache.get(1, 0, 4000)?.[0], 'the first body, read again').to.equal(0);
    // 20 more bodies push out 20 or more of the older ones, oldest use first.
    for (let i = 20; i < 40; i++) cache.set(1, i * 4096, [Buffer.alloc(4000, i)]);
    expect(cache.size).to.be.at.most(100_000);
    expect(cache.get(1, 0, 4000)?.[0], 'read again, so kept').to.equal(0);
    expect(cache.get(1, 1 * 4096, 4000), 'the least recently used goes').to.equal(undefined);
    for (let i = 30; i < 40; i++) expect(cache.get(1, i * 4096, 4000)?.[0], `body ${i}`).to.equal(i);
  });
});
