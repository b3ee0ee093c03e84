/**
 * Rewinding a store. `rebaseInPlace` keeps history[0..to] as the new db, so the store serves
 * the state after operation `to`; no block is touched, and the db and journal it replaces are
 * kept under names no tool takes for its own. `rebaseInto` is the original's rebase: the
 * objects live at a revision are copied into a new store, in key order, leaving dead bytes
 * behind.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { writeNextDb, writeWholeDb } from './db-file.js';
import { DigestMismatchError, StoreCorruptError, StoreError } from './errors.js';
import { JOURNAL_FILE, dbFileName, listStore } from './files.js';
import {
  type StoreSnapshot,
  assertStoreDirectory,
  closeSnapshot,
  readSnapshot,
  snapshotPayloads,
  snapshotRecords,
} from './history.js';
import { JournalWriter } from './journal.js';
import { DirectoryLock } from './lock.js';
import { fromRawKey } from './object-index.js';
import { assertRevision, locationProblem } from './recovery.js';
import { LocalStorage } from './storage/local.js';
import type { Storage } from './storage/storage.js';
import { type Store, openStore } from './store.js';

/** `rebase --into` was given a directory that already holds a store. */
export class DestinationNotEmptyError extends StoreError {
  constructor(message: string) {
    super('ENOTEMPTY', message);
  }
}

/** Keys whose state a rebase changes: how many, their bytes, and the first few in key order. */
export interface KeyChanges {
  count: number;
  bytes: number;
  sample: string[];
}

export interface RebaseSummary {
  dir: string;
  to: number;
  dryRun: boolean;
  revisionsBefore: number;
  /** Records after `to`, which the new db does not hold. */
  dropped: number;
  /** Live at `to` and deleted since: they come back (bytes: the versions that come back). */
  reappear: KeyChanges;
  /** Created after `to`: they go away (bytes: the versions that go). */
  disappear: KeyChanges;
  /** Live at both but replaced since: they go back to their version at `to` (bytes: that version). */
  change: KeyChanges;
  liveObjectsBefore: number;
  liveBytesBefore: number;
  liveObjectsAfter: number;
  liveBytesAfter: number;
  /** The next block id the new db records. */
  nextBlockId: number;
  /** Set when the rebase was carried out. */
  done?: {
    previousDb: string | undefined;
    newDb: string;
    backupDb: string | undefined;
    backupJournal: string | undefined;
    /** Shell commands that put the previous db and journal back (with no server running). */
    undo: string[];
  };
}

export interface RebaseInPlaceOptions {
  dryRun?: boolean;
  /** Time used in the backup names (tests pin it). */
  now?: Date;
  /** Where the db and journal are written (default: the directory); tests inject faults here. */
  storage?: Storage;
}

const SAMPLE_KEYS = 20;

/**
 * Makes history[0..to] the whole history of `dir`. Refuses while another process holds the
 * directory; checks everything before writing anything. The order of the writes is chosen so
 * that a crash at any point leaves either the whole history or the rebased one, never less:
 * the journal's records are first folded into a db of their own, so the journal can then be
 * emptied without losing them, and only then is the rebased db written into the next slot.
 */
export async function rebaseInPlace(dir: string, to: number, opts: RebaseInPlaceOptions = {}): Promise<RebaseSummary> {
  await assertStoreDirectory(dir);
  const lock = opts.dryRun ? undefined : await DirectoryLock.acquire(dir);
  try {
    const snapshot = await readSnapshot(dir);
    try {
      assertRevision(dir, to, snapshot);
      const summary = await planRebase(snapshot, to, opts.dryRun === true);
      if (opts.dryRun) return summary;
      summary.done = await rewriteDb(snapshot, to, summary.nextBlockId, opts.now ?? new Date(), opts.storage ?? new LocalStorage(dir));
      return summary;
    } finally {
      await closeSnapshot(snapshot);
    }
  } finally {
    await lock?.release();
  }
}

interface KeyState {
  rev: number;
  size: number;
}

