/**
 * The live key -> object map, sorted for listing. Keys are held as their UTF-8 bytes in a
 * latin1 string ("raw keys"): plain string comparison of raw keys is UTF-8 byte order, which
 * is S3's listing order, and one-byte strings keep memory low.
 *
 * Memory is what limits the number of keys, so an object's facts are not kept in an object per
 * key: the sorted tree maps a raw key to a slot number (a small integer, stored unboxed), and
 * the slot's block, offset, size, time and MD5 live in typed-array columns. Metadata and ETag
 * strings, when present, sit in plain arrays by slot. `IndexEntry` objects are made on demand.
 */
import BTreeModule from 'sorted-btree';
import { bulkLoad } from 'sorted-btree/extended/bulkLoad.js';
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

/**
 * A put as the recovery scanner sees it, without building objects: `md5At` is the position of
 * the 16 MD5 bytes in `buf`, or -1.
 */
export interface PutFields {
  block: number;
  offset: number;
  size: number;
  meta: string | undefined;
  buf: Uint8Array;
  md5At: number;
  /** Write time in ms since the epoch, 0 when unknown. */
  modifiedMs: number;
  etag: string | undefined;
  /**
   * The put's own revision when it stands for an object kept from before a compacted history's
   * start (its version id); -1 on every other record.
   */
  keptRevision: number;
}

/** Metadata (latin1) alone, as most objects have it, or with an ETag. */
type Extra = string | { meta: string | undefined; etag: string } | undefined;

function extra(meta: string | undefined, etag: string | undefined): Extra {
  return etag === undefined ? meta : { meta, etag };
}

/** Seconds since the epoch as the u32 column holds them; out of range is "unknown" (0). */
function storableTime(seconds: number): number {
  return seconds >= 0 && seconds <= 0xffffffff ? seconds : 0;
}

const compareRaw = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const NODE_SIZE = 64;
const INITIAL_CAPACITY = 1024;

/** Bytes of a key looked at per step of the sort; 257^6 < 2^53, so a chunk is an exact double. */
const CHUNK = 6;

/**
 * Bytes [CHUNK * d, CHUNK * d + CHUNK) of a raw key as one number that sorts like them: each
 * byte b counts as b + 1 and a position past the end as 0, so a key sorts before its
 * extensions. A chunk divisible by 257 ends the key.
 */
function chunkAt(key: string, d: number): number {
  let code = 0;
  for (let i = CHUNK * d, end = i + CHUNK; i < end; i++) code = code * 257 + (i < key.length ? key.charCodeAt(i) + 1 : 0);
  return code;
}

/**
 * Sorts raw keys in byte order, moving `slots` along: a multikey quicksort whose "characters"
 * are 6-byte chunks, cached in a typed array so that partitioning does not touch the strings.
 * Each key is read once per chunk of the prefix it shares with others, so the long common
 * prefixes of object keys cost little. Equal keys (a key written more than once) end up
 * side by side, in no particular order.
 */
function sortRawKeys(keys: string[], slots: number[]): void {
  const chunks = new Float64Array(keys.length);
  const swap = (i: number, j: number): void => {
    const k = keys[i]!;
    keys[i] = keys[j]!;
    keys[j] = k;
    const s = slots[i]!;
    slots[i] = slots[j]!;
    slots[j] = s;
    const c = chunks[i]!;
    chunks[i] = chunks[j]!;
    chunks[j] = c;
  };
  // Sorts [lo, hi], whose keys share their first `d` chunks.
  const sortRange = (lo: number, hi: number, d: number): void => {
    for (let i = lo; i <= hi; i++) chunks[i] = chunkAt(keys[i]!, d);
    partition(lo, hi, d);
  };
  const partition = (lo: number, hi: number, d: number): void => {
    while (hi - lo > 16) {
      const a = chunks[lo]!;
      const b = chunks[(lo + hi) >>> 1]!;
      const c = chunks[hi]!;
      const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
      let lt = lo;
      let gt = hi;
      let i = lo;
      while (i <= gt) {
        const x = chunks[i]!;
        if (x < pivot) swap(lt++, i++);
        else if (x > pivot) swap(i, gt--);
        else i++;
      }
      partition(lo, lt - 1, d);
      // Equal chunks that end the keys are equal keys; otherwise look at the next chunk.
      if (pivot % 257 !== 0 && gt > lt) sortRange(lt, gt, d + 1);
      lo = gt + 1;
    }
    for (let i = lo + 1; i <= hi; i++) {
      const key = keys[i]!;
      const slot = slots[i]!;
      let j = i - 1;
      while (j >= lo && keys[j]! > key) {
        keys[j + 1] = keys[j]!;
        slots[j + 1] = slots[j]!;
        j--;
      }
      keys[j + 1] = key;
      slots[j + 1] = slot;
    }
  };
  sortRange(0, keys.length - 1, 0);
}

