/**
 * The store's one history decoder (replay.ts) must decode exactly what the reference decoder
 * (test/helpers/reference-db.ts, over protobufjs' Reader) decodes, field for field, and refuse
 * what it refuses.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { StoreCorruptError } from '../../src/lib/store/errors.js';
import { DbReplayer, replayDb, replayDbStream } from '../../src/lib/store/replay.js';
import { scanDb } from '../helpers/reference-db.js';
import fsSync from 'node:fs';
import { tempDir } from '../helpers/paths.js';

type Decoded = string; // one line per record, or 'error'

let seed = 12345;
function rand(n: number): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
}

function randomBytes(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => rand(256));
}

function unknownField(w: protobuf.Writer): void {
  const field = 8 + rand(20);
  switch (rand(4)) {
    case 0:
      w.uint32((field << 3) | 0).uint64(rand(2) ? 2 ** 40 + rand(1000) : rand(300));
      break;
    case 1:
      w.uint32((field << 3) | 1).fixed64(rand(1000));
      break;
    case 2:
      w.uint32((field << 3) | 2).bytes(randomBytes(rand(20)));
      break;
    default:
      w.uint32((field << 3) | 5).fixed32(rand(1000));
  }
}

function location(): Uint8Array {
  const w = protobuf.Writer.create();
  const n = rand(8);
  for (let i = 0; i < n; i++) {
    switch (rand(8)) {
      case 0:
        w.uint32((1 << 3) | 0).sint32(rand(5) - 1);
        break;
      case 1:
        w.uint32((2 << 3) | 0).sint32(rand(2) ? rand(1 << 30) : rand(100));
        break;
      case 2:
        w.uint32((3 << 3) | 0).sint32(rand(2) ? rand(2 ** 31 - 1) : rand(100));
        break;
      case 3:
        w.uint32((4 << 3) | 2).bytes(randomBytes(rand(3) === 0 ? 0 : rand(40)));
        break;
      case 4:
        w.uint32((5 << 3) | 2).bytes(randomBytes(rand(3) ? 16 : rand(20)));
        break;
      case 5: {
        const ms = [0, 1, 999, 1000, 1_700_000_000_123, -5000, 2 ** 52 + 2, -(2 ** 40)][rand(8)]!;
        w.uint32((6 << 3) | 0).sint64(ms);
        break;
      }
      case 6:
        w.uint32((7 << 3) | 2).string(['', 'abc-3', 'é\u{1F600}'][rand(3)]!);
        break;
      default:
        unknownField(w);
    }
  }
  return w.finish();
}

function key(): string {
  return ['', 'a', 'dir/é', '\u{1F600}\uE000', 'k' + rand(10)][rand(5)]!;
}

function historyRecord(valid = false): Uint8Array {
  const w = protobuf.Writer.create();
  const parts = valid ? 1 : 1 + rand(2);
  for (let i = 0; i < parts; i++) {
    if (rand(4) === 0) unknownField(w);
    if (rand(3)) {
      const put = protobuf.Writer.create();
      if (rand(6)) put.uint32((1 << 3) | 2).string(key());
      if (valid || rand(8)) put.uint32((2 << 3) | 2).bytes(location());
      // A kept record's own revision (valid only in a leading run; a negative one never).
      if (!valid && rand(5) === 0) put.uint32((3 << 3) | 0).sint64(rand(6) === 0 ? -1 - rand(5) : rand(1000));
      if (rand(4) === 0) unknownField(put);
      w.uint32((1 << 3) | 2).bytes(put.finish());
    } else {
      const del = protobuf.Writer.create();
      if (rand(6)) del.uint32((1 << 3) | 2).string(key());
      if (rand(4) === 0) unknownField(del);
      w.uint32((2 << 3) | 2).bytes(del.finish());
    }
  }
  return w.finish();
}

function db(records: Uint8Array[], withFirstRevision = true): Buffer {
  const w = protobuf.Writer.create();
  // first_revision: at the start, or (rarely, and refused) after a record.
  const firstAt = withFirstRevision && rand(4) === 0 ? (rand(3) === 0 ? rand(records.length + 1) : 0) : -1;
  for (const [i, r] of records.entries()) {
    if (i === firstAt) w.uint32((4 << 3) | 0).sint64(rand(8) === 0 ? -rand(3) : rand(5000));
    if (rand(10) === 0) w.uint32((2 << 3) | 0).sint32(rand(50));
    if (rand(15) === 0) unknownField(w);
    w.uint32((3 << 3) | 2).bytes(r);
  }
  return Buffer.from(w.finish());
}

const hex = (b: Uint8Array | undefined) => (b ? Buffer.from(b).toString('hex') : '-');

function withScanDb(buf: Buffer, limit = Infinity): Decoded[] {
  const out: Decoded[] = [];
  try {
    const { nextBlockId, records, firstRevision, historyStart } = scanDb(
      buf,
      'db',
      (r, rev) => {
        if (r.kind === 'delete') out.push(`${rev} delete ${hex(Buffer.from(r.rawKey, 'latin1'))}`);
        else {
          const l = r.location;
          const md5 = l.md5 && l.md5.length === 16 ? hex(l.md5) : '-';
          const meta = l.metadata && l.metadata.length > 0 ? hex(l.metadata) : '-';
          const mtime = l.modifiedMs ? Math.floor(l.modifiedMs / 1000) : 0;
          out.push(`${rev} put ${hex(Buffer.from(r.rawKey, 'latin1'))} ${l.block} ${l.offset} ${l.size} ${meta} ${md5} ${mtime} ${l.etag || '-'} ${r.revision ?? '-'}`);
        }
      },
      limit,
    );
    out.push(`next ${nextBlockId} records ${records} first ${firstRevision} start ${historyStart}`);
  } catch (err) {
    expect(err).to.be.instanceOf(StoreCorruptError);
    out.push('error');
  }
  return out;
}

function withReplay(feed: (r: DbReplayer) => void, limit = Infinity): Decoded[] {
  const out: Decoded[] = [];
  const replayer = new DbReplayer(
    'db',
    {
      put(rawKey, f, rev) {
        const md5 = f.md5At >= 0 ? hex(f.buf.subarray(f.md5At, f.md5At + 16)) : '-';
        const kept = f.keptRevision >= 0 ? f.keptRevision : '-';
        out.push(`${rev} put ${hex(Buffer.from(rawKey, 'latin1'))} ${f.block} ${f.offset} ${f.size} ${f.meta === undefined ? '-' : hex(Buffer.from(f.meta, 'latin1'))} ${md5} ${Math.floor(f.modifiedMs / 1000)} ${f.etag ?? '-'} ${kept}`);
      },
      delete(rawKey, rev) {
        out.push(`${rev} delete ${hex(Buffer.from(rawKey, 'latin1'))}`);
      },
    },
    limit,
  );
  try {
    feed(replayer);
    const { nextBlockId, records, firstRevision, historyStart } = replayer.finish();
    out.push(`next ${nextBlockId} records ${records} first ${firstRevision} start ${historyStart}`);
  } catch (err) {
    expect(err).to.be.instanceOf(StoreCorruptError);
    out.push('error');
  }
  return out;
}

/** The records decoded before an error are not compared: only whether there was one. */
function outcome(lines: Decoded[]): Decoded[] {
  return lines.at(-1) === 'error' ? ['error'] : lines;
}