/** One pass over the history: what the rebase changes, and whether history[0..to] is servable. */
async function planRebase(snapshot: StoreSnapshot, to: number, dryRun: boolean): Promise<RebaseSummary> {
  const state = new Map<string, KeyState>();
  let atTo = new Map<string, KeyState>();
  let maxBlock = -1;
  for await (const { rev, record } of snapshotRecords(snapshot)) {
    if (record.kind === 'put') {
      const loc = record.location;
      if (rev <= to) {
        const problem = locationProblem(loc, snapshot.blocks);
        if (problem) {
          const file = rev < snapshot.dbRecords ? snapshot.dbFile : snapshot.journalFile;
          throw new StoreCorruptError(`${file}: revision ${rev} (${fromRawKey(record.rawKey)}) ${problem}; nothing was written`);
        }
      }
      if (loc.size > 0) maxBlock = Math.max(maxBlock, loc.block);
      state.set(record.rawKey, { rev, size: loc.size });
    } else {
      state.delete(record.rawKey);
    }
    if (rev === to) atTo = new Map(state);
  }

  const reappear = new ChangeList();
  const change = new ChangeList();
  const disappear = new ChangeList();
  for (const [raw, then] of atTo) {
    const now = state.get(raw);
    if (!now) reappear.add(raw, then.size);
    else if (now.rev !== then.rev) change.add(raw, then.size);
  }
  for (const [raw, now] of state) if (!atTo.has(raw)) disappear.add(raw, now.size);
  const bytesOf = (m: Map<string, KeyState>) => {
    let total = 0;
    for (const s of m.values()) total += s.size;
    return total;
  };
  return {
    dir: snapshot.dir,
    to,
    dryRun,
    revisionsBefore: snapshot.total,
    dropped: snapshot.total - to - 1,
    reappear: reappear.result(),
    disappear: disappear.result(),
    change: change.result(),
    liveObjectsBefore: state.size,
    liveBytesBefore: bytesOf(state),
    liveObjectsAfter: atTo.size,
    liveBytesAfter: bytesOf(atTo),
    // Never lower: block ids past the kept history stay used, so later blocks never reuse them.
    nextBlockId: Math.max(snapshot.nextBlockId, maxBlock + 1),
  };
}

class ChangeList {
  private readonly raw: string[] = [];
  private bytes = 0;

  add(rawKey: string, size: number): void {
    this.raw.push(rawKey);
    this.bytes += size;
  }

  result(): KeyChanges {
    // Raw keys compare in UTF-8 byte order, the order listings use.
    const sample = this.raw.sort().slice(0, SAMPLE_KEYS).map(fromRawKey);
    return { count: this.raw.length, bytes: this.bytes, sample };
  }
}

async function rewriteDb(
  snapshot: StoreSnapshot,
  to: number,
  nextBlockId: number,
  now: Date,
  storage: Storage,
): Promise<NonNullable<RebaseSummary['done']>> {
  const { dir } = snapshot;
  const stamp = timestamp(now);
  const previousDb = snapshot.dbFile;
  const backupDb = previousDb ? await backup(previousDb, path.join(dir, `db-before-rebase-${stamp}`)) : undefined;
  const journalFile = path.join(dir, JOURNAL_FILE);
  const backupJournal = await backup(journalFile, path.join(dir, `zipkv-journal-before-rebase-${stamp}`));
  // A crash can leave an older slot beside the current one; it must not outlive the rebase,
  // or the next reader would see two slots that are not neighbours.
  for (const slot of snapshot.staleDbSlots) {
    await backup(path.join(dir, dbFileName(slot)), path.join(dir, `db-before-rebase-${stamp}-older-slot-${slot}`));
    await storage.remove(dbFileName(slot));
  }
  await storage.syncDir();

  // 1. The journal's records go into a db of their own (the whole history, on disk twice).
  let slot = snapshot.dbSlot;
  if (snapshot.journalPayloads.length > 0) {
    slot = (await writeNextDb(storage, slot, snapshot.journalPayloads, snapshot.nextBlockId, true)).slot;
  }
  // 2. The journal is emptied: it now continues the rebased history, and until step 3 the db
  //    still holds every record (recovery takes a journal behind its db as already folded).
  const history = { firstRevision: snapshot.firstRevision, historyStart: snapshot.historyStart };
  await (await JournalWriter.create(storage, to + 1, [], true, history)).close();
  // 3. The rebased db replaces it. Records are copied as they are on disk: nothing the original
  //    or zipkv stored is re-encoded.
  slot = (await writeWholeDb(storage, slot, snapshotPayloads(snapshot, to + 1), nextBlockId, true, snapshot.firstRevision)).slot;

  const newDb = path.join(dir, dbFileName(slot));
  const undo = [`rm ${shellQuote(path.resolve(newDb))}`];
  if (previousDb && backupDb) undo.push(`cp ${shellQuote(path.resolve(backupDb))} ${shellQuote(path.resolve(previousDb))}`);
  undo.push(
    backupJournal
      ? `cp ${shellQuote(path.resolve(backupJournal))} ${shellQuote(path.resolve(journalFile))}`
      : `rm -f ${shellQuote(path.resolve(journalFile))}`,
  );
  return { previousDb, newDb, backupDb, backupJournal, undo };
}