/** Leaves of a tree built in bulk are filled this far, leaving room for the inserts to come. */
const BULK_LOAD_FACTOR = 0.85;

/** A history being replayed: every record's key, in order, and which records are deletes. */
interface Bulk {
  keys: string[];
  deletes: Uint8Array;
}

export class ObjectIndex {
  private tree: BTreeModule.default<string, number> = new BTree<string, number>(undefined, compareRaw, NODE_SIZE);
  /**
   * While a history is replayed (`beginBulk` .. `endBulk`), records are only appended, each
   * with a slot of its own, and no lookup is made: at the end the keys are sorted once, the
   * last record of each key is kept (unless it is a delete), the live slots are compacted and
   * the tree is built from them in one pass. This is much cheaper than a tree or hash lookup
   * per record.
   */
  private bulk: Bulk | undefined;
  /** Bytes of all live objects. */
  liveBytes = 0;

  private capacity = INITIAL_CAPACITY;
  private used = 0;
  private free: number[] = [];
  private blocks = new Int32Array(INITIAL_CAPACITY);
  private offsets = new Int32Array(INITIAL_CAPACITY);
  private sizes = new Int32Array(INITIAL_CAPACITY);
  private mtimes = new Uint32Array(INITIAL_CAPACITY);
  /** 16 bytes per slot; `hasMd5[slot]` says whether they are set. */
  private md5s = new Uint8Array(16 * INITIAL_CAPACITY);
  private hasMd5 = new Uint8Array(INITIAL_CAPACITY);
  /** Per slot: the metadata string, or both strings when there is an ETag too (rare). */
  private extras: Array<Extra> = [];

  get size(): number {
    return this.tree.size;
  }

  /**
   * Starts replaying a history into an empty index: until `endBulk`, only `set`, `setFields`
   * and `delete` may be used (and `delete` does not tell whether the key existed).
   */
  beginBulk(): void {
    if (this.used > 0 || this.tree.size > 0) throw new Error('bulk loading needs an empty index');
    this.bulk = { keys: [], deletes: new Uint8Array(this.capacity) };
  }

  /** Ends a replay: the index then holds the state after the last record. */
  endBulk(): void {
    const bulk = this.bulk;
    if (!bulk) return;
    this.bulk = undefined;
    const { keys, deletes } = bulk;
    const n = keys.length;
    let order: number[] | undefined;
    for (let i = 1; i < n; i++) {
      if (!(keys[i - 1]! < keys[i]!)) {
        order = new Array<number>(n);
        for (let j = 0; j < n; j++) order[j] = j;
        sortRawKeys(keys, order);
        break;
      }
    }
    // Of each run of equal keys, the record with the highest slot is the latest. The keys
    // array is reused for the live keys (they are never ahead of the reading position).
    const liveSlots = new Array<number>(n);
    let live = 0;
    for (let i = 0; i < n; ) {
      const key = keys[i]!;
      let last = order ? order[i]! : i;
      let j = i + 1;
      for (; j < n && keys[j] === key; j++) last = Math.max(last, order![j]!);
      if (!deletes[last]) {
        keys[live] = key;
        liveSlots[live++] = last;
      }
      i = j;
    }
    keys.length = live;
    liveSlots.length = live;
    this.dropDeadSlots(liveSlots);
    this.tree = live > 0 ? bulkLoad(keys, liveSlots, NODE_SIZE, compareRaw, BULK_LOAD_FACTOR) : new BTree<string, number>(undefined, compareRaw, NODE_SIZE);
  }

  has(rawKey: string): boolean {
    this.assertNotBulk();
    return this.tree.has(rawKey);
  }

  get(rawKey: string): IndexEntry | undefined {
    this.assertNotBulk();
    const slot = this.tree.get(rawKey);
    return slot === undefined ? undefined : this.entryAt(slot);
  }

