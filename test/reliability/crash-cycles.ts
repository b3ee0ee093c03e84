/**
 * Crash cycles against the real `zipkv serve`: several clients PUT (0 bytes to a few MB, some
 * larger than the block size), overwrite, copy, delete (one key and DeleteObjects) and complete
 * multipart uploads; the server is killed with SIGKILL at a moment chosen to be interesting; it
 * is restarted on the same directory and every acknowledged operation is checked over HTTP.
 *
 * The rules checked after each restart, per key:
 * - an acknowledged state (a 2xx reply) is there with the right bytes, ETag, Content-Type and
 *   user metadata; an acknowledged delete stays deleted;
 * - an operation in flight at the kill (sent, no reply) may have landed or not, never anything
 *   else: its key shows either the state before it or the state it asked for.
 * A key that shows an older acknowledged state, or is missing, is a loss; a key whose bytes or
 * metadata match nothing that was ever written to it is a corruption.
 *
 * Kill moments: after a random delay; at the instant a checkpoint starts (a `*.zipkv-tmp` file
 * appears: the next db or journal being written); at the instant a new block file appears (a
 * roll-over; with a small block size that is nearly every PUT); and, before some cycles, during
 * the recovery at start-up (which writes a checkpoint itself). Operations on one key never
 * overlap (clients lock keys), so each key's history is a sequence and the model is exact.
 * Everything is driven by one seeded PRNG; the seed is printed so that a run can be repeated
 * (the interleaving of clients still depends on timing).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import { runZipkv, startZipkvServe, type RunningServer } from '../helpers/cli.js';
import { zipkvBin } from '../helpers/paths.js';
import {
  Prng,
  type KeyState,
  type ObjState,
  describeState,
  fetchState,
  keyPath,
  listAll,
  md5base64,
  md5hex,
  readAsOriginal,
  readFromBlock,
  request,
  sameState,
  sleep,
  xmlAll,
  xmlOne,
} from './util.js';

export interface CrashCycleOptions {
  /** Store directory; created by the first start, kept across every cycle. */
  dir: string;
  seed: number;
  cycles: number;
  /** No new cycle starts after this many milliseconds (the final check still runs). */
  timeLimitMs?: number;
  blockSize: number;
  /** Passed as the hidden `--checkpoint-bytes` flag: checkpoints every few KB of journal. */
  checkpointBytes?: number;
  clients: number;
  /** Number of distinct keys; a small key space means many overwrites. */
  keySpace: number;
  /** Largest body; bodies above the block size get a block of their own. */
  maxBodySize: number;
  /** Chance that a PUT body is larger than the block size. */
  bigBodyChance: number;
  /** Delay before a timed kill, and the longest wait for a checkpoint or roll-over to kill in. */
  loadMs: [number, number];
  /** Passed as --keep-history (with --compaction-interval 200): kills then also land in compactions. */
  keepHistory?: string;
  /** Chance that a cycle also kills the server while it recovers at start-up. */
  startupKillChance?: number;
  log?: (line: string) => void;
}

export type KillMode = 'timer' | 'checkpoint' | 'rollover' | 'compaction';

export interface CrashSummary {
  seed: number;
  cycles: number;
  elapsedMs: number;
  /** Operations that got a 2xx reply, by kind. */
  acknowledged: number;
  acknowledgedByKind: Record<string, number>;
  /** Acknowledged states missing or rolled back after a restart. */
  lost: number;
  /** Objects whose bytes or metadata match nothing ever written to their key. */
  corrupted: number;
  /** Operations sent without a reply when the server was killed, and how many of them landed. */
  inFlightAtKill: number;
  inFlightLanded: number;
  /** Replies other than the expected 2xx (or connection errors) from a server that was not being killed. */
  unexpected: number;
  /** GETs during the load that served something other than the acknowledged state. */
  wrongReads: number;
  /** Kills at the end of a cycle, by how the moment was chosen (a fallback to the timer counts as timer). */
  kills: Record<KillMode, number>;
  /** Kills during the recovery at start-up. */
  startupKills: number;
  /** Kills after which the directory held a half-written checkpoint (a *.zipkv-tmp file, or two db slots). */
  killsMidCheckpoint: number;
  /** Block files created during the run (roll-overs plus oversized bodies). */
  blocksCreated: number;
  /** Recovery warnings printed by the server at start-up (torn journal tails and the like). */
  recoveryWarnings: number;
  /** Starts after a kill that failed (the store did not open): the run stops at the first. */
  startFailures: number;
  finalRevision: number | undefined;
  finalObjects: number;
  /** The first problems found, described. */
  problems: string[];
}

