/** Names of the files in a store, and the atomic replacement of one, over a Storage. */
import { durably } from './errors.js';
import type { Storage } from './storage/storage.js';

export { SCRATCH_DIR } from './storage/local.js';

export const DB_SLOTS = 10;
/** Offsets and sizes are signed 32-bit in the format. */
export const MAX_OBJECT_SIZE = 2 ** 31 - 1;
export const DEFAULT_BLOCK_SIZE = 40 * 1024 * 1024;

export const JOURNAL_FILE = 'zipkv-journal';
export const LOCK_FILE = 'zipkv.lock';
/** Suffix of a file being written aside before it replaces its name. */
export const TMP_SUFFIX = '.zipkv-tmp';

const BLOCK_RE = /^block(\d{10})$/;
const DB_RE = /^db(\d{10})$/;

export function blockFileName(id: number): string {
  return `block${String(id).padStart(10, '0')}`;
}

export function dbFileName(slot: number): string {
  return `db${String(slot).padStart(10, '0')}`;
}

export interface StoreListing {
  /** Block id -> file name. */
  blocks: Map<number, string>;
  /** db slots present, ascending. */
  dbSlots: number[];
}

/** The blocks and db slots of a store; a missing directory is an empty listing. */
export async function listStore(storage: Storage): Promise<StoreListing> {
  const blocks = new Map<number, string>();
  const dbSlots: number[] = [];
  for (const name of await storage.list()) {
    let m = BLOCK_RE.exec(name);
    if (m) {
      blocks.set(Number(m[1]), name);
      continue;
    }
    m = DB_RE.exec(name);
    if (m && Number(m[1]) < DB_SLOTS) dbSlots.push(Number(m[1]));
  }
  dbSlots.sort((a, b) => a - b);
  return { blocks, dbSlots };
}

/**
 * Replaces `name` atomically: a temporary file (optionally a copy of `copyFrom` with `data`
 * appended) is written and synced, then renamed over `name`, then the directory is synced. A
 * crash leaves the old file or the new one. A failure before the rename leaves `name` as it
 * was (the temporary file is removed); a failed sync is a DurabilityError. Returns the size of
 * the new file.
 */
export async function replaceFile(
  storage: Storage,
  name: string,
  data: readonly Uint8Array[],
  durable: boolean,
  copyFrom?: string,
): Promise<number> {
  const tmp = name + TMP_SUFFIX;
  let size = 0;
  try {
    let at = 0;
    if (copyFrom) {
      await storage.copy(copyFrom, tmp);
      at = (await storage.stat(tmp))?.size ?? 0;
    }
    const file = copyFrom ? await storage.openWrite(tmp) : await storage.create(tmp);
    try {
      await file.writev(data, at);
      size = at + data.reduce((n, d) => n + d.length, 0);
      if (durable) await durably(tmp, 'fsync', () => file.sync());
    } finally {
      await file.close();
    }
    await storage.rename(tmp, name);
  } catch (err) {
    await storage.remove(tmp).catch(() => undefined);
    throw err;
  }
  if (durable) await durably(storage.root, 'fsync', () => storage.syncDir());
  return size;
}
