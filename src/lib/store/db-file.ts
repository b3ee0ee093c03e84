/**
 * The `db%010d` files: finding the current slot, and writing the next one.
 *
 * A checkpoint does not re-encode the history. A Db is a protobuf message whose repeated field
 * can be continued by appending more field entries, and a gzip file may hold several members,
 * so the next db is the current file's bytes followed by one new gzip member holding the new
 * records and the new next_backend_file (protobuf keeps the last value of a scalar field). The
 * cost of a checkpoint is a file copy plus compressing only what is new.
 */
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { StoreCorruptError, durably } from './errors.js';
import { DB_SLOTS, TMP_SUFFIX, dbFileName, replaceFile } from './files.js';
import { newWriter, writeFirstRevision, writeHistoryEntry, writeNextBackendFile } from './schema.js';
import type { Storage, WritableFile } from './storage/storage.js';

const gzip = promisify(zlib.gzip);

/**
 * The current slot among those present. One slot is the current one; two adjacent slots are
 * what a crash between writing the next db and deleting the previous leaves, and the newer one
 * (the successor mod 10) is current. Anything else is ambiguous and refused.
 */
export function currentDbSlot(slots: number[], where: string): number | undefined {
  if (slots.length === 0) return undefined;
  if (slots.length === 1) return slots[0];
  if (slots.length === 2) {
    const [a, b] = slots as [number, number];
    if ((a + 1) % DB_SLOTS === b) return b;
    if ((b + 1) % DB_SLOTS === a) return a;
  }
  throw new StoreCorruptError(
    `${where}: several db files (${slots.map(dbFileName).join(', ')}) and no way to tell which is current; ` +
      'move the ones that are not wanted out of the directory',
  );
}

function nextSlot(currentSlot: number | undefined): number {
  return currentSlot === undefined ? 0 : (currentSlot + 1) % DB_SLOTS;
}

export interface DbWriteResult {
  slot: number;
  compressedSize: number;
}

/** Removes the slot a new db replaced; a crash before this leaves two adjacent slots. */
async function dropPrevious(storage: Storage, previous: number | undefined, durable: boolean): Promise<void> {
  if (previous === undefined) return;
  await storage.remove(dbFileName(previous));
  if (durable) await durably(storage.root, 'fsync', () => storage.syncDir());
}

/**
 * Writes the db that follows `currentSlot`: the current file plus `encodedRecords` and the new
 * next_backend_file. Returns the new slot once it is durable and the previous slot is removed.
 */
export async function writeNextDb(
  storage: Storage,
  currentSlot: number | undefined,
  encodedRecords: Iterable<Uint8Array>,
  nextBlockId: number,
  durable: boolean,
): Promise<DbWriteResult> {
  const writer = newWriter();
  for (const record of encodedRecords) writeHistoryEntry(writer, record);
  writeNextBackendFile(writer, nextBlockId);
  const member = await gzip(writer.finish());
  const slot = nextSlot(currentSlot);
  const previous = currentSlot === undefined ? undefined : dbFileName(currentSlot);
  const compressedSize = await replaceFile(storage, dbFileName(slot), [member], durable, previous);
  await dropPrevious(storage, currentSlot, durable);
  return { slot, compressedSize };
}

/** Records are gathered into protobuf pieces of about this size before compression. */
const PIECE_BYTES = 256 * 1024;

/** A Db message in pieces: first_revision, next_backend_file, then the records. */
async function* dbPieces(records: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, nextBlockId: number, firstRevision: number): AsyncGenerator<Uint8Array> {
  let writer = newWriter();
  writeFirstRevision(writer, firstRevision);
  writeNextBackendFile(writer, nextBlockId);
  let pending = 0;
  for await (const record of records) {
    writeHistoryEntry(writer, record);
    pending += record.length + 6;
    if (pending >= PIECE_BYTES) {
      yield writer.finish();
      writer = newWriter();
      pending = 0;
    }
  }
  yield writer.finish();
}


/**
 * Writes a whole new db into the slot after `currentSlot` from a stream of encoded records
 * (rebase, compaction), compressing as it goes: memory stays bounded whatever the history's
 * length. `firstRevision` is the revision of the first record.
 */
export async function writeWholeDb(
  storage: Storage,
  currentSlot: number | undefined,
  encodedRecords: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  nextBlockId: number,
  durable: boolean,
  firstRevision = 0,
): Promise<DbWriteResult> {
  const slot = nextSlot(currentSlot);
  const name = dbFileName(slot);
  const tmp = name + TMP_SUFFIX;
  let file: WritableFile | undefined;
  let position = 0;
  try {
    file = await storage.create(tmp);
    const out = file;
    await pipeline(
      Readable.from(dbPieces(encodedRecords, nextBlockId, firstRevision)),
      zlib.createGzip({ level: 9 }),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          out.writev([chunk], position).then(() => {
            position += chunk.length;
            callback();
          }, callback);
        },
      }),
    );
    if (durable) await durably(`${storage.root}/${tmp}`, 'fsync', () => out.sync());
    await out.close();
    file = undefined;
    await storage.rename(tmp, name);
  } catch (err) {
    await file?.close().catch(() => undefined);
    await storage.remove(tmp).catch(() => undefined);
    throw err;
  }
  if (durable) await durably(storage.root, 'fsync', () => storage.syncDir());
  await dropPrevious(storage, currentSlot, durable);
  return { slot, compressedSize: position };
}
