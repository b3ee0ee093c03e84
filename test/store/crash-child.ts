/**
 * Child process of the crash tests: opens a store and writes to it from many concurrent writers
 * until it is killed. Usage: node crash-child.js <dir> <log file> <seed> [writers] [faults]
 *
 * With `faults`, the store's files fail now and then the way a full disk or a process out of
 * file descriptors makes them fail (a journal append, a block or journal that cannot be opened,
 * a journal that cannot be renamed, a db that cannot be written): the operation or checkpoint
 * hit fails, is logged as `error`, and the writers go on.
 *
 * Every operation is logged with a synchronous write to the log file:
 *   start <writer> <seq> <op> <key> <md5|deleted>   before the operation begins
 *   ack   <writer> <seq> <op> <key> <md5|deleted>   once the store has acknowledged it
 *   error <writer> <seq> <op> <key> <md5|deleted>   when it failed (not acknowledged)
 * Each key belongs to one writer, so the operations on a key never overlap: a key's final state
 * must be that of its last acknowledged operation, or of the operation started after it.
 * Keys are JSON-encoded in the log (they contain spaces and non-ASCII characters).
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { openStore } from '../../src/lib/store/store.js';

const [dir, logFile, seedArg, writersArg, faultsArg] = process.argv.slice(2);
if (!dir || !logFile) {
  process.stderr.write('usage: crash-child <dir> <log> <seed> [writers]\n');
  process.exit(2);
}
const writers = Number(writersArg ?? 16);
let seed = Number(seedArg ?? 1) >>> 0 || 1;
function rand(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 2 ** 32;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;

const KEYS_PER_WRITER = 6;
function keysOf(writer: number): string[] {
  return Array.from({ length: KEYS_PER_WRITER }, (_, j) => (j === 5 ? `w${writer}/ü \u{1F600} ${j}` : `w${writer}/k${j}`));
}

const log = fs.openSync(logFile, 'a');
const line = (text: string) => fs.writeSync(log, text + '\n');

function bodySize(): number {
  const r = rand();
  if (r < 0.15) return 0;
  if (r < 0.6) return 1 + Math.floor(rand() * 8192);
  if (r < 0.9) return 8192 + Math.floor(rand() * 60_000);
  return 65_536 + Math.floor(rand() * 300_000); // larger than the 64 KiB block
}

async function writer(store: Awaited<ReturnType<typeof openStore>>, w: number): Promise<never> {
  const keys = keysOf(w);
  for (let seq = 0; ; seq++) {
    const key = pick(keys);
    const r = rand();
    const tag = (op: string, state: string) => `${w} ${seq} ${op} ${JSON.stringify(key)} ${state}`;
    let started: string | undefined;
    const start = (op: string, state: string) => {
      started = tag(op, state);
      line(`start ${started}`);
    };
    try {
      await operation(store, keys, key, r, seq, tag, start);
    } catch (err) {
      if (faultsArg !== 'faults' || started === undefined) throw err;
      line(`error ${started}`);
    }
  }
}

async function operation(
  store: Awaited<ReturnType<typeof openStore>>,
  keys: string[],
  key: string,
  r: number,
  seq: number,
  tag: (op: string, state: string) => string,
  start: (op: string, state: string) => void,
): Promise<void> {
  {
    if (r < 0.55) {
      const body = randomBytes(bodySize());
      const md5 = createHash('md5').update(body).digest('hex');
      const mode = rand();
      start('put', md5);
      let info;
      if (mode < 0.6) info = await store.put(key, body);
      else if (mode < 0.9) {
        const cut = Math.floor(body.length / 2);
        info = await store.put(key, Readable.from([body.subarray(0, cut), body.subarray(cut)]), { size: body.length });
      } else info = await store.put(key, Readable.from([body]));
      line(`ack ${tag('put', info.etag!)}`);
    } else if (r < 0.75) {
      const live = keys.filter((k) => store.head(k) !== undefined);
      if (live.length === 0) return;
      const source = pick(live);
      const expected = store.head(source)!.etag!;
      start('copy', expected);
      const info = await store.copy(source, key, rand() < 0.5 ? { 'X-Amz-Meta-Copy': String(seq) } : undefined);
      line(`ack ${tag('copy', info!.etag!)}`);
    } else {
      start('delete', 'deleted');
      await store.delete(key);
      line(`ack ${tag('delete', 'deleted')}`);
    }
  }
}

process.stdout.write('loaded\n');
const storage =
  faultsArg === 'faults'
    ? new FaultyStorage(new LocalStorage(dir))
        .fail({ op: 'write', name: /^zipkv-journal$/, every: 53, code: 'ENOSPC' })
        .fail({ op: 'create', name: /^block/, every: 7, code: 'EMFILE' })
        .fail({ op: 'create', name: /^zipkv-journal\.zipkv-tmp$/, every: 3, code: 'EMFILE' })
        .fail({ op: 'rename', name: /^zipkv-journal\.zipkv-tmp$/, every: 4, code: 'EIO' })
        .fail({ op: 'write', name: /^db\d{10}\.zipkv-tmp$/, every: 5, code: 'ENOSPC' })
    : undefined;
const store = await openStore(dir, { blockSize: 64 * 1024, checkpointBytes: 16 * 1024, fsync: true, warn: () => undefined, storage });
line('ready');
process.stdout.write('ready\n');
/**
 * Checkpoints now and then, besides those the journal size triggers (which grow rarer as the
 * db grows): each rolls the open block while writes into it are in flight.
 */
async function checkpointer(): Promise<never> {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 20 + Math.floor(rand() * 60)));
    try {
      await store.checkpoint();
      line('checkpoint');
    } catch (err) {
      if (faultsArg !== 'faults') throw err;
      line('checkpoint-failed');
    }
  }
}

await Promise.all([checkpointer(), ...Array.from({ length: writers }, (_, w) => writer(store, w))]).catch((err: Error) => {
  line(`fail ${JSON.stringify(err.stack ?? String(err))}`);
  process.exit(1);
});
