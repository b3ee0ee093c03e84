/**
 * The live key -> object map, sorted for listing. Keys are held as their UTF-8 bytes in a
 * latin1 string ("raw keys"): plain string comparison of raw keys is UTF-8 byte order, which
 * is S3's listing order, and one-byte strings keep memory low. Values are small fixed-shape
 * objects; metadata and MD5 stay as compact strings until a client asks for them.
 */
import BTreeModule from 'sorted-btree';
import type { Location } from './schema.js';

// sorted-btree is CommonJS: under NodeNext its default export arrives as `.default`.
const BTree = (BTreeModule as unknown as { default: typeof BTreeModule.default }).default;

export function toRawKey(key: string): string {
  return Buffer.from(key, 'utf8').toString('latin1');
}

export function fromRawKey(raw: string): string {
  return Buffer.from(raw, 'latin1').toString('utf8');
}

export class IndexEntry {
  constructor(
    readonly block: number,
    readonly offset: number,
    readonly size: number,
    /** Serialized Metadata message as latin1, or undefined when there is none. */
    readonly meta: string | undefined,
    /** MD5 of the bytes as a 32-character hex string; undefined for objects the original wrote. */
    public md5: string | undefined,
    /** Write time in seconds since the epoch (0 when unknown). */
    readonly mtime: number,
    /** ETag when it is not the MD5 (multipart uploads). */
    readonly etag: string | undefined,
  ) {}

  static fromLocation(location: Location): IndexEntry {
    return new IndexEntry(
      location.block,
      location.offset,
      location.size,
      location.metadata && location.metadata.length > 0 ? Buffer.from(location.metadata).toString('latin1') : undefined,
      location.md5 && location.md5.length === 16 ? Buffer.from(location.md5).toString('hex') : undefined,
      location.modifiedMs ? Math.floor(location.modifiedMs / 1000) : 0,
      location.etag || undefined,
    );
  }

  metadataBytes(): Uint8Array | undefined {
    return this.meta === undefined ? undefined : Buffer.from(this.meta, 'latin1');
  }
}

const compareRaw = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export class ObjectIndex {
  private readonly tree: BTreeModule.default<string, IndexEntry> = new BTree<string, IndexEntry>(undefined, compareRaw, 64);
  /** Bytes of all live objects. */
  liveBytes = 0;

  get size(): number {
    return this.tree.size;
  }

  get(rawKey: string): IndexEntry | undefined {
    return this.tree.get(rawKey);
  }

  set(rawKey: string, entry: IndexEntry): void {
    const old = this.tree.get(rawKey);
    if (old) this.liveBytes -= old.size;
    this.tree.set(rawKey, entry);
    this.liveBytes += entry.size;
  }

  delete(rawKey: string): boolean {
    const old = this.tree.get(rawKey);
    if (!old) return false;
    this.liveBytes -= old.size;
    return this.tree.delete(rawKey);
  }

  /** Entries with raw key >= `from`, in order. */
  from(from: string): IterableIterator<[string, IndexEntry]> {
    return this.tree.entries(from);
  }
}
