/**
 * Torn and damaged files, at the server level: a store is written through the real
 * `zipkv serve` (a few sessions, the last one killed or stopped), a file is damaged, and the
 * store is served again. The rule for every damage: the server refuses to start with an
 * error that names the damaged file, or it starts and serves exactly the state after some
 * revision (a prefix of the history: never a mix, never wrong bytes), with a warning whenever
 * that state is older than the last acknowledged one.
 *
 * The engine tests (test/store/crash.test.ts) cover the last journal record cut or flipped and
 * a few corrupt dbs through the store API. Here every byte of the journal, the db and the open
 * block is cut or flipped (served in process over HTTP, which is fast), and the representative
 * cases go through the real `zipkv serve` for its exit status and message. A flipped byte in an
 * object's bytes is not detected when the object is served (GET does not re-hash; the ETag the
 * client gets then disagrees with the bytes); `zipkv verify` reports it.
 */
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'chai';
import { runZipkv, startZipkvServe } from '../helpers/cli.js';
import { startServer } from '../helpers/server.js';
import { tempDir } from '../helpers/paths.js';
import {
  Prng,
  type KeyState,
  type ObjState,
  describeState,
  fetchState,
  keyPath,
  listAll,
  md5hex,
  request,
  sameState,
} from './util.js';

const BUCKET = 'bucket';
const JOURNAL = 'zipkv-journal';
const BS = 4096;
/** ZIPKV_DAMAGE_EXHAUSTIVE=1: damage every byte, not a sample (minutes instead of seconds). */
const EXHAUSTIVE = process.env['ZIPKV_DAMAGE_EXHAUSTIVE'] === '1';

type Op =
  | { kind: 'put'; key: string; size: number }
  | { kind: 'copy'; key: string; src: string }
  | { kind: 'delete'; key: string };

/** Sessions of operations; every one writes a history record (deletes are of live keys). */
const SESSIONS: Op[][] = [
  [
    { kind: 'put', key: 'a', size: 3000 },
    { kind: 'put', key: 'big', size: 5000 }, // larger than the block size
    { kind: 'put', key: 'empty', size: 0 },
    { kind: 'copy', key: 'c', src: 'a' },
    { kind: 'put', key: 'd', size: 1000 },
    { kind: 'delete', key: 'd' },
  ],
  [
    { kind: 'put', key: 'a', size: 2000 },
    { kind: 'put', key: 'f', size: 100 },
  ],
  // The last session: killed (its records are in the journal) or stopped (all in the db).
  [
    { kind: 'put', key: 'g', size: 1500 },
    { kind: 'put', key: 'big', size: 700 },
    { kind: 'copy', key: 'h', src: 'g' },
    { kind: 'delete', key: 'a' },
    { kind: 'put', key: 'empty', size: 0 },
    { kind: 'put', key: 'i', size: 2500 },
    { kind: 'put', key: 'j', size: 900 },
  ],
];

interface Golden {
  dir: string;
  /** states[n]: the live objects after the first n records. */
  states: Array<Map<string, ObjState>>;
  /** Where each gzip member of the db ends (one member per clean stop). */
  dbMemberEnds: number[];
}

async function runSession(dir: string, ops: Op[], rng: Prng, state: Map<string, ObjState>, states: Array<Map<string, ObjState>>, end: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', String(BS)]);
  try {
    for (const op of ops) {
      if (op.kind === 'put') {
        const body = rng.bytes(op.size);
        const meta = { 'x-amz-meta-rev': String(states.length - 1) };
        const contentType = `application/x-rev-${states.length - 1}`;
        const reply = await request(server.url, 'PUT', keyPath(BUCKET, op.key), { body, headers: { ...meta, 'content-type': contentType } });
        expect(reply.status, reply.body.toString()).to.equal(200);
        state.set(op.key, { md5: md5hex(body), size: body.length, etag: md5hex(body), contentType, meta });
      } else if (op.kind === 'copy') {
        const meta = { 'x-amz-meta-rev': String(states.length - 1) };
        const contentType = 'text/x-copy';
        const reply = await request(server.url, 'PUT', keyPath(BUCKET, op.key), {
          headers: { 'x-amz-copy-source': keyPath(BUCKET, op.src), 'x-amz-metadata-directive': 'REPLACE', 'content-type': contentType, ...meta },
        });
        expect(reply.status, reply.body.toString()).to.equal(200);
        state.set(op.key, { ...state.get(op.src)!, contentType, meta });
      } else {
        const reply = await request(server.url, 'DELETE', keyPath(BUCKET, op.key));
        expect(reply.status).to.equal(204);
        state.delete(op.key);
      }
      states.push(new Map(state));
    }
  } finally {
    const result = await server.stop(end);
    if (end === 'SIGTERM') expect(result.code, result.stderr).to.equal(0);
  }
}

