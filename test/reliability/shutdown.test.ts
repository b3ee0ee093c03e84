/**
 * Clean shutdown of the real `zipkv serve`: SIGTERM (or SIGINT) while clients are writing.
 * Every acknowledged write is in the store afterwards, and the directory is one the original
 * zipkvserver reads: exactly one db%010d, next_backend_file equal to the number of block files,
 * every record complete (decoded by reflection after gunzip, not by zipkv's own reader), the
 * bytes of every live object where the db says they are. Also: a signal right after the
 * start-up line, an upload in flight at the signal, and an upload that stalls at the signal.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { startZipkvServe } from '../helpers/cli.js';
import { tempDir } from '../helpers/paths.js';
import { formatSummary, internalErrors, makeKeys, newRunState, startWorkload, verifyAgainstModel, type RunState } from './crash-cycles.js';
import { Prng, type ObjState, fetchState, md5hex, readAsOriginal, readFromBlock, sameState, seedFromEnv, sleep } from './util.js';

const BUCKET = 'bucket';

/** The live objects of the db as the original sees them must be the model's (in-flight operations either way). */
async function checkOriginalView(dir: string, run: RunState): Promise<string[]> {
  const problems: string[] = [];
  const view = await readAsOriginal(dir);
  problems.push(...view.problems);
  const names = await fs.readdir(dir);
  for (const n of names) {
    if (n === 'zipkv.lock' || n.endsWith('.zipkv-tmp') || n === 'zipkv-tmp') problems.push(`left behind after a clean stop: ${n}`);
  }
  const journal = await fs.readFile(path.join(dir, 'zipkv-journal'));
  if (journal.length !== 16) problems.push(`the journal holds ${journal.length - 16} bytes of records after a clean stop`);
  const pendingStates = new Map<string, Array<ObjState | undefined>>();
  for (const op of run.pending) for (const [k, s] of op.outcomes) pendingStates.set(k, [...(pendingStates.get(k) ?? []), s]);
  const keys = new Set([...view.live.keys(), ...[...run.model].filter(([, s]) => s).map(([k]) => k), ...pendingStates.keys()]);
  for (const key of keys) {
    const loc = view.live.get(key);
    let observed: Omit<ObjState, 'etag'> | undefined;
    if (loc) {
      const meta: Record<string, string> = {};
      for (const [name, value] of Object.entries(loc.metadata)) if (name.startsWith('x-amz-meta-')) meta[name] = value;
      observed = { md5: md5hex(await readFromBlock(dir, loc)), size: loc.size, contentType: loc.metadata['Content-Type'] ?? '', meta };
    }
    const allowed = [run.model.get(key), ...(pendingStates.get(key) ?? [])];
    const ok = allowed.some((s) => (s === undefined || observed === undefined ? s === observed : sameState({ ...observed, etag: s.etag }, s)));
    if (!ok) problems.push(`${key}: the db says ${observed ? `${observed.size}B ${observed.md5} ${JSON.stringify(observed.meta)}` : 'absent'}, acknowledged ${JSON.stringify(run.model.get(key))}`);
  }
  return problems;
}

