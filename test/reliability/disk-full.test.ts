/**
 * Disk full: `zipkv serve` on a small tmpfs (8 MiB) that its own writes fill up. Requests that
 * need space fail with an S3 error document, the server stays up and keeps serving what it
 * acknowledged, writes succeed again once space is freed, and after a kill -9 while the disk is
 * full nothing acknowledged is lost.
 *
 * Needs root (mount -t tmpfs). Where mounting is not possible (not root, no tmpfs, a container
 * without CAP_SYS_ADMIN) the test is not registered at all. The mount is always undone in
 * `after`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startZipkvServe, type RunningServer } from '../helpers/cli.js';
import {
  Prng,
  type KeyState,
  type ObjState,
  describeState,
  fetchState,
  keyPath,
  listAll,
  md5hex,
  readAsOriginal,
  request,
  sameState,
  seedFromEnv,
  xmlOne,
} from './util.js';

const BUCKET = 'bucket';
const SIZE = '8m';

function mount(dir: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE},mode=0700`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'ignore' });
  } catch {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    } catch {
      // Nothing mounted there.
    }
  }
}

/** Whether a tmpfs can be mounted here: tried once, on a probe directory, and undone at once. */
async function canMountTmpfs(): Promise<boolean> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  const probe = await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-mount-probe-'));
  try {
    if (!mount(probe)) return false;
    unmount(probe);
    return true;
  } finally {
    await fs.rm(probe, { recursive: true, force: true });
  }
}

const available = await canMountTmpfs();

