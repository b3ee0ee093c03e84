import { expect } from 'chai';
import { IndexEntry, ObjectIndex, toRawKey } from '../../src/lib/store/object-index.js';

let seed = 99;
function rand(n: number): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
}

function randomEntry(i: number): IndexEntry {
  const md5 = rand(4) ? Buffer.from(Array.from({ length: 16 }, () => rand(256))).toString('hex') : undefined;
  const meta = rand(3) ? Buffer.from(`meta-${i}-é`).toString('latin1') : undefined;
  const etag = rand(10) === 0 ? `etag-${i}-2` : undefined;
  return new IndexEntry(rand(50), rand(1 << 30), rand(1 << 20), meta, md5, rand(3) ? 1_700_000_000 + i : 0, etag);
}

function randomKey(space: number): string {
  const n = rand(space);
  return toRawKey(['k', 'dir/', '\u{1F600}', '\uE000', 'é'][n % 5]! + String(n));
}

type Model = Map<string, IndexEntry>;

function expectSame(index: ObjectIndex, model: Model, label: string): void {
  const keys = [...model.keys()].sort();
  expect(index.size, label).to.equal(model.size);
  expect([...index.keysFrom('')], label).to.deep.equal(keys);
  let bytes = 0;
  for (const [key, entry] of model) {
    expect(index.get(key), `${label}: ${key}`).to.deep.equal(entry);
    expect(index.has(key)).to.equal(true);
    bytes += entry.size;
  }
  expect(index.liveBytes, label).to.equal(bytes);
  const from = keys[Math.floor(keys.length / 2)] ?? '';
  expect([...index.from(from)].map(([k, e]) => [k, e]), label).to.deep.equal(keys.filter((k) => k >= from).map((k) => [k, model.get(k)]));
}

function randomOps(index: ObjectIndex, model: Model, count: number, space: number): void {
  for (let i = 0; i < count; i++) {
    const key = randomKey(space);
    if (rand(3) === 0) {
      const existed = index.delete(key);
      expect(existed).to.equal(model.delete(key));
    } else {
      const entry = randomEntry(i);
      index.set(key, entry);
      model.set(key, entry);
    }
  }
}

describe('store: the object index', () => {
  it('matches a plain map through random sets and deletes', () => {
    const index = new ObjectIndex();
    const model: Model = new Map();
    for (let round = 0; round < 5; round++) {
      randomOps(index, model, 3000, 500 + round * 300);
      expectSame(index, model, `round ${round}`);
    }
  });

  for (const [label, records, space, deleteShare] of [
    ['unique keys in order, no deletes', 5000, 0, 0],
    ['few overwrites and deletes (dead slots reused)', 5000, 100_000, 0.02],
    ['many overwrites and deletes (dead slots squeezed out)', 20_000, 700, 0.3],
    ['everything deleted', 2000, 300, 1],
  ] as const) {
    it(`a bulk replay gives the state after the last record: ${label}`, () => {
      const index = new ObjectIndex();
      const model: Model = new Map();
      index.beginBulk();
      for (let i = 0; i < records; i++) {
        const key = space === 0 ? toRawKey(`obj/${String(i).padStart(6, '0')}`) : randomKey(space);
        if (rand(1000) < deleteShare * 1000 || deleteShare === 1) {
          index.delete(key);
          model.delete(key);
        } else {
          const entry = randomEntry(i);
          if (i % 2) {
            index.set(key, entry);
          } else {
            const md5 = entry.md5 ? Buffer.from(entry.md5, 'hex') : undefined;
            const buf = Buffer.concat([Buffer.alloc(3), md5 ?? Buffer.alloc(0)]);
            index.setFields(key, {
              block: entry.block,
              offset: entry.offset,
              size: entry.size,
              meta: entry.meta,
              buf,
              md5At: md5 ? 3 : -1,
              modifiedMs: entry.mtime * 1000,
              etag: entry.etag,
              keptRevision: -1,
            });
          }
          model.set(key, entry);
        }
      }
      expect(() => index.get('x')).to.throw();
      index.endBulk();
      expectSame(index, model, 'after the replay');
      // And it keeps working as an ordinary index afterwards.
      randomOps(index, model, 4000, 2000);
      expectSame(index, model, 'after more writes');
    });
  }

  it('a bulk replay orders keys of every length over a tiny alphabet (shared prefixes, chunk edges, duplicates)', () => {
    for (const count of [0, 1, 2, 17, 40, 3000]) {
      const index = new ObjectIndex();
      const model: Model = new Map();
      index.beginBulk();
      for (let i = 0; i < count; i++) {
        const length = rand(15);
        const key = Array.from({ length }, () => ['\x00', 'a', '\xff'][rand(3)]!).join('');
        const entry = randomEntry(i);
        index.set(key, entry);
        model.set(key, entry);
      }
      index.endBulk();
      expectSame(index, model, `${count} keys`);
    }
  });

  it('remembers a computed MD5 only while the key holds the same bytes', () => {
    const index = new ObjectIndex();
    const original = new IndexEntry(1, 2, 3, undefined, undefined, 0, undefined);
    index.set('a', original);
    index.rememberMd5('a', original, 'ab'.repeat(16));
    expect(index.get('a')!.md5).to.equal('ab'.repeat(16));
    const other = new IndexEntry(4, 5, 6, undefined, undefined, 0, undefined);
    index.set('b', other);
    index.set('b', new IndexEntry(7, 8, 9, undefined, undefined, 0, undefined));
    index.rememberMd5('b', other, 'cd'.repeat(16));
    expect(index.get('b')!.md5).to.equal(undefined);
  });
});
