/**
 * Child process of the crash tests: opens a store and writes to it from many concurrent writers
 * until it is killed. Usage: node crash-child.js <dir> <log file> <seed> [writers]
 *
 * Every operation is logged with a synchronous write to the log file:
 *   start <writer> <seq> <op> <key> <md5|deleted>   before the operation begins
 *   ack   <writer> <seq> <op> <key> <md5|deleted>   once the store has acknowledged it
 * Each key belongs to one writer, so the operations on a key never overlap: a key's final state
 * must be that of its last acknowledged operation, or of the operation started after it.
 * Keys are JSON-encoded in the log (they contain spaces and non-ASCII characters).
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { openStore } from '../../src/lib/store/store.js';

const [dir, logFile, seedArg, writersArg] = process.argv.slice(2);
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
    if (r < 0.55) {
      const body = randomBytes(bodySize());
      const md5 = createHash('md5').update(body).digest('hex');
      const mode = rand();
      line(`start ${tag('put', md5)}`);
      let info;
      if (mode < 0.6) info = await store.put(key, body);
      else if (mode < 0.9) {
        const cut = Math.floor(body.length / 2);
        info = await store.put(key, Readable.from([body.subarray(0, cut), body.subarray(cut)]), { size: body.length });
      } else info = await store.put(key, Readable.from([body]));
      line(`ack ${tag('put', info.etag!)}`);
    } else if (r < 0.75) {
      const live = keys.filter((k) => store.head(k) !== undefined);
      if (live.length === 0) continue;
      const source = pick(live);
      const expected = store.head(source)!.etag!;
      line(`start ${tag('copy', expected)}`);
      const info = await store.copy(source, key, rand() < 0.5 ? { 'X-Amz-Meta-Copy': String(seq) } : undefined);
      line(`ack ${tag('copy', info!.etag!)}`);
    } else {
      line(`start ${tag('delete', 'deleted')}`);
      await store.delete(key);
      line(`ack ${tag('delete', 'deleted')}`);
    }
  }
}

process.stdout.write('loaded\n');
const store = await openStore(dir, { blockSize: 64 * 1024, checkpointBytes: 16 * 1024, fsync: true, warn: () => undefined });
line('ready');
process.stdout.write('ready\n');
/**
 * Checkpoints now and then, besides those the journal size triggers (which grow rarer as the
 * db grows): each rolls the open block while writes into it are in flight.
 */
async function checkpointer(): Promise<never> {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 20 + Math.floor(rand() * 60)));
    await store.checkpoint();
    line('checkpoint');
  }
}

await Promise.all([checkpointer(), ...Array.from({ length: writers }, (_, w) => writer(store, w))]).catch((err: Error) => {
  line(`fail ${JSON.stringify(err.stack ?? String(err))}`);
  process.exit(1);
});
