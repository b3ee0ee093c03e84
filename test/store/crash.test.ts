import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import type { Mode, PathLike } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { StoreCorruptError } from '../../src/lib/store/errors.js';
import { encodeDb, encodeHistoryRecord } from '../../src/lib/store/schema.js';
import { closeSnapshot, readSnapshot } from '../../src/lib/store/history.js';
import { openStore, type Store } from '../../src/lib/store/store.js';
import { tempDir } from '../helpers/paths.js';
import { allKeys, copyStoreDir, md5Of, md5hex, pseudoRandomBytes, snapshotDir } from './util.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const JOURNAL = 'zipkv-journal';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the promise to be rejected');
}

/**
 * Starts the crash child, waits until it has loaded (`loaded`: it is about to open the store,
 * so the kill may come during recovery and its checkpoint) or until its store is open
 * (`ready`), waits `ms` more, then kill -9.
 */
async function runAndKill(dir: string, log: string, seed: number, ms: number, after: 'loaded' | 'ready', faults = false): Promise<void> {
  const args = [path.join(here, 'crash-child.js'), dir, log, String(seed), '16', ...(faults ? ['faults'] : [])];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  const ready = new Promise<void>((resolve) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(`${after}\n`)) resolve();
    });
  });
  const first = await Promise.race([ready.then(() => 'ready' as const), exited.then(() => 'exited' as const)]);
  if (first === 'exited') throw new Error(`crash child exited before it was ready: ${stderr}`);
  await sleep(ms);
  child.kill('SIGKILL');
  const how = await exited;
  if (how !== 'SIGKILL') throw new Error(`crash child ended with ${how} before the kill: ${stderr}`);
}

interface LogEvent {
  phase: 'start' | 'ack' | 'error';
  writer: number;
  seq: number;
  op: string;
  key: string;
  state: string; // md5 or 'deleted'
}

function parseLog(text: string): { events: LogEvent[]; failures: string[]; checkpoints: number; failedCheckpoints: number } {
  const events: LogEvent[] = [];
  const failures: string[] = [];
  let checkpoints = 0;
  let failedCheckpoints = 0;
  for (const line of text.split('\n')) {
    if (line === '' || line === 'ready') continue;
    if (line === 'checkpoint-failed') {
      failedCheckpoints++;
      continue;
    }
    if (line === 'checkpoint') {
      checkpoints++;
      continue;
    }
    if (line.startsWith('fail ')) {
      failures.push(line);
      continue;
    }
    const m = /^(start|ack|error) (\d+) (\d+) (\w+) (".*") ([0-9a-f]{32}|deleted)$/.exec(line);
    if (!m) {
      failures.push(`unparsable log line: ${line}`);
      continue;
    }
    events.push({
      phase: m[1] as LogEvent['phase'],
      writer: Number(m[2]),
      seq: Number(m[3]),
      op: m[4]!,
      key: JSON.parse(m[5]!) as string,
      state: m[6]!,
    });
  }
  return { events, failures, checkpoints, failedCheckpoints };
}

type State = string | undefined; // md5, or undefined for "no such key"
const asState = (s: string): State => (s === 'deleted' ? undefined : s);