const BUCKET = 'bucket';
const CONTENT_TYPES = ['application/octet-stream', 'text/plain', 'image/png', 'application/x-zipkv-test; v=1'];

/** Keys with characters that need escaping in paths, copy sources and XML. */
export function makeKeys(n: number): string[] {
  const keys: string[] = [];
  for (let i = 0; i < n; i++) {
    switch (i % 4) {
      case 0: keys.push(`k${i}`); break;
      case 1: keys.push(`dir${i % 3}/obj ${i}`); break;
      case 2: keys.push(`plus+${i}&amp`); break;
      default: keys.push(`ü/${i}/<q>'"`); break;
    }
  }
  return keys;
}

export interface InFlight {
  kind: string;
  /** key -> the state the operation asks for. */
  outcomes: Map<string, KeyState>;
}

export interface RunState {
  model: Map<string, KeyState>;
  /** The last 64 states acknowledged or asked for, per key: tells a rollback from garbage. */
  known: Map<string, KeyState[]>;
  pending: InFlight[];
  summary: CrashSummary;
}

function remember(run: RunState, key: string, state: KeyState): void {
  if (!state) return;
  const list = run.known.get(key) ?? [];
  if (!list.some((s) => sameState(s, state))) list.push(state);
  if (list.length > 64) list.splice(0, list.length - 64); // bounded: long runs would otherwise grow without end
  run.known.set(key, list);
}

function problem(run: RunState, text: string): void {
  if (run.summary.problems.length < 50) run.summary.problems.push(text);
}

function serveArgs(opts: CrashCycleOptions): string[] {
  const args = ['-dir', opts.dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', String(opts.blockSize)];
  if (opts.checkpointBytes !== undefined) args.push('--checkpoint-bytes', String(opts.checkpointBytes));
  if (opts.keepHistory !== undefined) args.push('--keep-history', opts.keepHistory, '--compaction-interval', '200');
  return args;
}

function countWarnings(output: string): number {
  return output.split('\n').filter((l) => /zipkv-journal|ignor|torn|recovery/i.test(l) && !/^zipkv serving/.test(l)).length;
}

export function internalErrors(output: string): string[] {
  return output.split('\n').filter((l) => /internal error/i.test(l));
}

async function dirNames(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch {
    return [];
  }
}

function looksMidCheckpoint(names: string[]): boolean {
  return names.some((n) => n.endsWith('.zipkv-tmp')) || names.filter((n) => /^db\d{10}$/.test(n)).length > 1;
}

// ------------------------------------------------------------------ verification after a restart

/** Checks the served state against the model, resolves operations in flight, updates the model. */
export async function verifyAgainstModel(run: RunState, url: string, where: string): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  try {
    const listed = new Map((await listAll(url, BUCKET, agent)).map((l) => [l.key, l]));
    const keys = new Set<string>(listed.keys());
    for (const [k, s] of run.model) if (s) keys.add(k);
    const pendingByKey = new Map<string, Array<{ op: InFlight; state: KeyState }>>();
    for (const op of run.pending) {
      for (const [k, s] of op.outcomes) {
        keys.add(k);
        const list = pendingByKey.get(k) ?? [];
        list.push({ op, state: s });
        pendingByKey.set(k, list);
      }
    }
    const landed = new Set<InFlight>();
    const work = [...keys];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let key = work.pop(); key !== undefined; key = work.pop()) {
          const fetched = await fetchState(url, BUCKET, key, agent);
          if (fetched.problem) {
            run.summary.corrupted++;
            problem(run, `${where}: ${fetched.problem}`);
          }
          const observed = fetched.state;
          const entry = listed.get(key);
          if ((entry !== undefined) !== (observed !== undefined)) {
            run.summary.corrupted++;
            problem(run, `${where}: ${key}: listing ${entry ? 'shows' : 'omits'} it but GET ${observed ? 'finds' : 'does not find'} it`);
          } else if (entry && observed && (entry.size !== observed.size || entry.etag !== observed.etag)) {
            run.summary.corrupted++;
            problem(run, `${where}: ${key}: listed as ${entry.size}B ${entry.etag}, served as ${observed.size}B ${observed.etag}`);
          }
          const acked = run.model.get(key);
          const options = pendingByKey.get(key) ?? [];
          if (sameState(observed, acked)) {
            // As acknowledged (an operation in flight on it did not land, or asked for the same).
          } else {
            const match = options.find((o) => sameState(o.state, observed));
            if (match) {
              landed.add(match.op);
            } else if (observed === undefined) {
              run.summary.lost++;
              problem(run, `${where}: ${key}: LOST: acknowledged ${describeState(acked)}, now absent`);
            } else if (observed.md5 !== md5hex(Buffer.alloc(0)) && !(run.known.get(key) ?? []).some((s) => s && s.md5 === observed.md5)) {
              run.summary.corrupted++;
              problem(run, `${where}: ${key}: CORRUPT: serves bytes never written to it: ${describeState(observed)}; acknowledged ${describeState(acked)}`);
            } else if ((run.known.get(key) ?? []).some((s) => sameState(s, observed))) {
              run.summary.lost++;
              problem(run, `${where}: ${key}: LOST: acknowledged ${describeState(acked)}, but serves an older state ${describeState(observed)}`);
            } else {
              run.summary.corrupted++;
              problem(run, `${where}: ${key}: CORRUPT: ${describeState(observed)}; acknowledged ${describeState(acked)}`);
            }
          }
          if (observed && observed.etag !== observed.md5 && !/-\d+$/.test(observed.etag)) {
            run.summary.corrupted++;
            problem(run, `${where}: ${key}: ETag ${observed.etag} is not the MD5 of the bytes served (${observed.md5})`);
          }
          run.model.set(key, observed);
          remember(run, key, observed);
        }
      }),
    );
    run.summary.inFlightLanded += landed.size;
    run.pending = [];
  } finally {
    agent.destroy();
  }
}

