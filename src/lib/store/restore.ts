/**
 * Restore: a store directory built from its upstream copy, as the last manifest there describes
 * it (see upstream.ts). The db, the journal and the blocks still being written are fetched (and,
 * with `allBlocks`, every sealed block; otherwise those stay upstream and a server with the same
 * --upstream reads them from there, as it reads blocks --cache-size evicted); sizes are checked; the files and the directory are synced; recovery then opens it like any directory
 * (a journal cut in the middle of a commit is dropped to its last whole commit). With `to`, the
 * restored store is rebased to that revision afterwards.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { StoreError } from './errors.js';
import { JOURNAL_FILE } from './files.js';
import { DestinationNotEmptyError, rebaseInPlace } from './rebase.js';
import { LocalStorage } from './storage/local.js';
import type { RemoteBucket } from './storage/remote.js';
import { LOCAL_MANIFEST, MANIFEST_OBJECT, type Piece, parseManifest } from './upstream.js';

export interface RestoreOptions {
  /** Fetch every sealed block now (default: they stay upstream and are read from there when needed). */
  allBlocks?: boolean;
  /** Rebase the restored store to this revision (inclusive). */
  to?: number;
  /** Blocks fetched at once. */
  parallel?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface RestoreSummary {
  dir: string;
  /** Records the manifest says upstream holds (at most: a torn last commit is dropped on open). */
  records: number;
  /** When the manifest was written. */
  shippedAt: string;
  files: number;
  bytes: number;
  /** Sealed blocks left upstream, to be read from there by a server with --upstream. */
  blocksLeftUpstream: number;
  rebasedTo: number | undefined;
}

export async function restoreStore(remote: RemoteBucket, dir: string, opts: RestoreOptions = {}): Promise<RestoreSummary> {
  dir = path.resolve(dir);
  const existing = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (existing.length > 0) throw new DestinationNotEmptyError(`${dir} is not empty: restore builds a new directory`);
  const where = `${remote.url}${MANIFEST_OBJECT}`;
  const bytes = await remote.get(MANIFEST_OBJECT);
  if (!bytes) throw new StoreError('ENOENT', `${remote.url} holds no zipkv store (no ${MANIFEST_OBJECT})`);
  const manifest = parseManifest(bytes, where);
  await fsp.mkdir(dir, { recursive: true });

  // Each local file, from one whole object or from the pieces of a growing one.
  const files: Array<{ name: string; pieces: Piece[] }> = [];
  if (opts.allBlocks) for (const [name, size] of Object.entries(manifest.blocks)) files.push({ name, pieces: [{ object: name, from: 0, to: size }] });
  for (const [name, shipped] of Object.entries(manifest.open)) files.push({ name, pieces: shipped.pieces });
  if (manifest.db) files.push({ name: manifest.db.name, pieces: [{ object: manifest.db.object, from: 0, to: manifest.db.size }] });
  if (manifest.journal.pieces.length > 0) files.push({ name: JOURNAL_FILE, pieces: manifest.journal.pieces });

  let done = 0;
  let total = 0;
  const queue = [...files];
  const worker = async (): Promise<void> => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const handle = await fsp.open(path.join(dir, file.name), 'wx', 0o600);
      try {
        for (const piece of file.pieces) {
          const body = piece.to > piece.from ? await remote.getRange(piece.object, 0, piece.to - piece.from) : Buffer.alloc(0);
          await handle.write(body, 0, body.length, piece.from);
          total += body.length;
        }
        await handle.sync();
      } finally {
        await handle.close();
      }
      opts.onProgress?.(++done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.parallel ?? 4) }, worker));
  // The blocks left upstream are known from the manifest's local copy, as evicted ones are.
  await fsp.writeFile(path.join(dir, LOCAL_MANIFEST), bytes, { mode: 0o600, flush: true });
  await new LocalStorage(dir).syncDir();

  if (opts.to !== undefined) await rebaseInPlace(dir, opts.to);
  return {
    dir,
    records: manifest.records,
    shippedAt: new Date(manifest.writtenMs).toISOString(),
    files: files.length,
    bytes: total,
    blocksLeftUpstream: opts.allBlocks ? 0 : Object.keys(manifest.blocks).length,
    rebasedTo: opts.to,
  };
}
