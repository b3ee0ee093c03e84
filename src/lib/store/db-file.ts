/**
 * The `db%010d` files: finding the current slot, reading it, and writing the next one.
 *
 * A checkpoint does not re-encode the history. A Db is a protobuf message whose repeated field
 * can be continued by appending more field entries, and a gzip file may hold several members,
 * so the next db is the current file's bytes followed by one new gzip member holding the new
 * records and the new next_backend_file (protobuf keeps the last value of a scalar field). The
 * cost of a checkpoint is a file copy plus compressing only what is new.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import { StoreCorruptError } from './errors.js';
import { DB_SLOTS, dbFileName, syncDir, writeFileAtomic } from './files.js';
import { newWriter, writeHistoryEntry, writeNextBackendFile } from './schema.js';

const gunzip = promisify(zlib.gunzip);
const gzip = promisify(zlib.gzip);

/**
 * The current slot among those present. One slot is the current one; two adjacent slots are
 * what a crash between writing the next db and deleting the previous leaves, and the newer one
 * (the successor mod 10) is current. Anything else is ambiguous and refused.
 */
export function currentDbSlot(slots: number[], dir: string): number | undefined {
  if (slots.length === 0) return undefined;
  if (slots.length === 1) return slots[0];
  if (slots.length === 2) {
    const [a, b] = slots as [number, number];
    if ((a + 1) % DB_SLOTS === b) return b;
    if ((b + 1) % DB_SLOTS === a) return a;
  }
  throw new StoreCorruptError(
    `${dir}: several db files (${slots.map(dbFileName).join(', ')}) and no way to tell which is current; ` +
      'move the ones that are not wanted out of the directory',
  );
}

/** Reads and decompresses a db file; any valid gzip (one member or several) is accepted. */
export async function readDbFile(file: string): Promise<Buffer> {
  const compressed = await fs.readFile(file);
  try {
    return await gunzip(compressed);
  } catch (err) {
    throw new StoreCorruptError(`${file}: not a valid gzip file (${(err as Error).message}); the db is corrupt or truncated`);
  }
}

export interface DbWriteResult {
  slot: number;
  compressedSize: number;
}

/**
 * Writes the db that follows `currentSlot`: the current file plus `encodedRecords` and the new
 * next_backend_file. Returns the new slot once it is durable and the previous slot is removed.
 */
export async function writeNextDb(
  dir: string,
  currentSlot: number | undefined,
  encodedRecords: Iterable<Uint8Array>,
  nextBackendFile: number,
  durable: boolean,
): Promise<DbWriteResult> {
  const writer = newWriter();
  for (const record of encodedRecords) writeHistoryEntry(writer, record);
  writeNextBackendFile(writer, nextBackendFile);
  const member = await gzip(writer.finish());
  const slot = currentSlot === undefined ? 0 : (currentSlot + 1) % DB_SLOTS;
  const previous = currentSlot === undefined ? undefined : path.join(dir, dbFileName(currentSlot));
  await writeFileAtomic(dir, dbFileName(slot), member, durable, previous);
  if (previous) {
    await fs.rm(previous, { force: true });
    if (durable) await syncDir(dir);
  }
  const { size } = await fs.stat(path.join(dir, dbFileName(slot)));
  return { slot, compressedSize: size };
}

/** Replaces the db with a freshly encoded one (rebase); the previous slot is removed. */
export async function writeWholeDb(dir: string, currentSlot: number | undefined, db: Uint8Array, durable: boolean): Promise<number> {
  const slot = currentSlot === undefined ? 0 : (currentSlot + 1) % DB_SLOTS;
  await writeFileAtomic(dir, dbFileName(slot), await gzip(db, { level: 9 }), durable);
  if (currentSlot !== undefined) {
    await fs.rm(path.join(dir, dbFileName(currentSlot)), { force: true });
    if (durable) await syncDir(dir);
  }
  return slot;
}