// ------------------------------------------------------------------ load

/** What the clients of a workload do: the body sizes and how many keys they share. */
export interface WorkloadOptions {
  blockSize: number;
  maxBodySize: number;
  bigBodyChance: number;
}

export interface LoadContext {
  url: string;
  opts: WorkloadOptions;
  run: RunState;
  keys: string[];
  busy: Set<string>;
  inFlight: Set<InFlight>;
  cycle: number;
  /** Set the moment the kill is decided: errors after it are expected. */
  killing: boolean;
  stop: boolean;
  acked: Record<string, number>;
}

function tryLock(ctx: LoadContext, keys: string[]): boolean {
  if (keys.some((k) => ctx.busy.has(k))) return false;
  for (const k of keys) ctx.busy.add(k);
  return true;
}

function unlock(ctx: LoadContext, keys: string[]): void {
  for (const k of keys) ctx.busy.delete(k);
}

function bodySize(rng: Prng, opts: WorkloadOptions): number {
  if (rng.chance(opts.bigBodyChance) && opts.maxBodySize > opts.blockSize) return rng.int(opts.blockSize + 1, opts.maxBodySize);
  const r = rng.next();
  if (r < 0.12) return 0;
  if (r < 0.6) return rng.int(1, Math.min(16 * 1024, opts.maxBodySize));
  return rng.int(1, Math.min(Math.max(1, Math.floor(opts.blockSize * 0.8)), opts.maxBodySize));
}

function newMeta(rng: Prng, tag: string): { contentType: string; meta: Record<string, string> } {
  const meta: Record<string, string> = { 'x-amz-meta-op': tag };
  if (rng.chance(0.3)) meta['x-amz-meta-note'] = `n${rng.int(0, 1e6)} with spaces`;
  return { contentType: rng.pick(CONTENT_TYPES), meta };
}

function metaHeaders(state: { contentType: string; meta: Record<string, string> }): Record<string, string> {
  return { 'content-type': state.contentType, ...state.meta };
}

type Outcome = 'acked' | 'refused' | 'no-reply';