describe('reliability: disk full (zipkv serve on an 8 MiB tmpfs)', function () {
  this.timeout(120_000);
  if (!available) return; // not root, or no tmpfs here: nothing is registered

  let mountPoint: string;
  let server: RunningServer | undefined;

  before(async () => {
    mountPoint = await fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-full-'));
    if (!mount(mountPoint)) throw new Error(`could not mount a tmpfs on ${mountPoint}`);
  });

  after(async () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) await server.stop('SIGKILL');
    unmount(mountPoint);
    await fs.rm(mountPoint, { recursive: true, force: true });
  });

  it('fails writes with S3 errors while full, keeps serving, accepts writes once space is freed, loses nothing across kill -9', async () => {
    const seed = seedFromEnv();
    const rng = new Prng(seed);
    const dir = path.join(mountPoint, 'store');
    const filler = path.join(mountPoint, 'filler');
    const model = new Map<string, KeyState>();
    const uncertain = new Map<string, KeyState[]>(); // key -> states a request without a reply may have left
    const errorCodes = new Map<string, number>();
    const failures: string[] = [];
    let acked = 0;
    let refused = 0;
    let noReply = 0;
    const args = ['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', '262144', '--checkpoint-bytes', '8192'];

    // 5 MiB of the 8 are taken by something else; the store's own writes fill the rest.
    await fs.writeFile(filler, Buffer.alloc(5 * 1024 * 1024, 1));
    server = await startZipkvServe(args);

    let n = 0;
    /** One operation; returns 'acked', 'refused' (an S3 error) or 'no-reply'. */
    const operate = async (url: string, agent: http.Agent, client: number): Promise<string> => {
      const key = `c${client}/k${rng.int(0, 11)}`;
      const r = rng.next();
      let target = key;
      let expected: KeyState;
      let send: () => Promise<Awaited<ReturnType<typeof request>>>;
      const source = model.get(key);
      if (r < 0.7 || !source) {
        const body = rng.bytes(rng.int(0, 96 * 1024));
        const md5 = md5hex(body);
        const state: ObjState = { md5, size: body.length, etag: md5, contentType: 'application/octet-stream', meta: { 'x-amz-meta-n': String(n++) } };
        expected = state;
        send = () => request(url, 'PUT', keyPath(BUCKET, key), { agent, body, headers: { 'content-type': state.contentType, ...state.meta } });
      } else if (r < 0.85) {
        target = `${key}-copy`;
        const state: ObjState = { ...source, meta: { 'x-amz-meta-n': String(n++) } };
        expected = state;
        send = () =>
          request(url, 'PUT', keyPath(BUCKET, target), {
            agent,
            headers: { 'x-amz-copy-source': keyPath(BUCKET, key), 'x-amz-metadata-directive': 'REPLACE', 'content-type': state.contentType, ...state.meta },
          });
      } else {
        expected = undefined;
        send = () => request(url, 'DELETE', keyPath(BUCKET, key), { agent });
      }
      addUncertain(target, expected);
      let reply;
      try {
        reply = await send();
      } catch {
        noReply++;
        return 'no-reply';
      }
      if (reply.status === 200 || reply.status === 204) {
        acked++;
        model.set(target, expected);
        return 'acked';
      }
      refused++;
      const code = xmlOne(reply.body, 'Code');
      if (!code || !reply.body.includes('<Error>')) failures.push(`a ${reply.status} reply that is not an S3 error document: ${reply.body.toString().slice(0, 200)}`);
      errorCodes.set(`${reply.status} ${code}`, (errorCodes.get(`${reply.status} ${code}`) ?? 0) + 1);
      return 'refused';
    };
    function addUncertain(key: string, state: KeyState): void {
      const list = uncertain.get(key) ?? [];
      list.push(state);
      uncertain.set(key, list);
    }

    /** Four clients on their own keys, until `stop` says so. */
    const load = async (url: string, stop: (outcomes: string[]) => boolean): Promise<string[]> => {
      const outcomes: string[] = [];
      await Promise.all(
        [0, 1, 2, 3].map(async (client) => {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          try {
            while (!stop(outcomes)) outcomes.push(await operate(url, agent, client));
          } finally {
            agent.destroy();
          }
        }),
      );
      return outcomes;
    };

    /** Every acknowledged state is served (a key with a request that got no reply may show that request's state). */
    const checkServed = async (url: string, where: string): Promise<void> => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
      try {
        const listed = new Set((await listAll(url, BUCKET, agent)).map((l) => l.key));
        const keys = new Set([...listed, ...[...model].filter(([, s]) => s).map(([k]) => k)]);
        for (const key of keys) {
          const { state, problem } = await fetchState(url, BUCKET, key, agent);
          if (problem) failures.push(`${where}: ${problem}`);
          const expected = model.get(key);
          if (sameState(state, expected)) continue;
          if ((uncertain.get(key) ?? []).some((s) => sameState(s, state))) {
            model.set(key, state); // a request without a reply that landed
            continue;
          }
          failures.push(`${where}: ${key}: serves ${describeState(state)}, acknowledged ${describeState(expected)}`);
        }
      } finally {
        agent.destroy();
      }
    };

    // Phase 1: write until the disk is full, then keep going for a while.
    let firstRefusal = -1;
    const phase1 = await load(server.url, (o) => {
      if (firstRefusal < 0 && o.includes('refused')) firstRefusal = o.length;
      return o.length > 3000 || (firstRefusal >= 0 && o.length - firstRefusal > 60);
    });
    expect(firstRefusal, `the disk never filled up: ${phase1.length} operations`).to.be.greaterThan(0);
    expect(server.child.exitCode, 'the server is still running').to.equal(null);
    const df = execFileSync('df', ['-k', mountPoint]).toString();
    // Reads and listings still work, and every acknowledged object is intact.
    await checkServed(server.url, 'while full');
    uncertain.clear();

    // Phase 2: space is freed; writes succeed again, in the same process.
    await fs.truncate(filler, 0);
    const phase2 = await load(server.url, (o) => o.length >= 80);
    const ackedAfterFree = phase2.filter((o) => o === 'acked').length;
    expect(ackedAfterFree, `after freeing space: ${JSON.stringify(phase2)}`).to.be.greaterThan(70);
    await checkServed(server.url, 'after freeing space');
    uncertain.clear();

    // Phase 3: fill it again, kill -9 while full, try to start while still full, free space, restart.
    await fs.writeFile(filler, Buffer.alloc(0));
    let spare = 0;
    try {
      const handle = await fs.open(filler, 'a');
      try {
        const chunk = Buffer.alloc(256 * 1024, 2);
        for (;;) {
          await handle.write(chunk);
          spare += chunk.length;
        }
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    }
    await load(server.url, (o) => o.length >= 40);
    await server.stop('SIGKILL');
    server = undefined;
    let startedFull: string;
    try {
      const s = await startZipkvServe(args);
      startedFull = 'started';
      await checkServed(s.url, 'restarted while full');
      await s.stop('SIGKILL');
    } catch (err) {
      startedFull = `refused: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}`;
      expect((err as Error).message, 'a start that fails says why').to.match(/ENOSPC|no space|disk/i);
    }
    await fs.rm(filler);
    server = await startZipkvServe(args);
    await checkServed(server.url, 'restarted after freeing space');
    uncertain.clear();
    const stopped = await server.stop('SIGTERM');
    server = undefined;
    expect(stopped.code, stopped.stderr).to.equal(0);
    const view = await readAsOriginal(dir);
    expect(view.problems).to.deep.equal([]);
    const live = [...model].filter(([, s]) => s !== undefined) as Array<[string, ObjState]>;
    expect([...view.live.keys()].sort()).to.deep.equal(live.map(([k]) => k).sort());

    console.log(
      `      seed ${seed}: ${acked} acknowledged, ${refused} refused with S3 errors (${[...errorCodes].map(([c, k]) => `${c} x${k}`).join(', ')}), ` +
        `${noReply} without a reply; first refusal after ${firstRefusal} operations; ${ackedAfterFree}/80 acknowledged after freeing space; ` +
        `restart while full (${spare} bytes of filler): ${startedFull}; ${live.length} objects at the end\n      ${df.trim().split('\n').pop()}`,
    );
    expect(failures, failures.join('\n')).to.deep.equal([]);
    for (const code of errorCodes.keys()) expect(code, 'refusals while full').to.match(/^(503 ServiceUnavailable|500 InternalError)$/);
  });
});