/** Builds two stores with the same history: one whose last session was killed, one stopped cleanly. */
async function buildGoldens(): Promise<{ killed: Golden; clean: Golden }> {
  const rng = new Prng(20240611);
  const base = path.join(await tempDir('damage-golden'), 'store');
  const state = new Map<string, ObjState>();
  const states: Array<Map<string, ObjState>> = [new Map()];
  await runSession(base, SESSIONS[0]!, rng, state, states, 'SIGTERM');
  const memberEnds = [await dbSize(base)];
  await runSession(base, SESSIONS[1]!, rng, state, states, 'SIGTERM');
  memberEnds.push(await dbSize(base));
  const killedDir = path.join(path.dirname(base), 'killed');
  const cleanDir = path.join(path.dirname(base), 'clean');
  await fs.cp(base, killedDir, { recursive: true });
  await fs.cp(base, cleanDir, { recursive: true });
  const s1 = new Map(state);
  const states1 = states.map((m) => new Map(m));
  await runSession(killedDir, SESSIONS[2]!, new Prng(7), s1, states1, 'SIGKILL');
  // A kill leaves a stale lock; copies of the directory are opened by other processes later.
  await fs.rm(path.join(killedDir, 'zipkv.lock'), { force: true });
  const s2 = new Map(state);
  const states2 = states.map((m) => new Map(m));
  await runSession(cleanDir, SESSIONS[2]!, new Prng(7), s2, states2, 'SIGTERM');
  const cleanEnds = [...memberEnds, await dbSize(cleanDir)];
  return { killed: { dir: killedDir, states: states1, dbMemberEnds: memberEnds }, clean: { dir: cleanDir, states: states2, dbMemberEnds: cleanEnds } };
}

interface Outcome {
  refused?: string;
  /** Number of records whose state is served (index into states). */
  served?: number;
  mismatch?: string;
  warnings: string[];
}

function sameMap(observed: Map<string, KeyState>, expected: Map<string, ObjState>): boolean {
  if (observed.size !== expected.size) return false;
  for (const [k, s] of expected) if (!sameState(observed.get(k), s)) return false;
  return true;
}

