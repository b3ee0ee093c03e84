/**
 * Recently written and recently read small bodies, kept in memory so that a GET of a hot small
 * object is answered without a read through the libuv thread pool. Bounded in bytes; the least
 * recently used go first. Block bytes are never rewritten once written, so an entry never goes
 * stale: it is keyed by where the bytes are, not by the object's name.
 */
export const CACHED_BODY_MAX = 64 * 1024;
export const DEFAULT_BODY_CACHE_BYTES = 32 * 1024 * 1024;

/** Block and offset as one number: exact while block ids stay below 2^22. */
function slot(block: number, offset: number): number {
  return block * 2 ** 31 + offset;
}

export class BodyCache {
  private readonly entries = new Map<number, Buffer>();
  private bytes = 0;

  constructor(private readonly capacity = DEFAULT_BODY_CACHE_BYTES) {}

  /** The `size` bytes at `offset` of `block`, if cached whole. */
  get(block: number, offset: number, size: number): Buffer | undefined {
    const key = slot(block, offset);
    const hit = this.entries.get(key);
    if (!hit || hit.length !== size) return undefined;
    // Map order is insertion order: move to the back so the least recently used goes first.
    this.entries.delete(key);
    this.entries.set(key, hit);
    return hit;
  }

  /** Remembers a small body (larger ones are not worth the memory). */
  set(block: number, offset: number, body: Buffer): void {
    if (body.length === 0 || body.length > CACHED_BODY_MAX || this.capacity <= 0) return;
    const key = slot(block, offset);
    const old = this.entries.get(key);
    if (old) {
      this.bytes -= old.length;
      this.entries.delete(key);
    }
    this.entries.set(key, body);
    this.bytes += body.length;
    if (this.bytes <= this.capacity) return;
    // Down to 7/8 at once: a Map keeps the slots of deleted entries until it is rebuilt, and
    // every new iteration walks past them, so evicting one entry per insert cost more than all
    // the rest of an insert (5 µs with 32 MiB of 4 KiB bodies).
    const target = this.capacity - Math.floor(this.capacity / 8);
    for (const [k, v] of this.entries) {
      if (this.bytes <= target) break;
      this.entries.delete(k);
      this.bytes -= v.length;
    }
  }

  get size(): number {
    return this.bytes;
  }
}