describe('reliability: clean shutdown of zipkv serve under load', function () {
  this.timeout(120_000);

  for (const { label, bs, signal } of [
    { label: 'a 1 KiB block size (a new block for nearly every PUT)', bs: 1024, signal: 'SIGTERM' as const },
    { label: 'a 256 KiB block size', bs: 262_144, signal: 'SIGTERM' as const },
    { label: 'the default block size, SIGINT', bs: undefined, signal: 'SIGINT' as const },
  ]) {
    it(`${signal} while 6 clients write, ${label}: every acknowledged write is kept, the directory is the original's`, async () => {
      const seed = seedFromEnv();
      const rng = new Prng(seed);
      const dir = path.join(await tempDir('shutdown'), 'store');
      const args = ['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', ...(bs ? ['-bs', String(bs)] : [])];
      const run = newRunState(seed);
      const keys = makeKeys(30);
      // A first session, so that the second one starts from a db and a journal.
      for (let session = 0; session < 2; session++) {
        const server = await startZipkvServe(args);
        if (session > 0) await verifyAgainstModel(run, server.url, `session ${session} start`);
        const workload = startWorkload(server.url, run, { blockSize: bs ?? 40 * 1024 * 1024, maxBodySize: 600_000, bigBodyChance: 0.03, keys, clients: 6, cycle: session }, rng);
        await sleep(rng.int(500, 1500));
        workload.ctx.killing = true; // replies refused or cut by the shutdown are expected from here on
        const result = await server.stop(signal);
        await workload.stop();
        const detail = `seed ${seed}\n${formatSummary(run.summary)}\n${result.stdout}\n${result.stderr}`;
        expect(result.code, detail).to.equal(0);
        expect(result.stdout, detail).to.match(/zipkv stopped cleanly/);
        expect(internalErrors(result.stdout + result.stderr), detail).to.deep.equal([]);
        const problems = await checkOriginalView(dir, run);
        expect(problems, `${detail}\n${problems.join('\n')}`).to.deep.equal([]);
      }
      // And zipkv itself serves exactly that.
      const server = await startZipkvServe(args);
      await verifyAgainstModel(run, server.url, 'after the clean stops');
      expect((await server.stop()).code).to.equal(0);
      const s = run.summary;
      expect(s.problems, formatSummary(s)).to.deep.equal([]);
      expect(s.lost + s.corrupted + s.wrongReads + s.unexpected, formatSummary(s)).to.equal(0);
      expect(s.acknowledged).to.be.greaterThan(20);
      console.log(`      seed ${seed}: ${s.acknowledged} acknowledged, ${s.inFlightAtKill} without a reply at the signal (${s.inFlightLanded} of them landed)`);
    });
  }

  it('a signal right after the start-up line still stops cleanly (10 times)', async () => {
    const dir = path.join(await tempDir('shutdown-early'), 'store');
    for (let i = 0; i < 10; i++) {
      const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
      const result = await server.stop(i % 2 === 0 ? 'SIGTERM' : 'SIGINT');
      expect(result.code, `round ${i}: ${result.signal} ${result.stdout}${result.stderr}`).to.equal(0);
      expect(result.stdout).to.match(/zipkv stopped cleanly/);
    }
  });

  it('an upload in flight at SIGTERM is finished and kept; one that stalls is cut off by the idle timeout and leaves nothing', async () => {
    const dir = path.join(await tempDir('shutdown-inflight'), 'store');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '--idle-timeout', '2']);
    const port = Number(new URL(server.url).port);
    const body = new Prng(5).bytes(3 * 1024 * 1024);
    const rawPut = (key: string) => {
      const socket = net.connect(port, '127.0.0.1');
      let reply = '';
      socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
      const closed = new Promise<string>((resolve) => {
        socket.on('close', () => resolve(reply));
        socket.on('error', () => undefined);
      });
      socket.write(`PUT /${BUCKET}/${key} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
      return { socket, closed };
    };
    const finishing = rawPut('finishing');
    const stalling = rawPut('stalling');
    finishing.socket.write(body.subarray(0, 1024 * 1024));
    stalling.socket.write(body.subarray(0, 1024 * 1024));
    await sleep(300);
    const started = Date.now();
    const stopped = server.stop('SIGTERM');
    await sleep(500);
    finishing.socket.write(body.subarray(1024 * 1024)); // not end(): a half-close aborts the request in node:http
    const finishedReply = await finishing.closed;
    const result = await stopped;
    const tookMs = Date.now() - started;
    stalling.socket.destroy();
    expect(finishedReply, 'the upload in flight got its reply').to.match(/^HTTP\/1\.1 200 /);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    expect(tookMs, 'the stalled upload held the shutdown for about the idle timeout, not forever').to.be.lessThan(10_000);
    const view = await readAsOriginal(dir);
    expect(view.problems).to.deep.equal([]);
    expect([...view.live.keys()]).to.deep.equal(['finishing']);
    expect(md5hex(await readFromBlock(dir, view.live.get('finishing')!))).to.equal(md5hex(body));
    const again = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
    try {
      const { state } = await fetchState(again.url, BUCKET, 'finishing');
      expect(state?.md5).to.equal(md5hex(body));
      expect((await fetchState(again.url, BUCKET, 'stalling')).state).to.equal(undefined);
    } finally {
      expect((await again.stop()).code).to.equal(0);
    }
  });
});
