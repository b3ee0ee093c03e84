/**
 * Versions: every record of the history is a version of its key, and its revision is its
 * version id (the number `zipkv history` prints and `rebase --to` takes). A put is a version
 * with bytes; a delete is a delete marker. In a compacted history, the records that stand for
 * the objects kept from before its start carry their own revision, which stays their id. The index of versions is built on first use, by
 * streaming the db and the records after it, and then kept up to date by every commit.
 */
import BTreeModule from 'sorted-btree';
import { IndexEntry, fromRawKey, toRawKey } from './object-index.js';
import { decodeRawRecord, replayDbRecords } from './replay.js';
import { type ReadableFile, type Storage, fileStream } from './storage/storage.js';

// sorted-btree is CommonJS: under NodeNext its default export arrives as `.default`.
const BTree = (BTreeModule as unknown as { default: typeof BTreeModule.default }).default;
const compareRaw = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** One version of a key. */
export interface Version {
  key: string;
  revision: number;
  /** The version's bytes and facts; undefined for a delete marker. */
  entry: IndexEntry | undefined;
  /** A delete marker's time (undefined when its writer kept none, as the original). */
  deletedAt?: Date;
  /** Whether this is the key's newest version. */
  isLatest: boolean;
}

export interface VersionListOptions {
  prefix?: string;
  delimiter?: string;
  /** Start after this key (all its versions), or, with `versionIdMarker`, after that version of it. */
  keyMarker?: string;
  versionIdMarker?: number;
  limit: number;
}

export interface VersionList {
  versions: Version[];
  commonPrefixes: string[];
  truncated: boolean;
  nextKeyMarker?: string;
  nextVersionIdMarker?: number;
}

