import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { StoreLockedError } from '../../src/lib/store/errors.js';
import { openStore } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lock-child.js');

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the promise to be rejected');
}

function run(dir: string, mode: 'hold' | 'try'): ChildProcess {
  return spawn(process.execPath, [child, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
}

function firstLine(proc: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    proc.on('exit', (code, signal) => reject(new Error(`child ended (${code ?? signal}) before printing anything`)));
  });
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.on('exit', () => resolve());
  });
}

async function tryInChild(dir: string): Promise<{ ok: boolean; name?: string; code?: string; message?: string }> {
  const proc = run(dir, 'try');
  const line = await firstLine(proc);
  await exited(proc);
  return JSON.parse(line) as { ok: boolean; name?: string; code?: string; message?: string };
}

describe('store: directory lock', function () {
  this.timeout(30_000);

  it('a second opener in the same process is refused, naming the pid', async () => {
    const dir = await tempDir('lock');
    const first = await openStore(dir);
    try {
      const err = await rejection(openStore(dir));
      expect(err).to.be.instanceOf(StoreLockedError);
      expect(err.message).to.include(String(process.pid));
      expect(err.message).to.include(dir);
      // The refused opener changed nothing: the first one still works.
      await first.put('k', Buffer.from('v'));
      // A read-only opener takes no lock.
      const ro = await openStore(dir, { readOnly: true });
      await ro.close();
    } finally {
      await first.close();
    }
    const again = await openStore(dir);
    expect(again.head('k')).to.not.equal(undefined);
    await again.close();
  });

  it('of several openers racing in one process, exactly one wins', async () => {
    const dir = await tempDir('lock-race');
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => openStore(dir)));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).to.have.length(1);
    for (const r of lost) expect(r.reason).to.be.instanceOf(StoreLockedError);
    await (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof openStore>>>).value.close();
    const leftovers = (await fs.readdir(dir)).filter((n) => n.startsWith('zipkv.lock'));
    expect(leftovers).to.deep.equal([]);
  });

  it('an opener in another process is refused while this one holds the store, and succeeds after close', async () => {
    const dir = await tempDir('lock-other');
    const store = await openStore(dir);
    const refused = await tryInChild(dir);
    expect(refused.ok).to.equal(false);
    expect(refused.name).to.equal('StoreLockedError');
    expect(refused.code).to.equal('ELOCKED');
    expect(refused.message).to.include(String(process.pid));
    await store.close();
    expect((await tryInChild(dir)).ok).to.equal(true);
  });

  it('this process is refused while another process holds the store', async () => {
    const dir = await tempDir('lock-held');
    const holder = run(dir, 'hold');
    try {
      const line = await firstLine(holder);
      expect(line).to.equal(`open ${holder.pid}`);
      const err = await rejection(openStore(dir));
      expect(err).to.be.instanceOf(StoreLockedError);
      expect(err.message).to.include(String(holder.pid));
    } finally {
      holder.kill('SIGKILL');
      await exited(holder);
    }
  });

  it('a lock left by a process killed with kill -9 does not block the next open', async () => {
    const dir = await tempDir('lock-stale');
    const holder = run(dir, 'hold');
    await firstLine(holder);
    holder.kill('SIGKILL');
    await exited(holder);
    expect((await fs.readdir(dir)).includes('zipkv.lock')).to.equal(true);
    const store = await openStore(dir);
    expect((await store.read(store.head('held-by')!)).toString()).to.equal(String(holder.pid));
    await store.close();
    // And in another process too.
    const holder2 = run(dir, 'hold');
    await firstLine(holder2);
    holder2.kill('SIGKILL');
    await exited(holder2);
    expect((await tryInChild(dir)).ok).to.equal(true);
  });

  it('openers racing over a stale lock: exactly one takes it over', async () => {
    const dead = run(await tempDir('lock-dead'), 'hold');
    await firstLine(dead);
    dead.kill('SIGKILL');
    await exited(dead);
    for (let round = 0; round < 20; round++) {
      const dir = await tempDir('lock-stale-race');
      await fs.writeFile(path.join(dir, 'zipkv.lock'), `${dead.pid}\n`);
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => openStore(dir)));
      const won = results.filter((r) => r.status === 'fulfilled');
      for (const r of results) if (r.status === 'rejected') expect(r.reason).to.be.instanceOf(StoreLockedError);
      for (const r of won) await (r as PromiseFulfilledResult<Awaited<ReturnType<typeof openStore>>>).value.close();
      expect(won, `round ${round}`).to.have.length(1);
    }
  });

  it('a lock file holding garbage (no live pid) does not block the next open', async () => {
    const dir = await tempDir('lock-garbage');
    await fs.writeFile(path.join(dir, 'zipkv.lock'), 'not a pid');
    const store = await openStore(dir);
    await store.close();
  });
});