/** Copies `file` to a new name (made unique if taken) and makes the copy durable; undefined if there is no `file`. */
async function backup(file: string, target: string): Promise<string | undefined> {
  for (let n = 0; ; n++) {
    const name = n === 0 ? target : `${target}-${n}`;
    try {
      await fs.copyFile(file, name, fs.constants.COPYFILE_EXCL);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      if (code === 'ENOENT') return undefined;
      throw err;
    }
    const handle = await fs.open(name, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    return name;
  }
}

function timestamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
}

export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export interface IntoProgress {
  objects: number;
  totalObjects: number;
  bytes: number;
  totalBytes: number;
}

export interface RebaseIntoOptions {
  /** Copy the state after this revision (inclusive); default the latest. */
  revision?: number;
  /** Block size of the new store; default 40 MiB, as the original. */
  blockSize?: number;
  onProgress?: (progress: IntoProgress) => void;
}

export interface RebaseIntoSummary {
  src: string;
  dst: string;
  /** The revision copied; -1 for a source with no history. */
  revision: number;
  objects: number;
  bytes: number;
  /** Objects that shared bytes with another (copies): written once, recorded as copies. */
  sharedObjects: number;
  sourceBlocks: number;
  sourceBlockBytes: number;
  blocks: number;
  blockBytes: number;
}

/**
 * Copies the objects live at a revision of `src` into a new store in `dst`, in key order, with
 * their metadata. Objects that share bytes (copies) share them in the new store too. The source
 * is only read. The new store is written without an fsync per object and made durable at the
 * end; a `dst` this call created is removed again if the copy fails.
 */
export async function rebaseInto(src: string, dst: string, opts: RebaseIntoOptions = {}): Promise<RebaseIntoSummary> {
  if (path.resolve(src) === path.resolve(dst)) {
    throw new DestinationNotEmptyError(`${dst} is the source directory; --into needs another, empty directory`);
  }
  const snapshot = await readSnapshot(src);
  let expected;
  try {
    expected = await liveAt(snapshot, opts.revision ?? snapshot.total - 1);
  } finally {
    await closeSnapshot(snapshot);
  }
  const revision = opts.revision ?? snapshot.total - 1;
  if (opts.revision !== undefined) assertRevision(src, revision, snapshot);
  const created = await prepareDestination(dst);
  const source = await openSourceAt(src, revision, expected);
  let ok = false;
  try {
    const copied = await copyLiveObjects(source, dst, opts);
    await syncStoreFiles(dst);
    const sizes = [...(await blockSizesOf(dst)).values()];
    ok = true;
    return {
      src,
      dst,
      revision,
      ...copied,
      sourceBlocks: snapshot.blocks.size,
      sourceBlockBytes: [...snapshot.blocks.values()].reduce((a, b) => a + b.size, 0),
      blocks: sizes.length,
      blockBytes: sizes.reduce((a, b) => a + b, 0),
    };
  } finally {
    await source.close();
    if (!ok && created) await fs.rm(dst, { recursive: true, force: true });
  }
}