/** Sends one operation; on a 2xx reply its outcomes become the model. */
async function operate(ctx: LoadContext, kind: string, outcomes: Map<string, KeyState>, send: () => Promise<{ ok: boolean; detail: string }>): Promise<Outcome> {
  const op: InFlight = { kind, outcomes };
  for (const [k, s] of outcomes) remember(ctx.run, k, s);
  ctx.inFlight.add(op);
  let result: { ok: boolean; detail: string };
  try {
    result = await send();
  } catch (err) {
    if (!ctx.killing) {
      ctx.run.summary.unexpected++;
      problem(ctx.run, `cycle ${ctx.cycle}: ${kind} failed with no reply while the server was up: ${(err as Error).message}`);
    }
    return 'no-reply'; // stays in flight: it may or may not have landed
  }
  ctx.inFlight.delete(op);
  if (!result.ok) {
    if (!ctx.killing) {
      ctx.run.summary.unexpected++;
      problem(ctx.run, `cycle ${ctx.cycle}: ${kind} refused: ${result.detail}`);
    }
    return 'refused';
  }
  for (const [k, s] of outcomes) ctx.run.model.set(k, s);
  ctx.acked[kind] = (ctx.acked[kind] ?? 0) + 1;
  return 'acked';
}

export async function client(ctx: LoadContext, rng: Prng, id: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const { url, opts, keys, run } = ctx;
  let n = 0;
  try {
    while (!ctx.stop) {
      // Yield on every turn: a turn that finds its keys busy must not starve the timers.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const tag = `c${ctx.cycle}-w${id}-${n++}`;
      const r = rng.next();
      const key = rng.pick(keys);
      if (r < 0.42) {
        // PUT (a new object or an overwrite)
        if (!tryLock(ctx, [key])) continue;
        const size = bodySize(rng, opts);
        const body = rng.bytes(size);
        const md = newMeta(rng, tag);
        const md5 = md5hex(body);
        const state: ObjState = { md5, size, etag: md5, ...md };
        const outcome = await operate(ctx, 'put', new Map([[key, state]]), async () => {
          const reply = await request(url, 'PUT', keyPath(BUCKET, key), {
            agent,
            body,
            headers: { ...metaHeaders(md), ...(rng.chance(0.5) ? { 'content-md5': md5base64(body) } : {}) },
          });
          const ok = reply.status === 200 && reply.headers['etag'] === `"${md5}"`;
          return { ok, detail: `${reply.status} etag=${String(reply.headers['etag'])} ${reply.body.toString().slice(0, 200)}` };
        });
        if (outcome !== 'no-reply') unlock(ctx, [key]);
      } else if (r < 0.57) {
        // Copy, COPY or REPLACE directive; a self-copy must REPLACE.
        const source = rng.pick(keys);
        const src = run.model.get(source);
        const lockKeys = source === key ? [key] : [source, key];
        if (!src || !tryLock(ctx, lockKeys)) continue;
        const replace = source === key || rng.chance(0.5);
        const md = replace ? newMeta(rng, tag) : { contentType: src.contentType, meta: src.meta };
        const state: ObjState = { ...src, ...md };
        const outcome = await operate(ctx, 'copy', new Map([[key, state]]), async () => {
          const reply = await request(url, 'PUT', keyPath(BUCKET, key), {
            agent,
            headers: {
              'x-amz-copy-source': keyPath(BUCKET, source),
              ...(replace ? { 'x-amz-metadata-directive': 'REPLACE', ...metaHeaders(md) } : {}),
            },
          });
          const ok = reply.status === 200 && reply.body.includes('<CopyObjectResult') && xmlOne(reply.body, 'ETag') === `"${src.etag}"`;
          return { ok, detail: `${reply.status} ${reply.body.toString().slice(0, 300)}` };
        });
        if (outcome !== 'no-reply') unlock(ctx, lockKeys);
      } else if (r < 0.70) {
        // DELETE (of a live key, mostly; a missing key is a 204 that writes nothing)
        if (!tryLock(ctx, [key])) continue;
        const outcome = await operate(ctx, 'delete', new Map([[key, undefined]]), async () => {
          const reply = await request(url, 'DELETE', keyPath(BUCKET, key), { agent });
          return { ok: reply.status === 204, detail: `${reply.status} ${reply.body.toString().slice(0, 200)}` };
        });
        if (outcome !== 'no-reply') unlock(ctx, [key]);
      } else if (r < 0.75) {
        // DeleteObjects of 2..4 keys
        const many = [...new Set(Array.from({ length: rng.int(2, 4) }, () => rng.pick(keys)))];
        if (!tryLock(ctx, many)) continue;
        const xml =
          '<?xml version="1.0" encoding="UTF-8"?><Delete>' +
          many.map((k) => `<Object><Key>${k.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</Key></Object>`).join('') +
          '</Delete>';
        const body = Buffer.from(xml);
        const outcome = await operate(ctx, 'delete-objects', new Map(many.map((k) => [k, undefined])), async () => {
          const reply = await request(url, 'POST', `/${BUCKET}?delete`, { agent, body, headers: { 'content-md5': md5base64(body), 'content-type': 'application/xml' } });
          const deleted = xmlAll(reply.body, 'Key');
          const ok = reply.status === 200 && !reply.body.includes('<Error>') && many.every((k) => deleted.includes(k));
          return { ok, detail: `${reply.status} ${reply.body.toString().slice(0, 300)}` };
        });
        if (outcome !== 'no-reply') unlock(ctx, many);
      } else if (r < 0.78) {
        // A one-part multipart upload; only the completion changes the store.
        if (!tryLock(ctx, [key])) continue;
        const body = rng.bytes(bodySize(rng, opts));
        const md = newMeta(rng, tag);
        const partMd5 = md5hex(body);
        const etag = `${md5hex(Buffer.from(partMd5, 'hex'))}-1`;
        const state: ObjState = { md5: partMd5, size: body.length, etag, ...md };
        const outcome = await operate(ctx, 'multipart', new Map([[key, state]]), async () => {
          const created = await request(url, 'POST', `${keyPath(BUCKET, key)}?uploads`, { agent, headers: metaHeaders(md) });
          const uploadId = xmlOne(created.body, 'UploadId');
          if (created.status !== 200 || !uploadId) return { ok: false, detail: `create: ${created.status} ${created.body.toString().slice(0, 200)}` };
          const q = `uploadId=${encodeURIComponent(uploadId)}`;
          const part = await request(url, 'PUT', `${keyPath(BUCKET, key)}?partNumber=1&${q}`, { agent, body });
          if (part.status !== 200) return { ok: false, detail: `part: ${part.status} ${part.body.toString().slice(0, 200)}` };
          const complete = `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"${partMd5}"</ETag></Part></CompleteMultipartUpload>`;
          const done = await request(url, 'POST', `${keyPath(BUCKET, key)}?${q}`, { agent, body: complete });
          const ok = done.status === 200 && xmlOne(done.body, 'ETag') === `"${etag}"`;
          return { ok, detail: `complete: ${done.status} ${done.body.toString().slice(0, 300)}` };
        });
        if (outcome !== 'no-reply') unlock(ctx, [key]);
      } else if (r < 0.93) {
        // GET of a key nobody is changing: must serve exactly the acknowledged state.
        if (!tryLock(ctx, [key])) continue;
        try {
          const { state, problem: p } = await fetchState(url, BUCKET, key, agent);
          const expected = run.model.get(key);
          if (p || !sameState(state, expected)) {
            run.summary.wrongReads++;
            problem(run, `cycle ${ctx.cycle}: GET ${key} during the load served ${describeState(state)} (${p ?? 'no transport problem'}), acknowledged ${describeState(expected)}`);
          }
        } catch (err) {
          if (!ctx.killing) {
            run.summary.unexpected++;
            problem(run, `cycle ${ctx.cycle}: GET ${key}: ${(err as Error).message}`);
          }
        } finally {
          unlock(ctx, [key]);
        }
      } else {
        // LIST (whole bucket or a prefix) while others write.
        try {
          const prefix = rng.pick(['', 'dir1/', 'k', 'ü/']);
          const reply = await request(url, 'GET', `/${BUCKET}?list-type=2&prefix=${encodeURIComponent(prefix)}`, { agent });
          if (reply.status !== 200 || !reply.body.includes('</ListBucketResult>')) {
            if (!ctx.killing) {
              run.summary.unexpected++;
              problem(run, `cycle ${ctx.cycle}: LIST refused: ${reply.status} ${reply.body.toString().slice(0, 200)}`);
            }
          }
        } catch (err) {
          if (!ctx.killing) {
            run.summary.unexpected++;
            problem(run, `cycle ${ctx.cycle}: LIST: ${(err as Error).message}`);
          }
        }
      }
    }
  } finally {
    agent.destroy();
  }
}

