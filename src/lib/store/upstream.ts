/**
 * The upstream tier: a live copy of the store in an S3 bucket prefix, shipped in the background.
 *
 * Acknowledgement stays local (fsync); shipping only follows. Every interval the shipper takes a
 * snapshot of what is committed, uploads what upstream lacks, and then writes the manifest, the
 * one object that says what the upstream copy is:
 *
 *   block<id>                       a sealed block, uploaded once, whole (its SHA-256 signed and checked)
 *   block<id>.<from>-<to>           committed bytes of a block still being written
 *   db<slot>.<md5>                  the current db
 *   zipkv-journal.<run>.<epoch>.<from>-<to>   committed bytes of the journal
 *   zipkv-upstream.json             the manifest: which of the above make up the store
 *   zipkv-lease                     which server writes this prefix
 *
 * Everything the manifest names is uploaded before the manifest, so any manifest describes a
 * directory recovery opens: a restore reads the manifest and fetches what it names. Objects no
 * manifest names any more (pieces of a block since sealed, a replaced db, blocks compaction
 * dropped) are deleted only after the manifest that no longer names them is written. A lost
 * machine loses at most what was committed since the last manifest: one interval, plus the time
 * an upload in progress takes.
 *
 * A second server on the same prefix is refused: the lease object is created with
 * If-None-Match: *, renewed every LEASE_RENEW_MS, and taken over only once it is older than
 * LEASE_STALE_MS (its server is gone), or by the same directory on the same host (a restart after
 * a crash: the directory's lock already makes it the one writer).
 */
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import { StoreError } from './errors.js';
import { JOURNAL_FILE, TMP_SUFFIX } from './files.js';
import { type RemoteBucket, UpstreamError, UpstreamExistsError } from './storage/remote.js';
import { type Storage, readFully } from './storage/storage.js';
import type { TieredStorage } from './storage/tiered.js';

export const MANIFEST_OBJECT = 'zipkv-upstream.json';
export const LEASE_OBJECT = 'zipkv-lease';
/** The local copy of the last manifest written upstream (for `zipkv stats`). */
export const LOCAL_MANIFEST = 'zipkv-upstream.json';
export const DEFAULT_UPSTREAM_INTERVAL_MS = 1000;
const LEASE_RENEW_MS = 10_000;
const LEASE_STALE_MS = 30_000;
/** A growing file shipped in more pieces than this is shipped again whole, as one piece. */
const MAX_PIECES = 64;
const MAX_BACKOFF_MS = 30_000;

export interface Piece {
  object: string;
  from: number;
  to: number;
}

/** A file that grows (the journal, a block being written), shipped as pieces of its committed prefix. */
export interface ShippedFile {
  /** Which incarnation of the file the pieces are of. */
  identity: string;
  pieces: Piece[];
}

export interface Manifest {
  format: 1;
  /** Where it was written (s3://BUCKET/PREFIX/). */
  url?: string;
  writtenMs: number;
  /** Records in the history the manifest describes, at most (the journal may end in a torn commit). */
  records: number;
  db: { name: string; object: string; size: number; mtimeMs: number } | undefined;
  journal: ShippedFile;
  /** Sealed blocks: name -> size; the object has the block's name. */
  blocks: Record<string, number>;
  /** Blocks still being written: name -> pieces. */
  open: Record<string, ShippedFile>;
}

/** What is committed locally, taken synchronously between two commits. */
export interface ShipSnapshot {
  dbName: string | undefined;
  journalEpoch: number;
  journalBytes: number;
  records: number;
  nextBlockId: number;
  live: Array<{ id: number; name: string; settled: number }>;
  /** Blocks written outside the writer and not complete yet (compaction's copies). */
  writing: ReadonlySet<number>;
}

export interface UpstreamLag {
  /** Records committed locally and not yet named by a manifest upstream. */
  records: number;
  /** Bytes committed locally and not yet upstream (as of the last look). */
  bytes: number;
  /** When the last manifest was written (ms since the epoch), 0 before the first. */
  lastShippedMs: number;
  /** Why the last attempt failed, while it does. */
  failing: string | undefined;
}

export interface UpstreamStats extends UpstreamLag {
  url: string;
  shippedBytes: number;
  manifests: number;
  /** --cache-size, if any, and the bytes of blocks on the local disk (as of the last look). */
  cacheBytes: number | undefined;
  localBlockBytes: number;
  evictions: number;
}

export class UpstreamLeaseError extends StoreError {
  constructor(message: string) {
    super('EUPSTREAMLEASE', message);
  }
}

