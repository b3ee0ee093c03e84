/**
 * Versions: every record of the history is a version of its key, and its revision is its
 * version id (the number `zipkv history` prints and `rebase --to` takes). A put is a version
 * with bytes; a delete is a delete marker. The index of versions is built on first use, by
 * streaming the db and the records after it, and then kept up to date by every commit.
 */
import BTreeModule from 'sorted-btree';
import { IndexEntry, fromRawKey, toRawKey } from './object-index.js';
import { decodeRawRecord, locationOf, replayDbRecords } from './replay.js';
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

/** A history as it is now: see HistoryLog.view. */
export interface HistoryView {
  dbName: string | undefined;
  tail: Uint8Array[];
  records: number;
}

export class VersionIndex {
  /** Raw key -> its revisions, oldest first. */
  private readonly byKey = new BTree<string, number[]>(undefined, compareRaw);
  /** Revision -> the version's entry, or for a delete marker its time in ms (0: unknown). */
  private readonly entries: Array<IndexEntry | number> = [];
  /** Revision -> its raw key (the same string instance as the tree's key). */
  private readonly keys: string[] = [];

  /** Reads the whole history of `view` into a new index. */
  static async build(storage: Storage, view: HistoryView): Promise<VersionIndex> {
    const index = new VersionIndex();
    if (view.dbName !== undefined) {
      const db: ReadableFile = await storage.openRead(view.dbName);
      try {
        const where = `${storage.root}/${view.dbName}`;
        for await (const _ of replayDbRecords(fileStream(db), where, {
          put: (rawKey, fields, rev) => index.add(rev, rawKey, IndexEntry.fromLocation(locationOf(fields))),
          delete: (rawKey, rev, _bytes, modifiedMs) => index.add(rev, rawKey, modifiedMs),
        })) void _;
      } finally {
        await db.close();
      }
    }
    let rev = view.records - view.tail.length;
    for (const payload of view.tail) {
      const record = decodeRawRecord(payload, `${storage.root} (journal)`, rev);
      index.add(rev++, record.rawKey, record.kind === 'put' ? IndexEntry.fromLocation(record.location) : (record.modifiedMs ?? 0));
    }
    return index;
  }

  /** Records in the index (the next revision it expects). */
  get size(): number {
    return this.entries.length;
  }

  /** Adds the version written by `revision`; revisions come in order, each once. */
  add(revision: number, rawKey: string, entry: IndexEntry | number): void {
    if (revision !== this.entries.length) {
      if (revision < this.entries.length) return; // already in (read from the history, then told of its commit)
      throw new Error(`version index: revision ${revision} after ${this.entries.length - 1}`);
    }
    let list = this.byKey.get(rawKey);
    if (list) rawKey = this.keys[list[0]!]!;
    else this.byKey.set(rawKey, (list = []));
    list.push(revision);
    this.entries.push(entry);
    this.keys.push(rawKey);
  }

  /** Version `revision` of `key`; undefined when that revision is not a version of that key. */
  get(key: string, revision: number): Version | undefined {
    const rawKey = toRawKey(key);
    if (!Number.isSafeInteger(revision) || revision < 0 || revision >= this.entries.length || this.keys[revision] !== rawKey) return undefined;
    const list = this.byKey.get(rawKey)!;
    return this.version(key, revision, list[list.length - 1] === revision);
  }

  private version(key: string, revision: number, isLatest: boolean): Version {
    const entry = this.entries[revision]!;
    if (typeof entry !== 'number') return { key, revision, entry, isLatest };
    return entry ? { key, revision, entry: undefined, isLatest, deletedAt: new Date(entry) } : { key, revision, entry: undefined, isLatest };
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