describe('store: the fast history scanner decodes what the reference decoder does', () => {
  it('random histories (well-formed or not), whole and fed in pieces of every size', () => {
    for (let round = 0; round < 300; round++) {
      const buf = db(Array.from({ length: rand(12) }, () => historyRecord()));
      const expected = withScanDb(buf);
      expect(outcome(withReplay((r) => r.push(buf))), `round ${round}`).to.deep.equal(outcome(expected));
      const piece = 1 + rand(40);
      expect(
        outcome(
          withReplay((r) => {
            for (let at = 0; at < buf.length; at += piece) r.push(buf.subarray(at, at + piece));
          }),
        ),
        `round ${round}, pieces of ${piece}`,
      ).to.deep.equal(outcome(expected));
      const limit = rand(6);
      expect(outcome(withReplay((r) => r.push(buf), limit)), `round ${round}, limit ${limit}`).to.deep.equal(outcome(withScanDb(buf, limit)));
    }
  });

  it('a put without a location and a record with neither put nor delete are errors naming the revision', () => {
    const put = protobuf.Writer.create().uint32((1 << 3) | 2).string('k').finish();
    const noLocation = protobuf.Writer.create().uint32((1 << 3) | 2).bytes(put).finish();
    const good = protobuf.Writer.create().uint32((2 << 3) | 2).bytes(put).finish();
    for (const [records, message] of [
      [[good, noLocation], /revision 1 is a put without a location/],
      [[good, good, new Uint8Array(0)], /revision 2 is neither a put nor a delete/],
    ] as const) {
      const buf = db([...records]);
      expect(() => replayDb(buf, 'dbfile', { put() {}, delete() {} })).to.throw(StoreCorruptError, message);
      expect(() => scanDb(buf, 'dbfile', () => undefined)).to.throw(StoreCorruptError, message);
    }
  });

  it('truncated and damaged histories are refused, as by the reference', () => {
    const buf = db(Array.from({ length: 30 }, () => historyRecord()));
    for (let len = 0; len < buf.length; len++) {
      const cut = buf.subarray(0, len);
      const reference = outcome(withScanDb(cut));
      const fast = outcome(withReplay((r) => r.push(cut)));
      if (reference[0] === 'error') expect(fast, `cut at ${len}`).to.deep.equal(['error']);
      else if (fast[0] !== 'error') expect(fast, `cut at ${len}`).to.deep.equal(reference);
    }
    for (let at = 0; at < buf.length; at++) {
      const bad = Buffer.from(buf);
      bad[at] ^= 0xa5;
      const reference = outcome(withScanDb(bad));
      const fast = outcome(withReplay((r) => r.push(bad)));
      // The fast scanner may be stricter (a field running past its record), never looser.
      if (reference[0] === 'error') expect(fast, `flip at ${at}`).to.deep.equal(['error']);
      else if (fast[0] !== 'error') expect(fast, `flip at ${at}`).to.deep.equal(reference);
    }
  });

  it('reads gzip files of one or several members, and refuses a truncated one', async () => {
    const dir = await tempDir('replay');
    const a = db(Array.from({ length: 50 }, () => historyRecord(true)));
    const b = db(Array.from({ length: 50 }, () => historyRecord(true)), false);
    const whole = Buffer.concat([a, b]);
    const file = path.join(dir, 'db0000000000');
    await fs.writeFile(file, Buffer.concat([zlib.gzipSync(a), zlib.gzipSync(b, { level: 1 })]));
    const seen: string[] = [];
    const handler = { put: (k: string) => void seen.push(`p${k}`), delete: (k: string) => void seen.push(`d${k}`) };
    const result = await replayDbStream(fsSync.createReadStream(file), file, handler);
    const reference: string[] = [];
    const expected = scanDb(whole, 'x', (r) => void reference.push(`${r.kind === 'put' ? 'p' : 'd'}${r.rawKey}`));
    expect(result).to.deep.equal(expected);
    expect(seen).to.deep.equal(reference);
    const gz = zlib.gzipSync(whole);
    for (const len of [0, 5, 10, Math.floor(gz.length / 2), gz.length - 1]) {
      await fs.writeFile(file, gz.subarray(0, len));
      let err: unknown;
      await replayDbStream(fsSync.createReadStream(file), file, { put() {}, delete() {} }).catch((e: unknown) => (err = e));
      expect(err, `cut at ${len}`).to.be.instanceOf(StoreCorruptError);
      expect((err as Error).message).to.include(file);
    }
  });
});