describe('store: crash safety', function () {
  this.timeout(120_000);

  /**
   * kill -9 cycles on one directory; each cycle's log says, per key, which final states are
   * allowed: that of the last acknowledged operation, of an operation in flight at the kill, or
   * of one that failed since the last acknowledgement (not acknowledged: it may or may not be).
   */
  async function crashCycles(cycles: number, faults: boolean): Promise<void> {
    const dir = path.join(await tempDir('crash'), 'data');
    const logDir = await tempDir('crash-logs');
    /** key -> state after the last verified cycle. */
    let model = new Map<string, State>();
    let totalAcks = 0;
    let inFlightSeen = 0;
    let totalCheckpoints = 0;
    let failedOps = 0;
    let failedCheckpoints = 0;
    for (let cycle = 0; cycle < cycles; cycle++) {
      const log = path.join(logDir, `cycle-${cycle}.log`);
      const seed = 1000 + cycle * 7919;
      // Every third cycle is killed right after start-up, often while it recovers.
      const early = cycle % 3 === 1;
      const delay = early ? Math.floor(Math.random() * 40) : 100 + Math.floor(Math.random() * 500);
      await runAndKill(dir, log, seed, delay, early ? 'loaded' : 'ready', faults);
      const text = await fs.readFile(log, 'utf8').catch(() => '');
      const parsed = parseLog(text);
      const { events, failures } = parsed;
      totalCheckpoints += parsed.checkpoints;
      failedCheckpoints += parsed.failedCheckpoints;
      expect(failures, `cycle ${cycle}`).to.deep.equal([]);

      // Per key, the allowed final states.
      const allowed = new Map<string, State[]>();
      const byKey = new Map<string, LogEvent[]>();
      for (const e of events) {
        if (!byKey.has(e.key)) byKey.set(e.key, []);
        byKey.get(e.key)!.push(e);
      }
      for (const [key, list] of byKey) {
        let acked: State = model.get(key);
        let open: LogEvent | undefined;
        let uncertain: State[] = [];
        for (const e of list) {
          if (e.phase === 'error') {
            expect(open && open.writer === e.writer && open.seq === e.seq, `${key}: error matches its start`).to.equal(true);
            uncertain.push(asState(e.state));
            open = undefined;
            failedOps++;
          } else if (e.phase === 'start') {
            expect(open, `${key}: operations on one key never overlap`).to.equal(undefined);
            open = e;
          } else {
            expect(open && open.writer === e.writer && open.seq === e.seq, `${key}: ack matches its start`).to.equal(true);
            expect(e.state, `${key}: acknowledged state is the announced one`).to.equal(open!.state);
            acked = asState(e.state);
            uncertain = [];
            open = undefined;
            totalAcks++;
          }
        }
        if (open) inFlightSeen++;
        allowed.set(key, [acked, ...uncertain, ...(open ? [asState(open.state)] : [])]);
      }

      const warnings: string[] = [];
      const store = await openStore(dir, { blockSize: 64 * 1024, warn: (m) => warnings.push(m) });
      try {
        const next = new Map<string, State>();
        const keys = new Set([...model.keys(), ...allowed.keys()]);
        for (const key of keys) {
          const info = store.head(key);
          const actual = info ? await md5Of(store, key) : undefined;
          if (info) expect(info.etag, `${key}: etag matches the bytes`).to.equal(actual);
          const options = allowed.get(key) ?? [model.get(key)];
          expect(options, `cycle ${cycle} (kill after ${delay} ms): ${key} is ${actual ?? 'absent'}`).to.include(actual);
          next.set(key, actual);
        }
        const unexpected = allKeys(store).filter((k) => !keys.has(k));
        expect(unexpected, 'keys nobody wrote').to.deep.equal([]);
        model = next;
      } finally {
        await store.close();
      }
    }
    if (process.env.CRASH_VERBOSE) {
      console.log(`acknowledged ${totalAcks}, in flight at a kill ${inFlightSeen}, checkpoints ${totalCheckpoints}, failed: ${failedOps} operations, ${failedCheckpoints} checkpoints`);
    }
    if (faults) {
      expect(failedOps, 'operations hit by a fault').to.be.above(0);
      expect(failedCheckpoints, 'checkpoints hit by a fault').to.be.above(0);
    }
    expect(totalAcks, 'acknowledged operations over all cycles').to.be.above(100);
    // With faults on, many checkpoints fail (and are tried again): count the attempts, and
    // require some to succeed.
    expect(totalCheckpoints + failedCheckpoints, 'checkpoints during the writes').to.be.above(8);
    expect(totalCheckpoints, 'checkpoints that succeeded').to.be.above(0);
    expect(inFlightSeen, 'operations in flight at a kill').to.be.above(0);
    // The directory is left clean: one db, no journal records, the original can read it.
    const snapshot = await readSnapshot(dir);
    await closeSnapshot(snapshot);
    expect(snapshot.journalPayloads, 'journal records not folded into the db').to.have.length(0);
    expect(snapshot.dbName).to.not.equal(undefined);
  }

  it('kill -9 during concurrent writes loses no acknowledged operation (several cycles, one directory)', () => crashCycles(12, false));

  it('the same with a failing disk: journal appends, block and journal opens, journal renames and db writes fail now and then', () =>
    crashCycles(8, true));

  it('a put into a new block file is acknowledged only after a directory sync that follows the file creation', async () => {
    // Power loss cannot be simulated here, so the order of the system calls is checked: the
    // block file's directory entry must be durable before the record pointing into it is.
    const dir = await tempDir('dirsync');
    const events: string[] = [];
    const realOpen = fs.open;
    const patched = async (file: PathLike | fs.FileHandle, flags?: string | number, mode?: Mode) => {
      const name = path.basename(String(file));
      if (flags === 'wx' && name === 'block0000000001') await sleep(50); // a slow create
      const handle = await realOpen(file as PathLike, flags, mode);
      if (flags === 'wx' && name.startsWith('block')) events.push(`created ${name}`);
      if (String(file) === dir && flags === 'r') {
        const realSync = handle.sync.bind(handle);
        handle.sync = () => {
          events.push('dirsync');
          return realSync();
        };
      }
      return handle;
    };
    (fs as { open: unknown }).open = patched;
    try {
      const s = await openStore(dir, { blockSize: 1000 });
      const a = s.put('a', pseudoRandomBytes(100, 1)).then(() => events.push('ack a'));
      const b = s.put('b', pseudoRandomBytes(5000, 2)).then(() => events.push('ack b'));
      await Promise.all([a, b]);
      await s.close();
    } finally {
      (fs as { open: unknown }).open = realOpen;
    }
    for (const [file, ack] of [['block0000000000', 'ack a'], ['block0000000001', 'ack b']]) {
      const created = events.indexOf(`created ${file}`);
      const acked = events.indexOf(ack!);
      expect(created, file).to.be.at.least(0);
      expect(events.slice(created, acked), `${events.join(', ')}`).to.include('dirsync');
    }
  });

  describe('a crash between writing the next db and resetting the journal', () => {
    for (const slots of ['one db', 'two adjacent dbs']) {
      it(`${slots}: the journal's records already in the db are not replayed twice`, async () => {
        const dir = await tempDir('fold');
        const crashed = await tempDir('fold-crashed');
        const s = await openStore(dir, { checkpointBytes: 1 << 30 });
        if (slots === 'two adjacent dbs') {
          await s.put('early', Buffer.from('early'));
          await s.checkpoint();
        }
        for (let i = 0; i < 5; i++) await s.put(`k${i}`, pseudoRandomBytes(100 * i, i));
        await s.delete('k1');
        const revision = s.revision;
        await copyStoreDir(dir, crashed); // the journal still holds the last six records
        await s.checkpoint();
        const [db] = (await fs.readdir(dir)).filter((n) => n.startsWith('db'));
        await fs.copyFile(path.join(dir, db!), path.join(crashed, db!)); // the new db made it to disk
        await s.close();
        const clean = await openStore(dir, { readOnly: true });
        const expected = allKeys(clean);
        await clean.close();
        const t = await openStore(crashed);
        expect(t.revision).to.equal(revision);
        expect(allKeys(t)).to.deep.equal(expected);
        await t.put('more', Buffer.from('more'));
        await t.close();
        const u = await openStore(crashed, { readOnly: true });
        expect(u.revision).to.equal(revision + 1);
        await u.close();
      });
    }
  });

  it("a flipped bit in the journal's base revision: refused naming the journal, never records silently skipped", async () => {
    const dir = await tempDir('base');
    const base = await tempDir('base-crashed');
    const s = await openStore(dir, { checkpointBytes: 1 << 30, fsync: false });
    for (let i = 0; i < 9; i++) await s.put(`folded${i}`, pseudoRandomBytes(50 + i, i));
    await s.checkpoint(); // the journal now continues revision 9
    for (let i = 0; i < 6; i++) await s.put(`journal${i}`, pseudoRandomBytes(60 + i, 100 + i));
    await s.delete('folded0');
    const expected = allKeys(s);
    await copyStoreDir(dir, base);
    await s.close();
    const journal = await fs.readFile(path.join(base, JOURNAL));
    expect(Number(journal.readBigUInt64LE(8))).to.equal(9);
    const root = await tempDir('base-flips');
    let refused = 0;
    for (let at = 8; at < 16; at++) {
      for (const mask of [1, 2, 4, 8, 16, 32, 64, 128, 0xff]) {
        const work = path.join(root, `${at}-${mask}`);
        await copyStoreDir(base, work);
        const damaged = Buffer.from(journal);
        damaged[at]! ^= mask;
        await fs.writeFile(path.join(work, JOURNAL), damaged);
        const snapshot = await snapshotDir(work);
        const label = `byte ${at} ^ 0x${mask.toString(16)}`;
        try {
          const t = await openStore(work, { warn: () => undefined, fsync: false });
          // Served: then it must be the whole state, nothing skipped.
          expect(allKeys(t), label).to.deep.equal(expected);
          await t.close();
        } catch (err) {
          expect(err, label).to.be.instanceOf(StoreCorruptError);
          expect((err as Error).message, label).to.include(JOURNAL);
          const after = await snapshotDir(work);
          for (const [name, data] of snapshot) expect(after.get(name)?.equals(data), `${label}: ${name} untouched`).to.equal(true);
          refused++;
        }
      }
    }
    expect(refused).to.equal(8 * 9);
  });

  describe('a torn or damaged journal tail', () => {
    let base: string;
    let beforeState: Map<string, string | undefined>;
    let lastStart: number;
    let lastEnd: number;

    before(async () => {
      const dir = await tempDir('journal');
      base = await tempDir('journal-base');
      const s = await openStore(dir, { checkpointBytes: 1 << 30, blockSize: 16 * 1024 });
      for (let i = 0; i < 12; i++) await s.put(`k${i}`, pseudoRandomBytes(i * 1500, i));
      await s.delete('k3');
      await s.copy('k4', 'k4-copy');
      beforeState = new Map();
      for (const key of allKeys(s)) beforeState.set(key, await md5Of(s, key));
      const lastBefore = (await fs.stat(path.join(dir, JOURNAL))).size;
      await s.put('last', pseudoRandomBytes(5000, 99), { metadata: { 'X-Amz-Meta-Note': 'the last record' } });
      await copyStoreDir(dir, base);
      await s.close();
      lastStart = lastBefore;
      lastEnd = (await fs.stat(path.join(base, JOURNAL))).size;
      expect(lastEnd - lastStart).to.be.above(40);
    });

    async function expectBefore(work: string, label: string, warned: boolean) {
      const warnings: string[] = [];
      const s = await openStore(work, { warn: (m) => warnings.push(m), fsync: false });
      let closed = false;
      try {
        expect(s.head('last'), label).to.equal(undefined);
        expect(allKeys(s), label).to.deep.equal([...beforeState.keys()]);
        for (const [key, md5] of beforeState) expect(await md5Of(s, key), `${label} ${key}`).to.equal(md5);
        if (warned) {
          expect(warnings.length, `${label}: a warning`).to.be.above(0);
          expect(warnings.join('\n')).to.include(JOURNAL);
        }
        // New writes after the recovery are durable (checked on a crash copy).
        await s.put('after', Buffer.from(label));
        await s.delete('k0');
        const crashed = `${work}-crashed`;
        await copyStoreDir(work, crashed);
        await s.close();
        closed = true;
        const t = await openStore(crashed, { warn: () => undefined, fsync: false });
        try {
          expect((await t.read(t.head('after')!)).toString(), label).to.equal(label);
          expect(t.head('k0'), label).to.equal(undefined);
          expect(t.head('last'), label).to.equal(undefined);
          expect(t.head('k1'), label).to.not.equal(undefined);
        } finally {
          await t.close();
        }
      } finally {
        if (!closed) await s.close();
      }
    }

    it('the full journal holds the last record', async () => {
      const work = await tempDir('journal-full');
      await copyStoreDir(base, work);
      const s = await openStore(work);
      expect(await md5Of(s, 'last')).to.equal(md5hex(pseudoRandomBytes(5000, 99)));
      expect(s.head('last')!.metadata).to.deep.equal({ 'X-Amz-Meta-Note': 'the last record' });
      await s.close();
    });

    it('cut at every length inside the last record: the state before it, with a warning', async () => {
      const root = await tempDir('journal-torn');
      for (let len = lastStart; len < lastEnd; len++) {
        const work = path.join(root, String(len));
        await copyStoreDir(base, work);
        await fs.truncate(path.join(work, JOURNAL), len);
        await expectBefore(work, `cut at ${len}`, len > lastStart);
      }
    });

    it('a flipped byte anywhere in the last record (CRC): the state before it, with a warning', async () => {
      const root = await tempDir('journal-flip');
      for (let at = lastStart; at < lastEnd; at++) {
        const work = path.join(root, String(at));
        await copyStoreDir(base, work);
        const file = path.join(work, JOURNAL);
        const buf = await fs.readFile(file);
        buf[at]! ^= 0x41;
        await fs.writeFile(file, buf);
        await expectBefore(work, `flip at ${at}`, true);
      }
    });
  });

  describe('a corrupt db is refused and left untouched', () => {
    async function storeWithDb(): Promise<string> {
      const dir = await tempDir('corrupt');
      const s = await openStore(dir);
      for (let i = 0; i < 5; i++) await s.put(`k${i}`, pseudoRandomBytes(100 + i, i));
      await s.close();
      return dir;
    }

    async function expectRefused(dir: string, pattern: RegExp): Promise<StoreCorruptError> {
      const snapshot = await snapshotDir(dir);
      const err = await rejection(openStore(dir));
      expect(err).to.be.instanceOf(StoreCorruptError);
      expect(err.message).to.match(pattern);
      const after = await snapshotDir(dir);
      expect([...after.keys()].sort()).to.deep.equal([...snapshot.keys()].sort());
      for (const [name, data] of snapshot) expect(after.get(name)!.equals(data), name).to.equal(true);
      // Read-only opening refuses it as well.
      expect(await rejection(openStore(dir, { readOnly: true }))).to.be.instanceOf(StoreCorruptError);
      return err as StoreCorruptError;
    }

    it('garbage instead of gzip', async () => {
      const dir = await storeWithDb();
      await fs.writeFile(path.join(dir, 'db0000000000'), pseudoRandomBytes(300, 5));
      await expectRefused(dir, /db0000000000/);
    });

    it('a truncated gzip', async () => {
      const dir = await storeWithDb();
      const file = path.join(dir, 'db0000000000');
      const data = await fs.readFile(file);
      await fs.writeFile(file, data.subarray(0, Math.floor(data.length / 2)));
      await expectRefused(dir, /db0000000000/);
    });

    it('valid gzip of something that is not a Db', async () => {
      const dir = await storeWithDb();
      await fs.writeFile(path.join(dir, 'db0000000000'), zlib.gzipSync(pseudoRandomBytes(300, 6)));
      await expectRefused(dir, /db0000000000/);
    });

    it('a record pointing past the end of its block (a truncated block file)', async () => {
      const dir = await storeWithDb();
      await fs.truncate(path.join(dir, 'block0000000000'), 250);
      // k0 (100 bytes at 0) and k1 (101 at 100) fit; k2 (102 at 201) does not: revision 2.
      const err = await expectRefused(dir, /db0000000000/);
      expect(err.message).to.match(/revision 2\b/);
      expect(err.message).to.include('block0000000000');
    });

    it('a record pointing into a block file that is missing', async () => {
      const dir = await storeWithDb();
      await fs.rm(path.join(dir, 'block0000000000'));
      const err = await expectRefused(dir, /db0000000000/);
      expect(err.message).to.match(/revision 0\b/);
    });

    function handMadeDb(records: Uint8Array[]): Buffer {
      const w = protobuf.Writer.create();
      w.uint32((2 << 3) | 0).sint32(1);
      for (const r of records) w.uint32((3 << 3) | 2).bytes(r);
      return zlib.gzipSync(w.finish());
    }

    it('a PutRecord without a Location', async () => {
      const dir = await tempDir('no-location');
      await fs.writeFile(path.join(dir, 'block0000000000'), Buffer.from('abc'));
      const good = encodeHistoryRecord({ kind: 'put', key: 'ok', location: { block: 0, offset: 0, size: 3 } });
      const put = protobuf.Writer.create().uint32((1 << 3) | 2).string('bad').finish();
      const bad = protobuf.Writer.create().uint32((1 << 3) | 2).bytes(put).finish();
      await fs.writeFile(path.join(dir, 'db0000000000'), handMadeDb([good, good, bad]));
      const err = await expectRefused(dir, /db0000000000/);
      expect(err.message).to.match(/revision 2\b/);
    });

    it('a HistoryRecord with no record set', async () => {
      const dir = await tempDir('no-oneof');
      await fs.writeFile(path.join(dir, 'block0000000000'), Buffer.from('abc'));
      const good = encodeHistoryRecord({ kind: 'put', key: 'ok', location: { block: 0, offset: 0, size: 3 } });
      await fs.writeFile(path.join(dir, 'db0000000000'), handMadeDb([good, new Uint8Array(0), good]));
      const err = await expectRefused(dir, /db0000000000/);
      expect(err.message).to.match(/revision 1\b/);
    });

    it('a well-formed hand-made db opens (control)', async () => {
      const dir = await tempDir('hand-made');
      await fs.writeFile(path.join(dir, 'block0000000000'), Buffer.from('abc'));
      const db = encodeDb(1, [
        { kind: 'put', key: 'ok', location: { block: 0, offset: 0, size: 3 } },
        { kind: 'put', key: 'empty', location: { block: 0, offset: 0, size: 0 } },
        { kind: 'delete', key: 'ok' },
      ]);
      await fs.writeFile(path.join(dir, 'db0000000000'), zlib.gzipSync(db));
      const s: Store = await openStore(dir);
      expect(allKeys(s)).to.deep.equal(['empty']);
      await s.close();
    });
  });
});
