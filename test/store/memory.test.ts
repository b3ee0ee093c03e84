/** Memory the engine holds for bodies: bounded in total, whatever the clients do. */
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { BodyCache, CACHED_BODY_MAX } from '../../src/lib/store/body-cache.js';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { openStore } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';
import { md5Of, md5hex, pseudoRandomBytes } from './util.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

  it('small bodies just written or read are served from memory; large ones from their block', async () => {
    const dir = await tempDir('cache');
    const faults = new FaultyStorage(new LocalStorage(dir));
    const store = await openStore(dir, { storage: faults, fsync: false });
    try {
      const small = pseudoRandomBytes(4096, 1);
      const large = pseudoRandomBytes(CACHED_BODY_MAX + 1, 2);
      await store.put('small', small);
      await store.put('large', large);
      faults.fail({ op: 'read', name: /^block/ });
      const info = store.head('small')!;
      expect((await store.read(info)).equals(small)).to.equal(true);
      expect((await store.read(info, 100, 199)).equals(small.subarray(100, 200))).to.equal(true);
      let failed = false;
      await store.read(store.head('large')!).catch(() => (failed = true));
      expect(failed, 'a large body is not cached').to.equal(true);
    } finally {
      faults.heal();
      await store.close();
    }
  });

  it('the cache keeps the most recently used bodies within its bytes', () => {
    const cache = new BodyCache(10_000);
    for (let i = 0; i < 10; i++) cache.set(0, i * 4000, Buffer.alloc(4000, i));
    expect(cache.size).to.be.at.most(10_000);
    expect(cache.get(0, 9 * 4000, 4000)?.[0]).to.equal(9);
    expect(cache.get(0, 0, 4000)).to.equal(undefined);
    expect(cache.get(0, 9 * 4000, 3999), 'a different size is not a hit').to.equal(undefined);
  });
});