/** Serves `dir` in process and reads every object back over HTTP. */
async function serveDamaged(dir: string, golden: Golden): Promise<Outcome> {
  const warnings: string[] = [];
  let server;
  try {
    server = await startServer({ dir, warn: (m) => warnings.push(m) });
  } catch (err) {
    return { refused: (err as Error).message, warnings };
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  try {
    const observed = new Map<string, KeyState>();
    const listed = await listAll(server.url, BUCKET, agent);
    const fetched = await Promise.all(listed.map(({ key }) => fetchState(server.url, BUCKET, key, agent)));
    for (let i = 0; i < listed.length; i++) {
      if (fetched[i]!.problem) return { mismatch: fetched[i]!.problem, warnings };
      observed.set(listed[i]!.key, fetched[i]!.state);
    }
    for (let n = golden.states.length - 1; n >= 0; n--) {
      if (sameMap(observed, golden.states[n]!)) return { served: n, warnings };
    }
    return { mismatch: [...observed].map(([k, s]) => `${k}: ${describeState(s)}`).join('; '), warnings };
  } finally {
    agent.destroy();
    await server.stop();
  }
}

interface Expectation {
  /** File names one of which a refusal must mention. */
  names: string[];
  /** The exact number of records the served state must hold, when the design fixes it. */
  records?: number;
  /** Whether refusing is acceptable (otherwise the store must open). */
  mayRefuse: boolean;
  /** An older state without a warning is acceptable (the damage is indistinguishable from a clean end). */
  silentOk?: boolean;
}

function judge(label: string, outcome: Outcome, golden: Golden, want: Expectation): string | undefined {
  const full = golden.states.length - 1;
  if (outcome.refused !== undefined) {
    if (!want.mayRefuse) return `${label}: refused, but should open: ${outcome.refused}`;
    if (!want.names.some((n) => outcome.refused!.includes(n))) return `${label}: refused without naming ${want.names.join(' or ')}: ${outcome.refused}`;
    return undefined;
  }
  if (outcome.served === undefined) return `${label}: serves a state that is not any revision of the history: ${outcome.mismatch}`;
  if (want.records !== undefined && outcome.served !== want.records) {
    return `${label}: serves the state after ${outcome.served} records, expected ${want.records}`;
  }
  if (outcome.served < full && outcome.warnings.length === 0 && !want.silentOk) {
    return `${label}: silently serves an older state (${outcome.served} of ${full} records), no warning`;
  }
  return undefined;
}

const goldenFiles = new Map<string, Map<string, Buffer>>();

/** A new copy of a golden store's files (read once, kept in memory: the stores are small). */
async function fresh(golden: Golden, work: string, n: number): Promise<string> {
  let files = goldenFiles.get(golden.dir);
  if (!files) {
    files = new Map();
    for (const entry of await fs.readdir(golden.dir, { withFileTypes: true })) {
      if (entry.isFile()) files.set(entry.name, await fs.readFile(path.join(golden.dir, entry.name)));
    }
    goldenFiles.set(golden.dir, files);
  }
  const dir = path.join(work, `case-${n}`);
  await fs.mkdir(dir, { recursive: true });
  await Promise.all([...files].map(([name, bytes]) => fs.writeFile(path.join(dir, name), bytes)));
  return dir;
}

/**
 * Record boundaries of a journal: [start, end) of each frame, after the 16-byte header. The
 * length word's high bit marks a commit's last record.
 */
function journalFrames(buf: Buffer): Array<[number, number]> {
  const frames: Array<[number, number]> = [];
  let pos = 16;
  while (pos + 8 <= buf.length) {
    const end = pos + 8 + (buf.readUInt32LE(pos) & 0x7fffffff);
    if (end > buf.length) break;
    frames.push([pos, end]);
    pos = end;
  }
  return frames;
}

async function dbSize(dir: string): Promise<number> {
  return (await fs.stat(path.join(dir, await dbName(dir)))).size;
}

async function dbName(dir: string): Promise<string> {
  const dbs = (await fs.readdir(dir)).filter((n) => /^db\d{10}$/.test(n));
  expect(dbs).to.have.length(1);
  return dbs[0]!;
}

async function blockNames(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => /^block\d{10}$/.test(n)).sort();
}