/** Creates `dst` if needed (returns true then); refuses one that holds a store with history. */
async function prepareDestination(dst: string): Promise<boolean> {
  try {
    await assertStoreDirectory(dst);
  } catch (err) {
    if ((err as StoreError).code !== 'ENOENT' || (await exists(dst))) throw err;
    await fs.mkdir(dst, { recursive: true });
    return true;
  }
  const existing = await readSnapshot(dst);
  await closeSnapshot(existing);
  if (existing.total > 0) {
    throw new DestinationNotEmptyError(
      `${dst} already holds a store (${existing.total} revisions); rebase --into needs an empty or new directory`,
    );
  }
  return false;
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

/** Objects and bytes live after `revision` (inclusive), as the snapshot has them. */
async function liveAt(snapshot: StoreSnapshot, revision: number): Promise<{ objects: number; bytes: number }> {
  const sizes = new Map<string, number>();
  for await (const { rev, record } of snapshotRecords(snapshot)) {
    if (rev > revision) break;
    if (record.kind === 'put') sizes.set(record.rawKey, record.location.size);
    else sizes.delete(record.rawKey);
  }
  let bytes = 0;
  for (const size of sizes.values()) bytes += size;
  return { objects: sizes.size, bytes };
}

/**
 * The source, read-only, at `revision`. Opening it reads db and journal again; a running server
 * may checkpoint in between, so the state opened is compared with the snapshot's, and the open
 * retried when they differ.
 */
async function openSourceAt(src: string, revision: number, expected: { objects: number; bytes: number }): Promise<Store> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const store = await openStore(src, revision < 0 ? { readOnly: true } : { revision });
    const { liveObjects, liveBytes } = store.stats();
    if (store.revision === revision && liveObjects === expected.objects && liveBytes === expected.bytes) return store;
    await store.close();
  }
  throw new StoreCorruptError(`${src} kept changing while being opened at revision ${revision}; try again`);
}

async function copyLiveObjects(
  source: Store,
  dst: string,
  opts: RebaseIntoOptions,
): Promise<{ objects: number; bytes: number; sharedObjects: number }> {
  const { liveObjects: totalObjects, liveBytes: totalBytes } = source.stats();
  const progress: IntoProgress = { objects: 0, totalObjects, bytes: 0, totalBytes };
  let sharedObjects = 0;
  // Source bytes (block:offset:size) already written -> the key that holds them in the new store.
  const written = new Map<string, string>();
  const dest = await openStore(dst, { blockSize: opts.blockSize, fsync: false });
  try {
    let after: string | undefined;
    for (;;) {
      const page = source.list({ after, limit: 1000 });
      for (const info of page.objects) {
        const { entry } = info;
        const where = `${entry.block}:${entry.offset}:${entry.size}`;
        const holder = entry.size > 0 ? written.get(where) : undefined;
        if (holder !== undefined) {
          await dest.copy(holder, info.key, info.metadata, info.lastModified.getTime());
          sharedObjects++;
        } else {
          try {
            await dest.put(info.key, source.createReadStream(info), {
              size: info.size,
              metadata: info.metadata,
              etag: entry.etag,
              modifiedMs: info.lastModified.getTime(),
              // Bytes that no longer match the MD5 stored with them are not copied silently.
              expectedMd5: entry.md5 ? Buffer.from(entry.md5, 'hex') : undefined,
            });
          } catch (err) {
            if (!(err instanceof DigestMismatchError)) throw err;
            throw new StoreCorruptError(`${source.dir}: the bytes of ${info.key} do not match their stored MD5 (see zipkv verify); nothing was kept`);
          }
          if (entry.size > 0) written.set(where, info.key);
        }
        progress.objects++;
        progress.bytes += info.size;
        opts.onProgress?.(progress);
      }
      if (!page.truncated) break;
      after = page.nextMarker;
    }
  } finally {
    await dest.close();
  }
  return { objects: progress.objects, bytes: progress.bytes, sharedObjects };
}

/** fsync of every file of a store and of its directory. */
async function syncStoreFiles(dir: string): Promise<void> {
  const listing = await listStore(new LocalStorage(dir));
  const names = [...listing.blocks.values(), ...listing.dbSlots.map(dbFileName), JOURNAL_FILE];
  for (const name of names) {
    let handle;
    try {
      handle = await fs.open(path.join(dir, name), 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  await new LocalStorage(dir).syncDir();
}

async function blockSizesOf(dir: string): Promise<Map<number, number>> {
  const listing = await listStore(new LocalStorage(dir));
  const sizes = new Map<number, number>();
  for (const [id, name] of listing.blocks) sizes.set(id, (await fs.stat(path.join(dir, name))).size);
  return sizes;
}