  set(rawKey: string, entry: IndexEntry): void {
    const slot = this.slotFor(rawKey);
    this.blocks[slot] = entry.block;
    this.offsets[slot] = entry.offset;
    this.sizes[slot] = entry.size;
    this.mtimes[slot] = storableTime(entry.mtime);
    this.extras[slot] = extra(entry.meta, entry.etag);
    if (entry.md5 !== undefined && entry.md5.length === 32) {
      this.md5s.set(Buffer.from(entry.md5, 'hex'), 16 * slot);
      this.hasMd5[slot] = 1;
    } else this.hasMd5[slot] = 0;
    this.liveBytes += entry.size;
  }

  /** `set` for the recovery scanner: no intermediate objects. */
  setFields(rawKey: string, f: PutFields): void {
    const slot = this.slotFor(rawKey);
    this.blocks[slot] = f.block;
    this.offsets[slot] = f.offset;
    this.sizes[slot] = f.size;
    this.mtimes[slot] = storableTime(Math.floor(f.modifiedMs / 1000));
    this.extras[slot] = extra(f.meta, f.etag);
    if (f.md5At >= 0) {
      const md5s = this.md5s;
      const buf = f.buf;
      for (let i = 0, from = f.md5At, to = 16 * slot; i < 16; i++) md5s[to + i] = buf[from + i]!;
      this.hasMd5[slot] = 1;
    } else this.hasMd5[slot] = 0;
    this.liveBytes += f.size;
  }

  delete(rawKey: string): boolean {
    if (this.bulk) {
      const slot = this.bulkSlot(rawKey);
      this.bulk.deletes[slot] = 1;
      this.extras[slot] = undefined;
      return true;
    }
    const slot = this.tree.get(rawKey);
    if (slot === undefined) return false;
    this.tree.delete(rawKey);
    this.liveBytes -= this.sizes[slot]!;
    this.extras[slot] = undefined;
    this.free.push(slot);
    return true;
  }

  /**
   * Records the MD5 of an object the original wrote once it has been computed, if `rawKey`
   * still holds the same bytes.
   */
  rememberMd5(rawKey: string, entry: IndexEntry, md5: string): void {
    this.assertNotBulk();
    const slot = this.tree.get(rawKey);
    if (slot === undefined || this.hasMd5[slot]) return;
    if (this.blocks[slot] !== entry.block || this.offsets[slot] !== entry.offset || this.sizes[slot] !== entry.size) return;
    this.md5s.set(Buffer.from(md5, 'hex'), 16 * slot);
    this.hasMd5[slot] = 1;
  }

  /**
   * Moves objects whose bytes were copied elsewhere (compaction): `moved` gives the new block
   * and offset of a (block, offset) pair, or undefined when the object stays where it is.
   */
  relocate(moved: (block: number, offset: number) => { block: number; offset: number } | undefined): number {
    this.assertNotBulk();
    let count = 0;
    for (const slot of this.tree.values()) {
      if (this.sizes[slot] === 0) continue;
      const to = moved(this.blocks[slot]!, this.offsets[slot]!);
      if (!to) continue;
      this.blocks[slot] = to.block;
      this.offsets[slot] = to.offset;
      count++;
    }
    return count;
  }

  /** Entries with raw key >= `from`, in order. */
  *from(from: string): IterableIterator<[string, IndexEntry]> {
    this.assertNotBulk();
    for (const [raw, slot] of this.tree.entries(from)) yield [raw, this.entryAt(slot)];
  }

  /** Raw keys >= `from`, in order, without building entries. */
  keysFrom(from: string): IterableIterator<string> {
    this.assertNotBulk();
    return this.tree.keys(from);
  }

  private assertNotBulk(): void {
    if (this.bulk) throw new Error('the index is being bulk loaded');
  }

  private entryAt(slot: number): IndexEntry {
    const md5 = this.hasMd5[slot] ? Buffer.from(this.md5s.buffer, this.md5s.byteOffset + 16 * slot, 16).toString('hex') : undefined;
    const x = this.extras[slot];
    return new IndexEntry(
      this.blocks[slot]!,
      this.offsets[slot]!,
      this.sizes[slot]!,
      typeof x === 'object' ? x.meta : x,
      md5,
      this.mtimes[slot]!,
      typeof x === 'object' ? x.etag : undefined,
    );
  }