function emptyManifest(): Manifest {
  return { format: 1, writtenMs: 0, records: 0, db: undefined, journal: { identity: '', pieces: [] }, blocks: {}, open: {} };
}

export function parseManifest(bytes: Buffer, where: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(bytes.toString('utf8')) as Manifest;
  } catch {
    throw new StoreError('ECORRUPT', `${where} is not a zipkv upstream manifest`);
  }
  if (m?.format !== 1 || typeof m.blocks !== 'object' || typeof m.open !== 'object' || !Array.isArray(m.journal?.pieces)) {
    throw new StoreError('ECORRUPT', `${where} is not a zipkv upstream manifest (format ${String(m?.format)})`);
  }
  return m;
}

/** Every object a manifest names. */
export function manifestObjects(m: Manifest): Set<string> {
  const names = new Set<string>(Object.keys(m.blocks));
  if (m.db) names.add(m.db.object);
  for (const p of m.journal.pieces) names.add(p.object);
  for (const f of Object.values(m.open)) for (const p of f.pieces) names.add(p.object);
  return names;
}

function blockIdOf(name: string): number | undefined {
  const m = /^block(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The snapshot changed under a read (a journal replaced meanwhile): try again at the next tick. */
class Moved extends Error {}

/** Bytes [from, to) of a local file. */
async function readRange(storage: Storage, name: string, from: number, to: number): Promise<Buffer> {
  let file;
  try {
    file = await storage.openRead(name);
  } catch (err) {
    // Replaced since the snapshot (a checkpoint's db, a block compaction deleted).
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Moved();
    throw err;
  }
  try {
    const buf = Buffer.allocUnsafe(to - from);
    await readFully(file, buf, to - from, from);
    return buf;
  } finally {
    await file.close();
  }
}


export interface ShipperOptions {
  intervalMs?: number;
  /** Local bytes of blocks kept at most: sealed blocks safely upstream beyond it are evicted. */
  cacheBytes?: number;
  /** Frees the local copy of a block (closing the store's handles on it first). */
  evict: (name: string) => Promise<void>;
  /** Told when shipping falls behind and when it catches up, and of lease trouble. */
  log: (message: string) => void;
  /** The local directory, for messages and the lease. */
  dir: string;
}

export class Shipper {
  private manifest: Manifest = emptyManifest();
  private readonly runId = randomBytes(4).toString('hex');
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failures = 0;
  private failing: string | undefined;
  private leaseRenewedMs = 0;
  private lostLease = false;
  /** The last shipment took much longer than the interval. */
  private slow = false;
  private lagBytes = 0;
  private shippedBytes = 0;
  private manifests = 0;
  private localBlockBytes = 0;
  private evictions = 0;
  /** The db last read for shipping, by name, size and mtime, and the object it went to. */
  private dbUploaded: Manifest['db'];

  constructor(
    private readonly remote: RemoteBucket,
    private readonly local: TieredStorage,
    private readonly snapshot: () => ShipSnapshot,
    private readonly journalEpoch: () => number,
    private readonly opts: ShipperOptions,
  ) {
    this.intervalMs = opts.intervalMs ?? DEFAULT_UPSTREAM_INTERVAL_MS;
  }

  /** Takes the lease and reads the manifest upstream; fails if another server writes the prefix. */
  async start(): Promise<void> {
    await this.acquireLease();
    const bytes = await this.remote.get(MANIFEST_OBJECT);
    if (bytes) this.manifest = parseManifest(bytes, `${this.remote.url}${MANIFEST_OBJECT}`);
    this.local.setUpstreamBlocks(this.manifest.blocks, this.manifest.writtenMs);
    this.dbUploaded = this.manifest.db;
    this.running = this.removeStrays().finally(() => (this.running = undefined));
    this.schedule(0);
  }

  /** Objects of a shipment a crash interrupted (uploaded, never named by a manifest): deleted. */
  private async removeStrays(): Promise<void> {
    try {
      const keep = manifestObjects(this.manifest);
      for (const name of await this.remote.list()) {
        if (name === MANIFEST_OBJECT || name === LEASE_OBJECT || keep.has(name) || name.includes('/')) continue;
        await this.remote.delete(name);
      }
    } catch (err) {
      this.opts.log(`upstream: cleaning up after an interrupted shipment failed (${(err as Error).message}); left for the next start`);
    }
  }

  stats(): UpstreamStats {
    return { url: this.remote.url, ...this.lag(), shippedBytes: this.shippedBytes, manifests: this.manifests, cacheBytes: this.opts.cacheBytes, localBlockBytes: this.localBlockBytes, evictions: this.evictions };
  }

  lag(): UpstreamLag {
    const snap = this.snapshot();
    return { records: Math.max(0, snap.records - this.manifest.records), bytes: this.lagBytes, lastShippedMs: this.manifest.writtenMs, failing: this.failing };
  }

  /** Ships what is committed now, then stops: for a clean shutdown (the store is closed). */
  async stop(opts: { finalShip: boolean }): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    try {
      if (opts.finalShip && !this.lostLease) await this.shipOnce();
    } catch (err) {
      this.opts.log(`upstream: the last shipment before shutdown failed (${(err as Error).message}); the next start ships it`);
    }
    if (!this.lostLease) await this.releaseLease().catch(() => undefined);
    this.remote.close();
  }

  /** One shipment now (tests, and `stop`). */
  async shipNow(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      while (this.running) await this.running;
      try {
        return await this.shipOnce();
      } catch (err) {
        if (!(err instanceof Moved) || attempt === 5) throw err;
      }
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(async () => {
      await this.running;
      if (this.stopped) return;
      this.running = this.tick().finally(() => {
        this.running = undefined;
        const backoff = this.failures === 0 ? this.intervalMs : Math.min(MAX_BACKOFF_MS, this.intervalMs * 2 ** Math.min(this.failures, 6));
        this.schedule(backoff);
      });
    }, delayMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      if (Date.now() - this.leaseRenewedMs >= LEASE_RENEW_MS) await this.renewLease();
      if (this.lostLease) return;
      const started = Date.now();
      await this.shipOnce();
      const tookMs = Date.now() - started;
      // Slow without failing (a large block upload, a slow upstream): the recovery point grows.
      const slow = tookMs > Math.max(5000, 5 * this.intervalMs);
      if (slow && !this.slow) this.opts.log(`upstream: shipping is behind: a shipment took ${(tookMs / 1000).toFixed(1)} s (interval ${this.intervalMs / 1000} s)`);
      else if (!slow && this.slow) this.opts.log(`upstream: shipping caught up (a shipment took ${(tookMs / 1000).toFixed(1)} s)`);
      this.slow = slow;
      if (this.failures > 0) this.opts.log(`upstream: ${this.remote.url} reachable again; shipping caught up after ${this.failures} failed attempt(s)`);
      this.failures = 0;
      this.failing = undefined;
    } catch (err) {
      if (err instanceof Moved) return;
      this.failures++;
      this.failing = (err as Error).message;
      if (this.failures === 1 || this.failures % 10 === 0) {
        this.opts.log(`upstream: shipping is behind (${this.lag().records} records not yet upstream): ${this.failing}; retrying with backoff`);
      }
    }
  }

  /** Uploads what the manifest lacks, then the manifest, then deletes what it no longer names. */
  private async shipOnce(): Promise<void> {
    const snap = this.snapshot();
    if (snap.journalEpoch % 2 === 1) throw new Moved();
    const listed = await this.local.list();
    const live = new Set(snap.live.map((l) => l.id));
    const sealed = new Map<string, number>();
    for (const name of listed) {
      const id = blockIdOf(name);
      if (id !== undefined && id < snap.nextBlockId && !live.has(id) && !snap.writing.has(id)) sealed.set(name, id);
    }
    const next: Manifest = structuredClone(this.manifest);
    let changed = false;
    let lag = 0;

    for (const name of sealed.keys()) {
      if (next.blocks[name] !== undefined) continue;
      const size = (await this.local.stat(name))?.size;
      if (size === undefined) continue; // deleted meanwhile (compaction)
      lag += size;
      const bytes = await readRange(this.local, name, 0, size);
      await this.upload(name, bytes);
      next.blocks[name] = size;
      changed = true;
    }
    for (const name of Object.keys(next.blocks)) {
      if (!sealed.has(name)) {
        delete next.blocks[name];
        changed = true;
      }
    }

    if (snap.dbName) {
      const st = await this.local.stat(snap.dbName);
      if (!st) throw new Moved();
      const known = this.dbUploaded;
      if (!known || known.name !== snap.dbName || known.size !== st.size || known.mtimeMs !== st.mtimeMs) {
        const bytes = await readRange(this.local, snap.dbName, 0, st.size);
        const object = `${snap.dbName}.${createHash('md5').update(bytes).digest('hex').slice(0, 16)}`;
        if (this.manifest.db?.object !== object) await this.upload(object, bytes);
        this.dbUploaded = { name: snap.dbName, object, size: st.size, mtimeMs: st.mtimeMs };
      }
      if (next.db?.object !== this.dbUploaded!.object) {
        next.db = this.dbUploaded;
        changed = true;
      }
    }

    const open: Record<string, ShippedFile> = {};
    for (const block of snap.live) {
      const before = next.open[block.name];
      const shipped = await this.shipGrowing(block.name, block.name, before, block.settled, `${block.name}.`);
      if (shipped !== before) changed = true;
      if (shipped.pieces.length > 0) open[block.name] = shipped;
    }
    for (const name of Object.keys(next.open)) if (!open[name]) changed = true;
    next.open = open;

    const journalIdentity = `${this.runId}.${snap.journalEpoch}`;
    const journal = await this.shipGrowing(JOURNAL_FILE, journalIdentity, next.journal, snap.journalBytes, `${JOURNAL_FILE}.${journalIdentity}.`);
    // The journal is read by name: it must still be the file the snapshot described.
    if (this.journalEpoch() !== snap.journalEpoch) throw new Moved();
    if (journal !== next.journal) changed = true;
    next.journal = journal;

    if (!changed && next.records === snap.records) {
      this.lagBytes = 0;
      return;
    }
    this.lagBytes = lag;
    next.records = snap.records;
    next.url = this.remote.url;
    next.writtenMs = Date.now();
    const body = Buffer.from(JSON.stringify(next));
    await this.upload(MANIFEST_OBJECT, body);
    const previous = this.manifest;
    this.manifest = next;
    this.manifests++;
    this.lagBytes = 0;
    this.local.setUpstreamBlocks(next.blocks, next.writtenMs);
    // Evicted blocks are known from this copy at the next start, before upstream is reached:
    // it is durable before any block is evicted.
    let saved = true;
    await this.saveLocalCopy(body).catch((err: Error) => {
      saved = false;
      this.opts.log(`upstream: keeping the local copy of the manifest failed: ${err.message}`);
    });
    if (saved) await this.evictBeyondCache();
    // Only now may what the previous manifest named, and this one does not, go.
    const keep = manifestObjects(next);
    for (const name of manifestObjects(previous)) {
      if (keep.has(name)) continue;
      await this.remote.delete(name).catch((err: Error) => this.opts.log(`upstream: ${err.message} (left behind)`));
    }
  }

  /**
   * Ships `name` up to `length`: the bytes after the last piece as a new piece, or the whole
   * prefix again as one piece when the file is another incarnation or has too many pieces.
   * Returns `before` itself when nothing was shipped.
   */
  private async shipGrowing(name: string, identity: string, before: ShippedFile | undefined, length: number, objectPrefix: string): Promise<ShippedFile> {
    const same = before !== undefined && before.identity === identity;
    const shipped = same ? (before.pieces.at(-1)?.to ?? 0) : 0;
    if (same && length <= shipped) return before;
    if (!same && length === 0) return { identity, pieces: [] };
    const whole = !same || before.pieces.length >= MAX_PIECES || length < shipped;
    const from = whole ? 0 : shipped;
    const bytes = await readRange(this.local, name, from, length);
    const piece = { object: `${objectPrefix}${from}-${length}`, from, to: length };
    await this.upload(piece.object, bytes);
    return { identity, pieces: whole ? [piece] : [...before!.pieces, piece] };
  }

  private async upload(name: string, bytes: Buffer): Promise<void> {
    await this.remote.put(name, bytes);
    this.shippedBytes += bytes.length;
  }

  private async saveLocalCopy(body: Buffer): Promise<void> {
    const tmp = LOCAL_MANIFEST + TMP_SUFFIX;
    const file = await this.local.create(tmp);
    try {
      await file.writev([body], 0);
      await file.datasync();
    } finally {
      await file.close();
    }
    await this.local.rename(tmp, LOCAL_MANIFEST);
    await this.local.syncDir();
  }

  /** With a cache size: evicts the least recently read sealed blocks that are upstream until the local blocks fit. */
  private async evictBeyondCache(): Promise<void> {
    const sizes = new Map<string, number>();
    for (const name of await this.local.local.list()) {
      if (blockIdOf(name) === undefined) continue;
      const st = await this.local.local.stat(name);
      if (st) sizes.set(name, st.size);
    }
    let total = 0;
    for (const size of sizes.values()) total += size;
    this.localBlockBytes = total;
    const limit = this.opts.cacheBytes;
    if (limit === undefined || total <= limit) return;
    for (const name of this.local.evictionCandidates(sizes.keys())) {
      if (total <= limit) break;
      await this.opts.evict(name);
      total -= sizes.get(name)!;
      this.evictions++;
    }
    this.localBlockBytes = total;
  }

  // ------------------------------------------------------------------ lease

  private leaseBody(): Buffer {
    return Buffer.from(JSON.stringify({ owner: this.runId, host: os.hostname(), pid: process.pid, dir: this.opts.dir, renewedMs: Date.now() }));
  }

  private async acquireLease(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.remote.put(LEASE_OBJECT, this.leaseBody(), { ifAbsent: true });
        this.leaseRenewedMs = Date.now();
        return;
      } catch (err) {
        if (!(err instanceof UpstreamExistsError) || attempt > 0) {
          if (err instanceof UpstreamExistsError) throw new UpstreamLeaseError(`${this.remote.url}: another server took the lease at the same moment`);
          throw err;
        }
      }
      const held = await this.remote.get(LEASE_OBJECT);
      const lease = held ? (JSON.parse(held.toString('utf8')) as { owner: string; host: string; pid: number; dir: string; renewedMs: number }) : undefined;
      // The same directory on the same host: its lock file already makes this the only writer
      // (a restart after a crash, say), so the lease it left is this server's to take.
      const mine = lease?.host === os.hostname() && lease.dir === this.opts.dir;
      if (lease && !mine && Date.now() - lease.renewedMs < LEASE_STALE_MS) {
        const ago = Math.max(0, Math.round((Date.now() - lease.renewedMs) / 1000));
        throw new UpstreamLeaseError(
          `${this.remote.url} is written by another zipkv server (host ${lease.host}, pid ${lease.pid}, directory ${lease.dir}; lease renewed ${ago} s ago). ` +
            `Two writers would corrupt it: stop that server, or start this one again ${LEASE_STALE_MS / 1000} s after it died.`,
        );
      }
      // Its server stopped renewing it: gone. Take it over.
      await this.remote.delete(LEASE_OBJECT);
    }
  }

  private async renewLease(): Promise<void> {
    const held = await this.remote.get(LEASE_OBJECT);
    const owner = held ? (JSON.parse(held.toString('utf8')) as { owner?: string }).owner : undefined;
    if (owner !== this.runId) {
      this.lostLease = true;
      this.opts.log(
        `upstream: ${this.remote.url} lease was taken by another server (this one stalled for over ${LEASE_STALE_MS / 1000} s); shipping stopped. ` +
          'Writes stay local and durable; restart this server once the other one is stopped.',
      );
      throw new UpstreamError(`${this.remote.url}: lease lost`);
    }
    await this.remote.put(LEASE_OBJECT, this.leaseBody());
    this.leaseRenewedMs = Date.now();
  }

  private async releaseLease(): Promise<void> {
    const held = await this.remote.get(LEASE_OBJECT);
    if (held && (JSON.parse(held.toString('utf8')) as { owner?: string }).owner === this.runId) await this.remote.delete(LEASE_OBJECT);
  }
}

