/**
 * A full check of a store, read-only and without the lock: the db and journal decode, every put
 * points inside an existing block (the server refuses to open otherwise), the db's
 * next_backend_file covers the blocks it uses (or the original would overwrite them), and every
 * live object's bytes match the MD5 stored with it. Objects the original wrote carry no MD5:
 * they are counted as unverifiable, not as problems.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StoreCorruptError } from './errors.js';
import { blockFileName } from './files.js';
import { type StoreSnapshot, closeSnapshot, readSnapshot, snapshotRecords } from './history.js';
import { locationProblem } from './recovery.js';
import { DirectoryLock } from './lock.js';
import { fromRawKey } from './object-index.js';
import type { Location } from './schema.js';

export interface VerifyProblem {
  message: string;
  key?: string;
  rev?: number;
}

export interface VerifyReport {
  dir: string;
  revisions: number;
  liveObjects: number;
  /** Live objects whose bytes matched their stored MD5. */
  verified: number;
  /** Live objects with no stored MD5 (written by the original): only their location was checked. */
  unverifiable: number;
  bytesRead: number;
  problems: VerifyProblem[];
  /** Facts worth knowing that are not damage (a torn journal tail, a server holding the store). */
  notes: string[];
}

export interface VerifyOptions {
  /** Called as bytes of live objects are read. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

interface LiveObject {
  rev: number;
  rawKey: string;
  location: Location;
}

const READ_CHUNK = 1024 * 1024;

export async function verifyStore(dir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = { dir, revisions: 0, liveObjects: 0, verified: 0, unverifiable: 0, bytesRead: 0, problems: [], notes: [] };
  const holder = await DirectoryLock.holder(dir).catch(() => undefined);
  let snapshot: StoreSnapshot;
  try {
    snapshot = await readSnapshot(dir);
  } catch (err) {
    if (!(err instanceof StoreCorruptError)) throw err;
    report.problems.push({ message: err.message });
    return report;
  }
  try {
    await checkSnapshot(dir, snapshot, holder, report, opts);
  } finally {
    await closeSnapshot(snapshot);
  }
  return report;
}

async function checkSnapshot(dir: string, snapshot: StoreSnapshot, holder: number | undefined, report: VerifyReport, opts: VerifyOptions): Promise<void> {
  if (holder !== undefined) report.notes.push(`process ${holder} holds ${dir}: checked a snapshot of a running store`);
  report.notes.push(...snapshot.warnings);
  report.revisions = snapshot.total;

  let live: LiveObject[];
  try {
    live = await checkRecords(snapshot, report);
  } catch (err) {
    if (!(err instanceof StoreCorruptError)) throw err;
    report.problems.push({ message: err.message });
    return;
  }
  report.liveObjects = live.length;
  await checkBytes(dir, snapshot, live, report, opts);
}

/** Checks every record's location; returns the live objects, in block order for reading. */
async function checkRecords(snapshot: StoreSnapshot, report: VerifyReport): Promise<LiveObject[]> {
  const live = new Map<string, LiveObject>();
  let maxDbBlock = -1;
  let maxDbBlockRev = -1;
  for await (const { rev, record } of snapshotRecords(snapshot)) {
    if (record.kind === 'delete') {
      live.delete(record.rawKey);
      continue;
    }
    const problem = locationProblem(record.location, snapshot.blocks);
    if (problem) {
      const key = fromRawKey(record.rawKey);
      report.problems.push({ rev, key, message: `revision ${rev} (${key}) ${problem}` });
    }
    if (rev < snapshot.dbRecords && record.location.size > 0 && record.location.block > maxDbBlock) {
      maxDbBlock = record.location.block;
      maxDbBlockRev = rev;
    }
    live.set(record.rawKey, { rev, rawKey: record.rawKey, location: record.location });
  }
  if (snapshot.dbFile && maxDbBlock >= snapshot.dbNextBlockId) {
    report.problems.push({
      rev: maxDbBlockRev,
      message:
        `${snapshot.dbFile}: next_backend_file is ${snapshot.dbNextBlockId} but revision ${maxDbBlockRev} uses ` +
        `${blockFileName(maxDbBlock)}: the original server would write a new block over it`,
    });
  }
  return [...live.values()].sort((a, b) => a.location.block - b.location.block || a.location.offset - b.location.offset);
}

async function checkBytes(dir: string, snapshot: StoreSnapshot, live: LiveObject[], report: VerifyReport, opts: VerifyOptions): Promise<void> {
  const readable = live.filter((o) => o.location.size === 0 || locationProblem(o.location, snapshot.blocks) === undefined);
  let total = 0;
  for (let i = 0; i < readable.length; i++) {
    const loc = readable[i]!.location;
    if (hasMd5(loc) && !(i > 0 && sameBytes(readable[i - 1]!.location, loc))) total += loc.size;
  }
  let handle: { id: number; file: fs.FileHandle } | undefined;
  // Copies share bytes: the digest of the previous object is reused when the range is the same.
  let previous: { block: number; offset: number; size: number; md5: string } | undefined;
  try {
    for (const object of readable) {
      const loc = object.location;
      if (!hasMd5(loc)) {
        report.unverifiable++;
        continue;
      }
      let md5: string;
      if (previous && sameBytes(previous, loc)) {
        md5 = previous.md5;
      } else if (loc.size === 0) {
        md5 = createHash('md5').digest('hex');
      } else {
        try {
          if (handle?.id !== loc.block) {
            await handle?.file.close();
            handle = undefined;
            handle = { id: loc.block, file: await fs.open(path.join(dir, blockFileName(loc.block)), 'r') };
          }
          md5 = await hashRange(handle.file, loc.offset, loc.size, (n) => {
            report.bytesRead += n;
            opts.onProgress?.(report.bytesRead, total);
          });
        } catch (err) {
          const key = fromRawKey(object.rawKey);
          report.problems.push({ rev: object.rev, key, message: `${key} (revision ${object.rev}): cannot read its bytes: ${(err as Error).message}` });
          continue;
        }
        previous = { block: loc.block, offset: loc.offset, size: loc.size, md5 };
      }
      const stored = Buffer.from(loc.md5!).toString('hex');
      if (md5 === stored) {
        report.verified++;
      } else {
        const key = fromRawKey(object.rawKey);
        report.problems.push({
          rev: object.rev,
          key,
          message:
            `${key} (revision ${object.rev}, ${blockFileName(loc.block)} at ${loc.offset}, ${loc.size} bytes): ` +
            `bytes have MD5 ${md5}, the store recorded ${stored}`,
        });
      }
    }
  } finally {
    await handle?.file.close();
  }
}

function sameBytes(a: { block: number; offset: number; size: number }, b: Location): boolean {
  return a.block === b.block && a.offset === b.offset && a.size === b.size;
}

function hasMd5(loc: Location): boolean {
  return loc.md5 !== undefined && loc.md5.length === 16;
}

async function hashRange(file: fs.FileHandle, offset: number, size: number, onRead: (bytes: number) => void): Promise<string> {
  const hash = createHash('md5');
  const buf = Buffer.allocUnsafe(Math.min(size, READ_CHUNK));
  let done = 0;
  while (done < size) {
    const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, size - done), offset + done);
    if (bytesRead === 0) throw new Error(`the block ends before offset ${offset + size}`);
    hash.update(buf.subarray(0, bytesRead));
    done += bytesRead;
    onRead(bytesRead);
  }
  return hash.digest('hex');
}
