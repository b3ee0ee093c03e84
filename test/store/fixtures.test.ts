import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { openStore, type Store } from '../../src/lib/store/store.js';
import { copyFixture, readManifest, tempDir } from '../helpers/paths.js';

async function md5Of(store: Store, key: string): Promise<string> {
  const info = store.head(key)!;
  return createHash('md5').update(await store.read(info)).digest('hex');
}

function lowerKeys(m: Record<string, string> | null): Record<string, string> {
  return Object.fromEntries(Object.entries(m ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

function allKeys(store: Store): string[] {
  const keys: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = store.list({ after, limit: 1000 });
    keys.push(...page.objects.map((o) => o.key));
    if (!page.truncated) return keys;
    after = page.nextMarker;
  }
}

describe('store: directories the original wrote', () => {
  for (const name of ['basic', 'one-block', 'empty']) {
    it(`${name}: every live object's bytes and metadata match the manifest`, async () => {
      const manifest = await readManifest(name);
      const store = await openStore(await copyFixture(name), { readOnly: true });
      try {
        const expected = Object.keys(manifest.live).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        expect(allKeys(store)).to.deep.equal(expected);
        for (const [key, live] of Object.entries(manifest.live)) {
          const info = store.head(key)!;
          expect(info, key).to.not.equal(undefined);
          expect(info.size, key).to.equal(live.size);
          expect(await md5Of(store, key), key).to.equal(live.md5);
          expect(await store.etagOf(info), key).to.equal(live.md5);
          expect(lowerKeys(info.metadata), key).to.deep.equal(lowerKeys(live.metadata));
        }
        expect(store.revision).to.equal(manifest.history.length - 1);
      } finally {
        await store.close();
      }
    });
  }

  it('basic opened at revision 120 holds exactly the live set of rebase-120', async () => {
    const rebased = await readManifest('rebase-120');
    const store = await openStore(await copyFixture('basic'), { revision: 120 });
    try {
      expect(store.revision).to.equal(120);
      expect(allKeys(store).sort()).to.deep.equal(Object.keys(rebased.live).sort());
      for (const [key, live] of Object.entries(rebased.live)) {
        expect(await md5Of(store, key), key).to.equal(live.md5);
        expect(lowerKeys(store.head(key)!.metadata), key).to.deep.equal(lowerKeys(live.metadata));
      }
    } finally {
      await store.close();
    }
  });

  it('a missing directory is an empty store', async () => {
    const store = await openStore(`${await tempDir()}/does-not-exist`, { readOnly: true });
    expect(store.revision).to.equal(-1);
    expect(store.list({ limit: 10 }).objects).to.deep.equal([]);
    await store.close();
  });
});
