/** Names of the files in a store directory, and small file-system helpers shared by the engine. */
import fs from 'node:fs/promises';
import path from 'node:path';

export const DB_SLOTS = 10;
/** Offsets and sizes are signed 32-bit in the format. */
export const MAX_OBJECT_SIZE = 2 ** 31 - 1;
export const DEFAULT_BLOCK_SIZE = 40 * 1024 * 1024;

export const JOURNAL_FILE = 'zipkv-journal';
export const LOCK_FILE = 'zipkv.lock';
/** Scratch space (spooled bodies, multipart parts); emptied whenever a writer opens the store. */
export const SCRATCH_DIR = 'zipkv-tmp';

const BLOCK_RE = /^block(\d{10})$/;
const DB_RE = /^db(\d{10})$/;

export function blockFileName(id: number): string {
  return `block${String(id).padStart(10, '0')}`;
}

export function dbFileName(slot: number): string {
  return `db${String(slot).padStart(10, '0')}`;
}

export interface DirListing {
  exists: boolean;
  blocks: Map<number, string>;
  dbSlots: number[];
}

/** Lists the blocks and db slots of a directory; a missing directory is an empty listing. */
export async function listStoreDir(dir: string): Promise<DirListing> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, blocks: new Map(), dbSlots: [] };
    throw err;
  }
  const blocks = new Map<number, string>();
  const dbSlots: number[] = [];
  for (const name of names) {
    let m = BLOCK_RE.exec(name);
    if (m) {
      blocks.set(Number(m[1]), name);
      continue;
    }
    m = DB_RE.exec(name);
    if (m && Number(m[1]) < DB_SLOTS) dbSlots.push(Number(m[1]));
  }
  dbSlots.sort((a, b) => a - b);
  return { exists: true, blocks, dbSlots };
}

/** fsync of a directory, so that created, renamed and removed entries survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes a file atomically: temporary file (optionally a copy of `copyFrom` with `data`
 * appended), fsync, rename, fsync of the directory. A crash leaves the old file or the new one.
 */
export async function writeFileAtomic(
  dir: string,
  name: string,
  data: Uint8Array,
  durable: boolean,
  copyFrom?: string,
): Promise<void> {
  const tmp = path.join(dir, `${name}.zipkv-tmp`);
  if (copyFrom) {
    await fs.copyFile(copyFrom, tmp);
    await fs.chmod(tmp, 0o600);
  }
  const handle = await fs.open(tmp, copyFrom ? 'a' : 'w', 0o600);
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, path.join(dir, name));
  if (durable) await syncDir(dir);
}

export async function fileSize(file: string): Promise<number | undefined> {
  try {
    return (await fs.stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
