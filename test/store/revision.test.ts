import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { StoreCorruptError, StoreError } from '../../src/lib/store/errors.js';
import { openStore } from '../../src/lib/store/store.js';
import { copyFixture, tempDir } from '../helpers/paths.js';

async function openFails(dir: string, revision: number): Promise<StoreError> {
  try {
    const store = await openStore(dir, { revision });
    await store.close();
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error('expected the open to fail');
}

describe('store: opening at a revision', () => {
  it('a revision beyond the history is a clear error, not the latest state', async () => {
    const dir = await copyFixture('one-block'); // 7 records: revisions 0..6
    const at6 = await openStore(dir, { revision: 6 });
    expect(at6.revision).to.equal(6);
    await at6.close();
    const err = await openFails(dir, 7);
    expect(err.code).to.equal('ERANGE');
    expect(err.message).to.match(/revision 7 is out of range: .* holds revisions 0\.\.6$/);
  });

  it('refuses a journal that continues past the db, as a plain open does', async () => {
    const dir = path.join(await tempDir('rev'), 'd');
    const store = await openStore(dir, { fsync: false });
    await store.put('a', Buffer.from('1'));
    await store.put('b', Buffer.from('2'));
    await store.close();
    const saved = await fs.readFile(path.join(dir, 'db0000000000'));
    const again = await openStore(dir, { fsync: false });
    await again.put('c', Buffer.from('3'));
    await again.close(); // db now in slot 1, journal based at revision 3
    // Put the older db back in place of the newer one: the journal is then ahead of it.
    await fs.rm(path.join(dir, 'db0000000001'));
    await fs.writeFile(path.join(dir, 'db0000000000'), saved);
    const err = await openFails(dir, 0);
    expect(err).to.be.instanceOf(StoreCorruptError);
    expect(err.message).to.match(/older than the journal/);
  });
});