describe('reliability: torn and damaged files (server level)', function () {
  this.timeout(120_000);
  let killed: Golden;
  let clean: Golden;
  let work: string;
  let caseNo = 0;

  before(async () => {
    ({ killed, clean } = await buildGoldens());
    work = await tempDir('damage-cases');
  });

  it('the undamaged stores serve their last state (control)', async () => {
    for (const golden of [killed, clean]) {
      const outcome = await serveDamaged(await fresh(golden, work, caseNo++), golden);
      expect(outcome.served, outcome.refused ?? outcome.mismatch).to.equal(golden.states.length - 1);
      expect(outcome.warnings).to.deep.equal([]);
    }
    const journal = await fs.readFile(path.join(killed.dir, JOURNAL));
    expect(journalFrames(journal)).to.have.length(SESSIONS[2]!.length);
    expect((await fs.readFile(path.join(clean.dir, JOURNAL))).length).to.equal(16);
  });

  /** Damages one file of a fresh copy, serves it, judges the outcome; the copy is removed. */
  async function damageCase(golden: Golden, label: string, file: string, damage: (bytes: Buffer) => Buffer, want: Expectation): Promise<string | undefined> {
    const dir = await fresh(golden, work, caseNo++);
    try {
      const target = path.join(dir, file);
      await fs.writeFile(target, damage(await fs.readFile(target)));
      return judge(label, await serveDamaged(dir, golden), golden, want);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /** Runs the cases three at a time; resolves with the failures, in case order. */
  async function runCases(cases: Array<() => Promise<string | undefined>>): Promise<string[]> {
    const results: Array<string | undefined> = new Array(cases.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: 3 }, async () => {
        for (let i = next++; i < cases.length; i = next++) results[i] = await cases[i]!();
      }),
    );
    return results.filter((r): r is string => r !== undefined);
  }

  const cut = (n: number) => (b: Buffer) => b.subarray(0, n);
  const flip = (at: number, mask: number) => (b: Buffer) => {
    const copy = Buffer.from(b);
    copy[at]! ^= mask;
    return copy;
  };

  /**
   * Byte positions to damage: all of them with ZIPKV_DAMAGE_EXHAUSTIVE=1; otherwise every byte
   * within `radius` of the given places (file ends, record or member boundaries) and every
   * `stride`-th byte elsewhere.
   */
  function positions(length: number, places: number[], radius: number, stride: number): number[] {
    const out: number[] = [];
    for (let at = 0; at < length; at++) {
      if (EXHAUSTIVE || at % stride === 0 || places.some((p) => Math.abs(p - at) <= radius)) out.push(at);
    }
    return out;
  }

  it('a journal cut short: the state before the first incomplete record, with a warning unless cut between records', async () => {
    const journal = await fs.readFile(path.join(killed.dir, JOURNAL));
    const frames = journalFrames(journal);
    const base = Number(journal.readBigUInt64LE(8));
    const boundaries = new Set([16, ...frames.map(([, end]) => end)]);
    const last = frames[frames.length - 1]!;
    // Every byte of the header and of the last record (a torn append); around every boundary.
    const places = [...boundaries, ...Array.from({ length: last[1] - last[0] }, (_, i) => last[0] + i), ...Array.from({ length: 16 }, (_, i) => i)];
    const cases = positions(journal.length, places, 3, 7).map((at) => () => {
      const complete = frames.filter(([, end]) => end <= at).length;
      return damageCase(killed, `journal cut to ${at} of ${journal.length} bytes`, JOURNAL, cut(at), {
        names: [JOURNAL],
        // Inside the 16-byte header no record can be trusted: the db alone, or a refusal.
        records: at < 16 ? base : base + complete,
        mayRefuse: at < 16,
        // A cut between two records looks like a journal that ends there: nothing to warn about.
        // So does an empty file. A header cut short is damage (zipkv writes it atomically).
        silentOk: boundaries.has(at) || at === 0,
      });
    });
    const failures = await runCases(cases);
    expect(failures, failures.join('\n')).to.deep.equal([]);
  });

  it('a flipped byte in the journal (every bit of the header): the state before the damaged record with a warning, or a refusal naming the journal', async () => {
    const journal = await fs.readFile(path.join(killed.dir, JOURNAL));
    const frames = journalFrames(journal);
    const base = Number(journal.readBigUInt64LE(8));
    const first = frames[0]!;
    const places = [
      ...Array.from({ length: 16 }, (_, i) => i),
      ...frames.map(([start]) => start),
      ...Array.from({ length: first[1] - first[0] }, (_, i) => first[0] + i),
    ];
    const cases: Array<() => Promise<string | undefined>> = [];
    for (const at of positions(journal.length, places, 4, 7)) {
      if (at >= 8 && at < 16) continue; // the base revision: its own test below
      const inRecord = frames.findIndex(([start, end]) => at >= start && at < end);
      for (const mask of at < 16 ? [1, 2, 4, 8, 16, 32, 64, 128, 0xff] : [0xff]) {
        cases.push(() =>
          damageCase(killed, `journal byte ${at} ^ 0x${mask.toString(16)}`, JOURNAL, flip(at, mask), {
            names: [JOURNAL],
            records: inRecord >= 0 ? base + inRecord : undefined,
            mayRefuse: inRecord < 0, // the header: magic, version, base revision
          }),
        );
      }
    }
    const failures = await runCases(cases);
    expect(failures, failures.join('\n')).to.deep.equal([]);
  });

  // A flip that lowers the base revision makes the first records look already folded into the
  // db (the header has no checksum): recovery must compare them with the db, not skip them.
  it('a bit flipped in the journal\'s base revision (bytes 8..15): a refusal naming the journal, never records silently skipped', async () => {
    const cases: Array<() => Promise<string | undefined>> = [];
    for (let at = 8; at < 16; at++) {
      for (const mask of [1, 2, 4, 8, 16, 32, 64, 128, 0xff]) {
        cases.push(() => damageCase(killed, `journal byte ${at} ^ 0x${mask.toString(16)}`, JOURNAL, flip(at, mask), { names: [JOURNAL], mayRefuse: true }));
      }
    }
    const failures = await runCases(cases);
    expect(failures, failures.join('\n')).to.deep.equal([]);
  });

  for (const which of ['killed', 'clean'] as const) {
    it(`a db cut short (${which} store; every byte near its ends and its gzip member boundaries): refused, naming the db or the journal`, async () => {
      const golden = which === 'killed' ? killed : clean;
      const name = await dbName(golden.dir);
      const db = await fs.readFile(path.join(golden.dir, name));
      const cases = positions(db.length, [0, db.length, ...golden.dbMemberEnds], 12, 11).map(
        (at) => () => damageCase(golden, `${name} cut to ${at} of ${db.length} bytes`, name, cut(at), { names: [name, JOURNAL], mayRefuse: true }),
      );
      const failures = await runCases(cases);
      expect(failures, failures.join('\n')).to.deep.equal([]);
    });

    it(`a flipped byte in the db (${which} store; same positions): refused naming the db, or served correctly`, async () => {
      const golden = which === 'killed' ? killed : clean;
      const name = await dbName(golden.dir);
      const db = await fs.readFile(path.join(golden.dir, name));
      const cases = positions(db.length, [0, db.length, ...golden.dbMemberEnds], 12, 11).map(
        (at) => () => damageCase(golden, `${name} byte ${at} ^ 0xff`, name, flip(at, 0xff), { names: [name, JOURNAL], mayRefuse: true }),
      );
      const failures = await runCases(cases);
      expect(failures, failures.join('\n')).to.deep.equal([]);
    });
  }

  it('block files shorter than their records: the open block of a crash stops recovery with a warning; a block the db uses is refused', async () => {
    const cases: Array<() => Promise<string | undefined>> = [];
    for (const golden of [killed, clean]) {
      for (const block of await blockNames(golden.dir)) {
        const size = (await fs.stat(path.join(golden.dir, block))).size;
        for (const at of positions(size, [0, size], 1, 499)) {
          cases.push(() =>
            damageCase(golden, `${golden === killed ? 'killed' : 'clean'}: ${block} cut to ${at} of ${size} bytes`, block, cut(at), {
              names: [block],
              mayRefuse: true,
            }),
          );
        }
      }
    }
    const failures = await runCases(cases);
    expect(failures, failures.join('\n')).to.deep.equal([]);
  });

  describe('through the real zipkv serve', () => {
    async function serveBinary(dir: string) {
      try {
        const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
        return { server, output: server.output() };
      } catch (err) {
        return { error: (err as Error).message };
      }
    }

    it('the last journal record cut short: starts, warns naming the journal, serves the state before it', async () => {
      const journal = await fs.readFile(path.join(killed.dir, JOURNAL));
      const frames = journalFrames(journal);
      const [start, end] = frames[frames.length - 1]!;
      for (const cut of [start + 1, start + 8, Math.floor((start + end) / 2), end - 1]) {
        const dir = await fresh(killed, work, caseNo++);
        await fs.truncate(path.join(dir, JOURNAL), cut);
        const run = await serveBinary(dir);
        expect(run.error, run.error).to.equal(undefined);
        const { server } = run as { server: Awaited<ReturnType<typeof startZipkvServe>> };
        try {
          expect(server.output()).to.match(/zipkv-journal: ignored \d+ bytes of a torn or damaged tail/);
          const observed = new Map<string, KeyState>();
          for (const { key } of await listAll(server.url)) observed.set(key, (await fetchState(server.url, BUCKET, key)).state);
          expect(sameMap(observed, killed.states[killed.states.length - 2]!)).to.equal(true);
        } finally {
          expect((await server.stop()).code).to.equal(0);
        }
      }
    });

    it('a damaged journal header, a cut db, a flipped db byte, a cut complete block: exit 2, naming the file, and the files are left alone', async () => {
      const name = await dbName(killed.dir);
      const blocks = await blockNames(killed.dir);
      const cases: Array<{ label: string; file: string; damage: (dir: string) => Promise<void> }> = [
        {
          label: 'journal magic',
          file: JOURNAL,
          damage: async (dir) => {
            const fd = await fs.open(path.join(dir, JOURNAL), 'r+');
            await fd.write(Buffer.from('XXXX'), 0, 4, 0);
            await fd.close();
          },
        },
        { label: 'db cut in half', file: name, damage: async (dir) => fs.truncate(path.join(dir, name), Math.floor((await fs.stat(path.join(dir, name))).size / 2)) },
        {
          label: 'db byte flipped in the compressed data',
          file: name,
          damage: async (dir) => {
            const buf = await fs.readFile(path.join(dir, name));
            buf[20]! ^= 0xff;
            await fs.writeFile(path.join(dir, name), buf);
          },
        },
        { label: 'first block cut', file: blocks[0]!, damage: async (dir) => fs.truncate(path.join(dir, blocks[0]!), 10) },
      ];
      for (const c of cases) {
        const dir = await fresh(killed, work, caseNo++);
        await c.damage(dir);
        const before = await snapshot(dir);
        const result = await runZipkv(['serve', '-dir', dir, '-addr', '127.0.0.1:0', '--quiet'], { timeoutMs: 30_000 });
        expect(result.code, `${c.label}: ${result.stdout}${result.stderr}`).to.equal(2);
        expect(result.stderr, c.label).to.include(c.file);
        expect(result.stdout, c.label).to.not.match(/zipkv serving/);
        const after = await snapshot(dir);
        expect([...after.keys()].sort(), c.label).to.deep.equal([...before.keys()].sort());
        for (const [file, bytes] of before) expect(after.get(file)!.equals(bytes), `${c.label}: ${file} was changed`).to.equal(true);
      }
    });

    it('a flipped byte inside an object: GET serves bytes whose MD5 is not the ETag; zipkv verify names the object and exits 1', async () => {
      const dir = await fresh(clean, work, caseNo++);
      const state = clean.states[clean.states.length - 1]!;
      const target = state.get('i')!;
      // Find i's bytes by searching the blocks for them (where they are is the engine's business).
      let found: { block: string; offset: number } | undefined;
      const server0 = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
      const original = (await request(server0.url, 'GET', keyPath(BUCKET, 'i'))).body;
      expect((await server0.stop()).code).to.equal(0);
      for (const block of await blockNames(dir)) {
        const bytes = await fs.readFile(path.join(dir, block));
        const at = bytes.indexOf(original.subarray(0, 64));
        if (at >= 0) found = { block, offset: at };
      }
      expect(found, 'the object bytes are in a block').to.not.equal(undefined);
      const file = path.join(dir, found!.block);
      const buf = await fs.readFile(file);
      buf[found!.offset + 100]! ^= 0xff;
      await fs.writeFile(file, buf);

      const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
      try {
        const reply = await request(server.url, 'GET', keyPath(BUCKET, 'i'));
        // What the server does today: 200, the damaged bytes, and the ETag of the bytes written.
        expect(reply.status).to.equal(200);
        expect(reply.headers['etag']).to.equal(`"${target.md5}"`);
        expect(md5hex(reply.body)).to.not.equal(target.md5);
        expect(reply.body.length).to.equal(target.size);
        // The other objects are untouched.
        for (const [key, s] of state) if (key !== 'i') expect(sameState((await fetchState(server.url, BUCKET, key)).state, s), key).to.equal(true);
      } finally {
        expect((await server.stop()).code).to.equal(0);
      }
      const verify = await runZipkv(['verify', dir]);
      expect(verify.code, verify.stdout + verify.stderr).to.equal(1);
      expect(verify.stdout).to.match(/problem: i \(revision \d+, block\d{10} at \d+, 2500 bytes\): bytes have MD5 [0-9a-f]{32}, the store recorded/);
      expect(verify.stdout).to.include(target.md5);
    });
  });
});

async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of await fs.readdir(dir)) {
    const st = await fs.stat(path.join(dir, name));
    if (st.isFile()) out.set(name, await fs.readFile(path.join(dir, name)));
  }
  return out;
}