/** What `zipkv stats` says of the upstream copy, from the local copy of the last manifest written. */
export interface UpstreamSummary {
  url: string | undefined;
  lastShipped: string;
  /** Records not named by that manifest (committed after it, or not yet shipped). */
  recordsBehind: number;
  blocksUpstream: number;
  /** Blocks only upstream (evicted by --cache-size). */
  blocksOnlyUpstream: number;
}

/** The local copy of the last manifest written upstream, if any. */
export async function readLocalManifest(local: Storage): Promise<Manifest | undefined> {
  if (!(await local.stat(LOCAL_MANIFEST))) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of local.readStream(LOCAL_MANIFEST)) chunks.push(chunk as Buffer);
  return parseManifest(Buffer.concat(chunks), `${local.root}/${LOCAL_MANIFEST}`);
}

export async function upstreamSummary(local: Storage, records: number): Promise<UpstreamSummary | undefined> {
  const m = await readLocalManifest(local);
  if (!m) return undefined;
  const present = new Set(await local.list());
  const names = Object.keys(m.blocks);
  return {
    url: m.url,
    lastShipped: new Date(m.writtenMs).toISOString(),
    recordsBehind: Math.max(0, records - m.records),
    blocksUpstream: names.length,
    blocksOnlyUpstream: names.filter((n) => !present.has(n)).length,
  };
}