// ------------------------------------------------------------------ kills

/** Waits for the moment to kill: a timer, or the first sign of a checkpoint or a roll-over. */
async function killMoment(dir: string, mode: KillMode, rng: Prng, loadMs: [number, number]): Promise<KillMode> {
  if (mode === 'timer') {
    await sleep(rng.int(loadMs[0], loadMs[1]));
    return 'timer';
  }
  const before = new Set(await dirNames(dir));
  // Let the load get going first, so that there is something in flight.
  await sleep(rng.int(Math.floor(loadMs[0] / 4), loadMs[0]));
  return new Promise<KillMode>((resolve) => {
    let done = false;
    const finish = (how: KillMode) => {
      if (done) return;
      done = true;
      watcher.close();
      clearTimeout(timer);
      resolve(how);
    };
    const watcher = fs.watch(dir, (_event, name) => {
      if (!name) return;
      if (mode === 'checkpoint' && name.endsWith('.zipkv-tmp')) finish('checkpoint');
      if (mode === 'rollover' && /^block\d{10}$/.test(name) && !before.has(name)) finish('rollover');
      // A compaction deleting a block it no longer needs: the db and journal it wrote are new.
      if (mode === 'compaction' && /^block\d{10}$/.test(name) && before.has(name) && !fs.existsSync(`${dir}/${name}`)) finish('compaction');
    });
    watcher.on('error', () => finish('timer'));
    const timer = setTimeout(() => finish('timer'), loadMs[1] * 2);
  });
}