  /** The slot of `rawKey`, allocating one for a new key; an existing key's bytes leave the total. */
  private slotFor(rawKey: string): number {
    if (this.bulk) return this.bulkSlot(rawKey);
    // One descent of the tree for a new key.
    let slot = this.free.pop();
    const fresh = slot === undefined;
    if (slot === undefined) {
      if (this.used === this.capacity) this.grow();
      slot = this.used++;
    }
    if (this.tree.set(rawKey, slot, false)) return slot;
    if (fresh) this.used--;
    else this.free.push(slot);
    const existing = this.tree.get(rawKey)!;
    this.liveBytes -= this.sizes[existing]!;
    return existing;
  }

  private bulkSlot(rawKey: string): number {
    if (this.used === this.capacity) this.grow();
    this.bulk!.keys.push(rawKey);
    return this.used++;
  }

  /**
   * After a replay: every slot not in `liveSlots` is dead. A few dead slots go to the free
   * list; many are squeezed out, moving the live ones down in slot order (a sequential copy),
   * and `liveSlots` is rewritten with the new slot numbers. Recounts the live bytes.
   */
  private dropDeadSlots(liveSlots: number[]): void {
    const used = this.used;
    const live = liveSlots.length;
    const dead = used - live;
    const isLive = new Uint8Array(used);
    for (let j = 0; j < live; j++) isLive[liveSlots[j]!] = 1;
    if (dead <= used / 4) {
      let liveBytes = 0;
      const free: number[] = [];
      for (let slot = 0; slot < used; slot++) {
        if (isLive[slot]) liveBytes += this.sizes[slot]!;
        else {
          free.push(slot);
          this.extras[slot] = undefined;
        }
      }
      this.free = free;
      this.liveBytes = liveBytes;
      return;
    }
    const capacity = Math.max(INITIAL_CAPACITY, Math.ceil(live * 1.25));
    const renumber = new Int32Array(used);
    const blocks = new Int32Array(capacity);
    const offsets = new Int32Array(capacity);
    const sizes = new Int32Array(capacity);
    const mtimes = new Uint32Array(capacity);
    const md5s = new Uint8Array(16 * capacity);
    const hasMd5 = new Uint8Array(capacity);
    const extras = new Array<Extra>(live);
    let liveBytes = 0;
    for (let old = 0, j = 0; old < used; old++) {
      if (!isLive[old]) continue;
      renumber[old] = j;
      blocks[j] = this.blocks[old]!;
      offsets[j] = this.offsets[old]!;
      const size = this.sizes[old]!;
      sizes[j] = size;
      liveBytes += size;
      mtimes[j] = this.mtimes[old]!;
      extras[j] = this.extras[old];
      if (this.hasMd5[old]) {
        hasMd5[j] = 1;
        for (let k = 0, a = 16 * old, b = 16 * j; k < 16; k++) md5s[b + k] = this.md5s[a + k]!;
      }
      j++;
    }
    for (let j = 0; j < live; j++) liveSlots[j] = renumber[liveSlots[j]!]!;
    this.blocks = blocks;
    this.offsets = offsets;
    this.sizes = sizes;
    this.mtimes = mtimes;
    this.md5s = md5s;
    this.hasMd5 = hasMd5;
    this.extras = extras;
    this.capacity = capacity;
    this.used = live;
    this.free = [];
    this.liveBytes = liveBytes;
  }

  private grow(): void {
    const capacity = Math.ceil(this.capacity * 1.5);
    const widen = <T extends Int32Array | Uint32Array | Uint8Array>(old: T, make: (n: number) => T, per = 1): T => {
      const next = make(capacity * per);
      next.set(old);
      return next;
    };
    this.blocks = widen(this.blocks, (n) => new Int32Array(n));
    this.offsets = widen(this.offsets, (n) => new Int32Array(n));
    this.sizes = widen(this.sizes, (n) => new Int32Array(n));
    this.mtimes = widen(this.mtimes, (n) => new Uint32Array(n));
    this.md5s = widen(this.md5s, (n) => new Uint8Array(n), 16);
    this.hasMd5 = widen(this.hasMd5, (n) => new Uint8Array(n));
    if (this.bulk) this.bulk.deletes = widen(this.bulk.deletes, (n) => new Uint8Array(n));
    this.capacity = capacity;
  }
}
