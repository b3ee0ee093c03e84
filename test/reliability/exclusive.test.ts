/**
 * One writer per directory, at the server level: two `zipkv serve` started at the same instant
 * on one directory (fresh, and after a kill -9 left a stale lock), and `zipkv rebase DIR --to N`
 * while a server runs. The loser is refused with a clear message naming the pid that holds the
 * directory, and nothing the running server acknowledged changes. (test/cli/serve.test.ts
 * covers a second server started after the first one is up.)
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { runZipkv, startZipkvServe, type RunResult } from '../helpers/cli.js';
import { tempDir, zipkvBin } from '../helpers/paths.js';
import { fetchState, keyPath, listAll, md5hex, request } from './util.js';

const BUCKET = 'bucket';

interface Raced {
  pid: number;
  result?: RunResult;
  url?: string;
  stop: () => Promise<RunResult>;
}

/** Starts `zipkv serve` without waiting; resolves once it is serving or has exited. */
function spawnServe(dir: string): Promise<Raced> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [zipkvBin, 'serve', '-dir', dir, '-addr', '127.0.0.1:0', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const exited = new Promise<RunResult>((done) => child.on('close', (code, signal) => done({ code, signal, stdout, stderr })));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    };
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /on (http:\/\/\S+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ pid: child.pid!, url: m[1], stop });
      }
    });
    void exited.then((result) => {
      clearTimeout(timer);
      resolve({ pid: child.pid!, result, stop });
    });
  });
}

/** The pid of a process that has exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', '']);
    child.on('exit', () => resolve(child.pid!));
  });
}

/** oclif wraps long error lines and prefixes them with ' ›'; join them back. */
function flat(text: string): string {
  return text.replace(/\s*›\s*/g, ' ').replace(/\s+/g, ' ');
}

async function raceTwo(dir: string): Promise<{ winner: Raced; loser: Raced }> {
  const both = await Promise.all([spawnServe(dir), spawnServe(dir)]);
  const winners = both.filter((r) => r.url !== undefined);
  const losers = both.filter((r) => r.url === undefined);
  expect(winners, `exactly one serves: ${both.map((r) => flat(r.result?.stderr ?? 'serving')).join(' | ')}`).to.have.length(1);
  return { winner: winners[0]!, loser: losers[0]! };
}

describe('reliability: one writer per directory (zipkv serve, rebase)', function () {
  this.timeout(120_000);

  it('two servers started at the same instant: one serves, the other exits 2 naming its pid (fresh directory and stale lock, 3 rounds each)', async () => {
    for (let round = 0; round < 6; round++) {
      const dir = path.join(await tempDir('race'), 'store');
      if (round >= 3) {
        // A store whose server was killed: its lock names a dead process.
        const first = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
        expect((await request(first.url, 'PUT', keyPath(BUCKET, 'before'), { body: 'kept' })).status).to.equal(200);
        await first.stop('SIGKILL');
        expect(await fs.readFile(path.join(dir, 'zipkv.lock'), 'utf8')).to.match(/^\d+\n$/);
      }
      const { winner, loser } = await raceTwo(dir);
      try {
        expect(loser.result!.code, flat(loser.result!.stderr)).to.equal(2);
        expect(flat(loser.result!.stderr)).to.include(`is in use by process ${winner.pid}`);
        expect(loser.result!.stdout).to.not.match(/zipkv serving/);
        // The winner works, and kept what was there.
        expect((await request(winner.url!, 'PUT', keyPath(BUCKET, 'k'), { body: `round ${round}` })).status).to.equal(200);
        if (round >= 3) expect((await fetchState(winner.url!, BUCKET, 'before')).state?.md5).to.equal(md5hex(Buffer.from('kept')));
      } finally {
        const stopped = await winner.stop();
        expect(stopped.code, stopped.stderr).to.equal(0);
      }
      const again = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
      try {
        expect((await fetchState(again.url, BUCKET, 'k')).state?.md5).to.equal(md5hex(Buffer.from(`round ${round}`)));
      } finally {
        expect((await again.stop()).code).to.equal(0);
      }
    }
  });

  // Found by the soak run: a server killed while it took over a stale lock (a kill during
  // start-up after a crash) leaves zipkv.lock.break behind, and every start in the next 10 s
  // fails with "could not take the lock file".
  it('a lock and a break file left by a server killed while taking over a stale lock do not block the next start', async () => {
    const dir = path.join(await tempDir('stale-break'), 'store');
    const first = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
    expect((await request(first.url, 'PUT', keyPath(BUCKET, 'before'), { body: 'kept' })).status).to.equal(200);
    await first.stop('SIGKILL');
    // What the second server, killed between taking the break file and removing the stale lock, leaves.
    const dead = await deadPid();
    await fs.writeFile(path.join(dir, 'zipkv.lock.break'), `${dead}\n`);
    const again = await spawnServe(dir);
    const stopped = await again.stop();
    expect(again.url, `the next start: ${flat(again.result?.stderr ?? '')}`).to.not.equal(undefined);
    expect(stopped.code, stopped.stderr).to.equal(0);
  });

  it('rebase --to while a server runs is refused naming its pid, and changes nothing', async () => {
    const dir = path.join(await tempDir('rebase-live'), 'store');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', '4096']);
    try {
      const bodies = new Map<string, Buffer>();
      for (let i = 0; i < 12; i++) {
        const body = Buffer.from(`object ${i} `.repeat(100 + i * 30));
        bodies.set(`k${i}`, body);
        expect((await request(server.url, 'PUT', keyPath(BUCKET, `k${i}`), { body })).status).to.equal(200);
      }
      expect((await request(server.url, 'DELETE', keyPath(BUCKET, 'k3'))).status).to.equal(204);
      bodies.delete('k3');
      const filesBefore = await snapshot(dir);

      for (const args of [['rebase', dir, '--to', '0'], ['rebase', '-dir', dir, '--to', '5'], ['rebase', dir, '--to', '0', '--json']]) {
        const result = await runZipkv(args);
        expect(result.code, `${args.join(' ')}: ${result.stdout}${result.stderr}`).to.not.equal(0);
        expect(flat(result.stderr), args.join(' ')).to.include(`in use by process ${server.child.pid}`);
      }
      // Nothing moved: same files, same bytes, and the server still has every object and takes writes.
      const filesAfter = await snapshot(dir);
      expect([...filesAfter.keys()].sort()).to.deep.equal([...filesBefore.keys()].sort());
      for (const [name, bytes] of filesBefore) expect(filesAfter.get(name)!.equals(bytes), `${name} changed`).to.equal(true);
      const listed = (await listAll(server.url)).map((l) => l.key).sort();
      expect(listed).to.deep.equal([...bodies.keys()].sort());
      for (const [key, body] of bodies) expect((await fetchState(server.url, BUCKET, key)).state?.md5, key).to.equal(md5hex(body));
      expect((await request(server.url, 'PUT', keyPath(BUCKET, 'after'), { body: 'x' })).status).to.equal(200);
    } finally {
      const stopped = await server.stop();
      expect(stopped.code, stopped.stderr).to.equal(0);
    }
    // Once the server is gone the same rebase runs.
    const result = await runZipkv(['rebase', dir, '--to', '0']);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
  });
});

async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    if (entry.isFile()) out.set(entry.name, await fs.readFile(path.join(dir, entry.name)));
  }
  return out;
}