function killAndWait(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/**
 * Starts the server and kills it while it recovers: at the first checkpoint file of the
 * recovery, or after a random delay, whichever is first. Returns whether it was mid-checkpoint.
 */
async function killDuringStartup(opts: CrashCycleOptions, rng: Prng): Promise<{ midCheckpoint: boolean; output: string }> {
  const child = spawn(process.execPath, [zipkvBin, 'serve', ...serveArgs(opts)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  let midCheckpoint = false;
  await new Promise<void>((resolve) => {
    const watcher = fs.watch(opts.dir, (_event, name) => {
      if (name && name.endsWith('.zipkv-tmp')) finish();
    });
    const timer = setTimeout(() => finish(), rng.int(150, 1500));
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      clearTimeout(timer);
      watcher.close();
      child.kill('SIGKILL');
      resolve();
    }
    child.once('exit', () => finish());
  });
  await killAndWait(child);
  midCheckpoint = looksMidCheckpoint(await dirNames(opts.dir));
  return { midCheckpoint, output };
}

// ------------------------------------------------------------------ the run

/** A summary with nothing counted yet. */
export function emptySummary(seed: number): CrashSummary {
  return {
    seed,
    cycles: 0,
    elapsedMs: 0,
    acknowledged: 0,
    acknowledgedByKind: {},
    lost: 0,
    corrupted: 0,
    inFlightAtKill: 0,
    inFlightLanded: 0,
    unexpected: 0,
    wrongReads: 0,
    kills: { timer: 0, checkpoint: 0, rollover: 0, compaction: 0 },
    startupKills: 0,
    killsMidCheckpoint: 0,
    blocksCreated: 0,
    recoveryWarnings: 0,
    startFailures: 0,
    finalRevision: undefined,
    finalObjects: 0,
    problems: [],
  };
}

export function newRunState(seed: number): RunState {
  const summary = emptySummary(seed);
  return { model: new Map(), known: new Map(), pending: [], summary };
}

/** Starts `clients` clients on `url`; `stop()` ends them (after a kill or a signal, set `killing` first). */
export function startWorkload(url: string, run: RunState, opts: WorkloadOptions & { keys: string[]; clients: number; cycle: number }, rng: Prng) {
  const ctx: LoadContext = {
    url,
    opts,
    run,
    keys: opts.keys,
    busy: new Set(),
    inFlight: new Set(),
    cycle: opts.cycle,
    killing: false,
    stop: false,
    acked: {},
  };
  const clients = Array.from({ length: opts.clients }, (_, i) => client(ctx, rng.fork(), i));
  return {
    ctx,
    /** Stops the clients; operations left without a reply become the run's pending ones. */
    async stop(): Promise<void> {
      ctx.stop = true;
      await Promise.all(clients);
      run.pending.push(...ctx.inFlight);
      let acked = 0;
      for (const [kind, count] of Object.entries(ctx.acked)) {
        acked += count;
        run.summary.acknowledgedByKind[kind] = (run.summary.acknowledgedByKind[kind] ?? 0) + count;
      }
      run.summary.acknowledged += acked;
      run.summary.inFlightAtKill += ctx.inFlight.size;
    },
  };
}

export async function runCrashCycles(opts: CrashCycleOptions): Promise<CrashSummary> {
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const rng = new Prng(opts.seed);
  const keys = makeKeys(opts.keySpace);
  const run = newRunState(opts.seed);
  const { summary } = run;
  await fsp.mkdir(opts.dir, { recursive: true });
  const blocksBefore = (await dirNames(opts.dir)).filter((n) => /^block\d{10}$/.test(n)).length;
  log(`crash cycles: seed ${opts.seed} (repeat with ZIPKV_SEED=${opts.seed}), ${opts.cycles} cycles, block size ${opts.blockSize}, ` +
    `checkpoint every ${opts.checkpointBytes ?? 'default'} bytes, ${opts.clients} clients, ${opts.keySpace} keys, bodies up to ${opts.maxBodySize} bytes, dir ${opts.dir}`);

  for (let cycle = 0; cycle < opts.cycles; cycle++) {
    if (opts.timeLimitMs !== undefined && Date.now() - started > opts.timeLimitMs) {
      log(`time limit reached after ${cycle} cycles`);
      break;
    }
    const cycleRng = rng.fork();
    let startupNote = '';
    if (cycle > 0 && cycleRng.chance(opts.startupKillChance ?? 0.2)) {
      const { midCheckpoint, output } = await killDuringStartup(opts, cycleRng);
      summary.startupKills++;
      if (midCheckpoint) summary.killsMidCheckpoint++;
      summary.recoveryWarnings += countWarnings(output);
      for (const line of internalErrors(output)) problem(run, `cycle ${cycle} (startup kill): ${line}`);
      startupNote = midCheckpoint ? ' [killed during recovery, mid-checkpoint]' : ' [killed during start-up]';
    }

    let server: RunningServer;
    try {
      server = await startZipkvServe(serveArgs(opts));
    } catch (err) {
      problem(run, `cycle ${cycle}: the server did not start after the kill: ${(err as Error).message}`);
      summary.startFailures++;
      break;
    }
    const startOutput = server.output();
    summary.recoveryWarnings += countWarnings(startOutput);
    await verifyAgainstModel(run, server.url, `cycle ${cycle} start`);

    const mode = cycleRng.pick<KillMode>(opts.keepHistory === undefined ? ['timer', 'checkpoint', 'rollover'] : ['timer', 'checkpoint', 'rollover', 'compaction', 'compaction']);
    const workload = startWorkload(server.url, run, { ...opts, keys, cycle }, cycleRng);
    const how = await killMoment(opts.dir, mode, cycleRng, opts.loadMs);
    workload.ctx.killing = true;
    workload.ctx.stop = true;
    await killAndWait(server.child);
    summary.kills[how]++;
    const ackedBefore = summary.acknowledged;
    await workload.stop();
    const acked = summary.acknowledged - ackedBefore;
    const ctx = workload.ctx;
    const output = server.output();
    for (const line of internalErrors(output)) problem(run, `cycle ${cycle}: ${line}`);
    const names = await dirNames(opts.dir);
    const mid = looksMidCheckpoint(names);
    if (mid) summary.killsMidCheckpoint++;
    summary.cycles++;
    log(
      `cycle ${cycle + 1}/${opts.cycles}${startupNote}: killed at ${how === mode ? how : `${mode} (fell back to timer)`}` +
        `${mid ? ', mid-checkpoint' : ''}; ${acked} acknowledged (${Object.entries(ctx.acked).map(([k, v]) => `${k} ${v}`).join(', ')}), ` +
        `${run.pending.length} in flight; totals: lost ${summary.lost}, corrupted ${summary.corrupted}, unexpected ${summary.unexpected}`,
    );
  }

  // Final restart: check everything, then a clean stop and the directory as the original reads it.
  let server: RunningServer;
  try {
    server = await startZipkvServe(serveArgs(opts));
  } catch (err) {
    problem(run, `final start: the server did not start: ${(err as Error).message}`);
    summary.startFailures++;
    summary.elapsedMs = Date.now() - started;
    return summary;
  }
  summary.recoveryWarnings += countWarnings(server.output());
  await verifyAgainstModel(run, server.url, 'final start');
  const stopped = await server.stop('SIGTERM');
  if (stopped.code !== 0) problem(run, `final SIGTERM: exit ${stopped.code} ${stopped.signal ?? ''}: ${stopped.stderr}`);
  for (const line of internalErrors(stopped.stdout + stopped.stderr)) problem(run, `final: ${line}`);
  const m = /(\d+) objects at revision (\d+); db written/.exec(stopped.stdout);
  summary.finalRevision = m ? Number(m[2]) : undefined;
  const view = await readAsOriginal(opts.dir);
  for (const p of view.problems) problem(run, `directory after the clean stop: ${p}`);
  const live = [...run.model].filter(([, s]) => s !== undefined) as Array<[string, ObjState]>;
  summary.finalObjects = live.length;
  if (view.live.size !== live.length) problem(run, `db replay has ${view.live.size} live keys, the model ${live.length}`);
  for (const [key, state] of live) {
    const loc = view.live.get(key);
    if (!loc) {
      summary.lost++;
      problem(run, `db replay: ${key} is missing`);
      continue;
    }
    const md5 = md5hex(await readFromBlock(opts.dir, loc));
    if (md5 !== state.md5 || loc.size !== state.size) {
      summary.corrupted++;
      problem(run, `db replay: ${key}: block bytes ${loc.size}B md5 ${md5}, expected ${state.size}B ${state.md5}`);
    }
  }
  const verify = await runZipkv(['verify', opts.dir], { timeoutMs: 120_000 });
  if (verify.code !== 0) problem(run, `zipkv verify after the run: exit ${verify.code}: ${verify.stdout}${verify.stderr}`);
  summary.blocksCreated = (await dirNames(opts.dir)).filter((n) => /^block\d{10}$/.test(n)).length - blocksBefore;
  summary.elapsedMs = Date.now() - started;
  return summary;
}

export function formatSummary(s: CrashSummary): string {
  const kinds = Object.entries(s.acknowledgedByKind).map(([k, v]) => `${k} ${v}`).join(', ');
  return [
    `seed ${s.seed}: ${s.cycles} cycles in ${(s.elapsedMs / 1000).toFixed(1)} s`,
    `  acknowledged operations: ${s.acknowledged} (${kinds})`,
    `  lost: ${s.lost}   corrupted: ${s.corrupted}   wrong reads during load: ${s.wrongReads}   unexpected replies: ${s.unexpected}   failed starts: ${s.startFailures}`,
    `  in flight at the kill: ${s.inFlightAtKill} (${s.inFlightLanded} landed, the rest did not)`,
    `  kills: timer ${s.kills.timer}, at a checkpoint ${s.kills.checkpoint}, at a roll-over ${s.kills.rollover}, deleting blocks after a compaction ${s.kills.compaction}, during start-up recovery ${s.startupKills}; ` +
      `${s.killsMidCheckpoint} left a half-written checkpoint behind`,
    `  blocks created: ${s.blocksCreated}; recovery warnings: ${s.recoveryWarnings}; final: ${s.finalObjects} objects at revision ${s.finalRevision}`,
    ...(s.problems.length > 0 ? ['  problems:', ...s.problems.map((p) => `    ${p}`)] : []),
  ].join('\n');
}