/** Whether an ascending list holds `value`. */
function sortedHas(list: readonly number[], value: number): boolean {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = list[mid]!;
    if (v === value) return true;
    if (v < value) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** A history as it is now: see HistoryLog.view. */
export interface HistoryView {
  dbName: string | undefined;
  tail: Uint8Array[];
  records: number;
}

const DELETED = 1;
const HAS_MD5 = 2;

/**
 * The facts of every version, in typed-array columns by slot, a record's place in the history
 * (an object per version would cost several times the memory on a long history); entries are
 * made when asked for.
 */
export class VersionIndex {
  /** Raw key -> its version ids, oldest first. */
  private readonly byKey = new BTree<string, number[]>(undefined, compareRaw);
  /** The revision of slot 0, and the slots used. */
  private first = 0;
  private used = 0;
  /** Version id -> slot for the records kept from before a compacted history's start. */
  private readonly keptSlots = new Map<number, number>();
  private flags = new Uint8Array(1024);
  private blocks = new Int32Array(1024);
  private offsets = new Int32Array(1024);
  private sizes = new Int32Array(1024);
  /** A put's write time, a delete's time: ms since the epoch, 0 when unknown. */
  private times = new Float64Array(1024);
  private md5s = new Uint8Array(16 * 1024);
  /** Slot -> metadata (latin1) and ETag, for the versions that have them. */
  private readonly extras = new Map<number, { meta: string | undefined; etag: string | undefined }>();

  /** Reads the whole history of `view` into a new index. */
  static async build(storage: Storage, view: HistoryView): Promise<VersionIndex> {
    const index = new VersionIndex();
    if (view.dbName !== undefined) {
      const db: ReadableFile = await storage.openRead(view.dbName);
      try {
        const where = `${storage.root}/${view.dbName}`;
        for await (const _ of replayDbRecords(fileStream(db), where, {
          put: (rawKey, f, rev) => {
            const slot = index.slot(rev, rawKey, f.keptRevision >= 0 ? f.keptRevision : rev);
            if (slot < 0) return;
            index.setPut(slot, f.block, f.offset, f.size, f.modifiedMs, f.meta, f.etag);
            if (f.md5At >= 0) {
              index.md5s.set(f.buf.subarray(f.md5At, f.md5At + 16), 16 * slot);
              index.flags[slot] = HAS_MD5;
            }
          },
          delete: (rawKey, rev, _bytes, modifiedMs) => index.add(rev, rawKey, modifiedMs),
        })) void _;
      } finally {
        await db.close();
      }
    }
    let rev = view.records - view.tail.length;
    for (const payload of view.tail) {
      const record = decodeRawRecord(payload, `${storage.root} (journal)`, rev);
      index.add(rev++, record.rawKey, record.kind === 'put' ? IndexEntry.fromLocation(record.location) : (record.modifiedMs ?? 0), record.kind === 'put' ? record.revision : undefined);
    }
    return index;
  }

  /** The next revision it expects. */
  get size(): number {
    return this.first + this.used;
  }

  /** Adds the version written by `revision`: a put's entry, or a delete's time in ms (0: unknown). */
  add(revision: number, rawKey: string, version: IndexEntry | number, keptRevision?: number): void {
    const slot = this.slot(revision, rawKey, keptRevision ?? revision);
    if (slot < 0) return;
    if (typeof version === 'number') {
      this.flags[slot] = DELETED;
      this.times[slot] = version;
      return;
    }
    this.setPut(slot, version.block, version.offset, version.size, version.mtime * 1000, version.meta, version.etag);
    if (version.md5 !== undefined) {
      this.md5s.set(Buffer.from(version.md5, 'hex'), 16 * slot);
      this.flags[slot] = HAS_MD5;
    }
  }

  /**
   * The slot of a new record (records come in order, each once), or -1 for one already in.
   * `id` is its version id: its revision, or the one a kept record carries.
   */
  private slot(revision: number, rawKey: string, id: number): number {
    if (this.used === 0 && this.first === 0) this.first = revision;
    if (revision !== this.first + this.used) {
      if (revision < this.first + this.used) return -1; // read from the history, then told of its commit
      throw new Error(`version index: revision ${revision} after ${this.first + this.used - 1}`);
    }
    if (this.used === this.flags.length) this.grow();
    let list = this.byKey.get(rawKey);
    if (!list) this.byKey.set(rawKey, (list = []));
    list.push(id);
    const slot = this.used++;
    if (id !== revision) this.keptSlots.set(id, slot);
    this.flags[slot] = 0;
    return slot;
  }

  private slotOf(id: number): number {
    return this.keptSlots.get(id) ?? id - this.first;
  }

  private setPut(slot: number, block: number, offset: number, size: number, ms: number, meta: string | undefined, etag: string | undefined): void {
    this.blocks[slot] = block;
    this.offsets[slot] = offset;
    this.sizes[slot] = size;
    this.times[slot] = ms;
    if (meta !== undefined || etag !== undefined) this.extras.set(slot, { meta, etag });
  }

  private grow(): void {
    const n = this.flags.length * 2;
    const widen = <T extends Uint8Array | Int32Array | Float64Array>(old: T, make: (n: number) => T, width = 1): T => {
      const next = make(n * width);
      next.set(old);
      return next;
    };
    this.flags = widen(this.flags, (m) => new Uint8Array(m));
    this.blocks = widen(this.blocks, (m) => new Int32Array(m));
    this.offsets = widen(this.offsets, (m) => new Int32Array(m));
    this.sizes = widen(this.sizes, (m) => new Int32Array(m));
    this.times = widen(this.times, (m) => new Float64Array(m));
    this.md5s = widen(this.md5s, (m) => new Uint8Array(m), 16);
  }

  /** Version `revision` of `key`; undefined when that revision is not a version of that key. */
  get(key: string, revision: number): Version | undefined {
    if (!Number.isSafeInteger(revision) || revision < 0 || revision >= this.size) return undefined;
    const list = this.byKey.get(toRawKey(key));
    if (!list || !sortedHas(list, revision)) return undefined;
    return this.version(key, revision, list[list.length - 1] === revision);
  }

  private version(key: string, revision: number, isLatest: boolean): Version {
    const slot = this.slotOf(revision);
    const flags = this.flags[slot]!;
    const ms = this.times[slot]!;
    if (flags & DELETED) return ms ? { key, revision, entry: undefined, isLatest, deletedAt: new Date(ms) } : { key, revision, entry: undefined, isLatest };
    const extra = this.extras.get(slot);
    const md5 = flags & HAS_MD5 ? Buffer.from(this.md5s.subarray(16 * slot, 16 * slot + 16)).toString('hex') : undefined;
    const entry = new IndexEntry(this.blocks[slot]!, this.offsets[slot]!, this.sizes[slot]!, extra?.meta, md5, Math.floor(ms / 1000), extra?.etag);
    return { key, revision, entry, isLatest };
  }

  /** A page of versions in key order (UTF-8 bytes), each key's newest first, as S3 lists them. */
  list(opts: VersionListOptions): VersionList {
    const prefix = toRawKey(opts.prefix ?? '');
    const delimiter = opts.delimiter ? toRawKey(opts.delimiter) : undefined;
    const marker = opts.keyMarker === undefined || opts.keyMarker === '' ? undefined : toRawKey(opts.keyMarker);
    const result: VersionList = { versions: [], commonPrefixes: [], truncated: false };
    if (opts.limit <= 0) return result;
    let count = 0;
    let lastPrefix: string | undefined;
    const full = () => count >= opts.limit;
    const from = marker !== undefined && marker > prefix ? marker : prefix;
    for (const [raw, list] of this.byKey.entries(from)) {
      if (!raw.startsWith(prefix)) break;
      if (marker !== undefined && raw < marker) continue;
      if (delimiter) {
        const at = raw.indexOf(delimiter, prefix.length);
        if (at >= 0) {
          const common = raw.slice(0, at + delimiter.length);
          if (common === lastPrefix || (marker !== undefined && common <= marker && marker.startsWith(common))) continue;
          if (full()) {
            result.truncated = true;
            break;
          }
          result.commonPrefixes.push(fromRawKey(common));
          lastPrefix = common;
          count++;
          result.nextKeyMarker = fromRawKey(common);
          result.nextVersionIdMarker = undefined;
          continue;
        }
      }
      const key = fromRawKey(raw);
      for (let i = list.length - 1; i >= 0; i--) {
        const revision = list[i]!;
        if (raw === marker) {
          // The marker's key continues only after the marker's version (older ones); a marker
          // without a version id means all of the key's versions were listed.
          if (opts.versionIdMarker === undefined || revision >= opts.versionIdMarker) continue;
        }
        if (full()) {
          result.truncated = true;
          return result;
        }
        result.versions.push(this.version(key, revision, i === list.length - 1));
        result.nextKeyMarker = key;
        result.nextVersionIdMarker = revision;
        count++;
      }
    }
    if (!result.truncated) {
      result.nextKeyMarker = undefined;
      result.nextVersionIdMarker = undefined;
    }
    return result;
  }
}
