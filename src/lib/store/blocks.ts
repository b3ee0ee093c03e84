/**
 * Block files. Writers reserve a contiguous range in the open block synchronously (so ranges
 * never overlap and bodies stream in concurrently), then write their bytes at that position.
 * A block is complete once no reservation fits or a checkpoint rolls it; it is never written
 * again after its last writer is done. Readers use their own handles, cached per block.
 */
import { Readable } from 'node:stream';
import { durably } from './errors.js';
import { blockFileName } from './files.js';
import { type ReadableFile, type Storage, type WritableFile, readFully } from './storage/storage.js';

export class OpenBlock {
  readonly ready: Promise<WritableFile>;
  readonly name: string;
  /** End of the last reservation. */
  reserved = 0;
  writers = 0;
  complete = false;
  /** The directory has been fsynced since this block's file was created. */
  entrySynced = false;
  /** Start offsets of reservations not yet committed or released (their bytes may still change). */
  readonly unsettled = new Set<number>();
  private file: WritableFile | undefined;

  constructor(
    readonly id: number,
    private readonly storage: Storage,
  ) {
    this.name = blockFileName(id);
    // Exclusive: a block id is never reused, so the file must not exist yet.
    this.ready = storage.create(this.name, { exclusive: true }).then((f) => (this.file = f));
    this.ready.catch(() => undefined); // awaited by every writer, which reports the error
  }

  /** Writes `buffers` back to back from `position`. */
  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    await (await this.ready).writev(buffers, position);
  }

  async datasync(): Promise<void> {
    const file = await this.ready;
    await durably(`${this.storage.root}/${this.name}`, 'fdatasync', () => file.datasync());
  }

  async close(): Promise<void> {
    await this.ready.catch(() => undefined);
    const file = this.file;
    this.file = undefined;
    await file?.close();
  }
}

export interface Reservation {
  block: OpenBlock;
  offset: number;
  size: number;
}

export class BlockWriter {
  private open: OpenBlock | undefined;
  private readonly live = new Set<OpenBlock>();

  constructor(
    private readonly storage: Storage,
    private readonly blockSize: number,
    private nextId: number,
    private readonly warn: (message: string) => void,
  ) {}

  /** The id the next new block gets; everything below it is complete or open. */
  get nextBlockId(): number {
    return this.nextId;
  }

  /** An id for a block written outside the writer (compaction's copies): never used again. */
  allocateId(): number {
    return this.nextId++;
  }

  /** Whether block `id` may still be written to (open, or with writers not yet done). */
  isLive(id: number): boolean {
    for (const block of this.live) if (block.id === id) return true;
    return false;
  }

  /** Reserves `size` (> 0) bytes; a body larger than the block size gets a block of its own. */
  reserve(size: number): Reservation {
    let block = this.open;
    if (!block || block.reserved + size > this.blockSize) {
      if (block) this.complete(block);
      block = new OpenBlock(this.nextId++, this.storage);
      this.open = block;
      this.live.add(block);
      const created = block;
      // A block whose file cannot be made must not stay the open block: its writers fail, and
      // the next reservation starts a new block (the id is never used again).
      created.ready.catch(() => {
        if (this.open === created) this.open = undefined;
        this.complete(created);
      });
    }
    const offset = block.reserved;
    block.reserved += size;
    block.writers++;
    block.unsettled.add(offset);
    return { block, offset, size };
  }

  /** The writer of a reservation is done (committed or failed). */
  release(reservation: Reservation): void {
    const { block } = reservation;
    block.unsettled.delete(reservation.offset);
    block.writers--;
    this.closeIfDone(block);
  }

  /**
   * Blocks that may still be written, each with the length of its settled prefix: every byte
   * below it belongs to a committed body (durable) or to a failed one (never referred to).
   */
  liveBlocks(): Array<{ id: number; name: string; settled: number }> {
    return [...this.live].map((b) => {
      let settled = b.reserved;
      for (const offset of b.unsettled) settled = Math.min(settled, offset);
      return { id: b.id, name: b.name, settled };
    });
  }

  /**
   * Completes the open block so that the next reservation starts a new one. Returns the id the
   * next block gets: every block below it is complete.
   */
  roll(): number {
    if (this.open) this.complete(this.open);
    this.open = undefined;
    return this.nextId;
  }

  async close(): Promise<void> {
    this.roll();
    await Promise.all([...this.live].map((b) => b.close()));
    this.live.clear();
  }

  private complete(block: OpenBlock): void {
    block.complete = true;
    this.closeIfDone(block);
  }

  private closeIfDone(block: OpenBlock): void {
    if (block.complete && block.writers === 0 && this.live.delete(block)) {
      block.close().catch((err: Error) => this.warn(`closing ${block.name}: ${err.message}`));
    }
  }
}

/**
 * Streamed reads go in pieces of READ_PIECE bytes, the next ones read while the socket sends
 * this one, up to READ_AHEAD bytes ahead of the consumer. Larger pieces cost fewer thread-pool
 * round trips: with 256 KiB pieces a 4 MiB GET took about 1.5x the CPU it takes with 1 MiB ones.
 */
const READ_PIECE = 1024 * 1024;
const READ_AHEAD = 2 * READ_PIECE;
/** Piece buffers kept for reuse when no stream has them: enough for 16 large GETs at once (48 MiB). */
const SPARE_PIECES = 48;

/**
 * The buffers of streamed pieces, used again once their consumer has handed them to the socket
 * (`BlockReader.recycle`). Large GETs then allocate nothing: fresh megabyte buffers at disk
 * speed made V8 run a full collection every few dozen GETs, which cost more than the reads.
 * Only a buffer lent by `take` and not yet given back is accepted, so a stray or repeated
 * `give` never puts a buffer in use into two streams.
 */
class PieceBuffers {
  private readonly spare: ArrayBuffer[] = [];
  private readonly lent = new WeakSet<ArrayBuffer>();

  take(): Buffer {
    const memory = this.spare.pop() ?? Buffer.allocUnsafeSlow(READ_PIECE).buffer;
    this.lent.add(memory);
    return Buffer.from(memory, 0, READ_PIECE);
  }

  give(piece: Uint8Array): void {
    const memory = piece.buffer as ArrayBuffer;
    if (!this.lent.delete(memory)) return;
    if (this.spare.length < SPARE_PIECES) this.spare.push(memory);
  }
}

/** A piece of a streamed read: its bytes once read, or why they could not be. */
interface ReadPiece {
  chunk?: Buffer;
  error?: Error;
}

const MAX_CACHED_HANDLES = 128;

interface CachedHandle {
  handle: Promise<ReadableFile>;
  refs: number;
}

/** Positional reads from block files, with a small cache of open handles. */
export class BlockReader {
  private readonly handles = new Map<number, CachedHandle>();
  private readonly pieceBuffers = new PieceBuffers();
  /** Deleted blocks whose handles close once their readers are done. */
  private readonly retired = new Set<number>();
  private closedFlag = false;

  constructor(private readonly storage: Storage) {}

  /** Reads `size` bytes at `offset` of a block. */
  async read(block: number, offset: number, size: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(size);
    if (size === 0) return buf;
    await this.readInto(block, offset, buf);
    return buf;
  }

  private async readInto(block: number, offset: number, buf: Buffer): Promise<void> {
    const entry = this.acquire(block);
    try {
      await readFully(await entry.handle, buf, buf.length, offset);
    } finally {
      this.releaseHandle(block, entry);
    }
  }

  /**
   * Gives back a chunk of a `stream` once nothing holds it any more (the socket has taken its
   * bytes), for the next piece to be read into. Anything else is ignored.
   */
  recycle(chunk: Uint8Array): void {
    this.pieceBuffers.give(chunk);
  }

  /**
   * A stream of `size` bytes at `offset`, read ahead of the consumer in pieces (READ_AHEAD). A
   * consumer may give each chunk back with `recycle` once it is done with it.
   */
  stream(block: number, offset: number, size: number): Readable {
    let position = offset;
    const end = offset + size;
    let entry: CachedHandle | undefined;
    /** Pieces being read, in order; each is pushed once it and those before it are in. */
    const pieces: ReadPiece[] = [];
    let inFlight = 0;
    let aheadBytes = 0;
    let finished = false;
    // The handle goes back once no read uses it, so a retired block closes only after them.
    const releaseIfIdle = () => {
      if (entry && inFlight === 0 && (finished || readable.destroyed)) {
        this.releaseHandle(block, entry);
        entry = undefined;
      }
    };
    const deliver = () => {
      while (pieces.length > 0 && (pieces[0]!.chunk || pieces[0]!.error)) {
        const piece = pieces.shift()!;
        if (piece.error) return void readable.destroy(piece.error);
        aheadBytes -= piece.chunk!.length;
        readable.push(piece.chunk);
      }
      if (pieces.length === 0 && position >= end && !finished) {
        finished = true;
        readable.push(null);
        releaseIfIdle();
      }
    };
    // Called by the stream when it wants data: it then waits for a push, so a call with no read
    // in flight always starts one, even over the budget.
    const fill = () => {
      while (position < end && (pieces.length === 0 || aheadBytes + readable.readableLength < READ_AHEAD)) {
        const length = Math.min(end - position, READ_PIECE);
        const piece: ReadPiece = {};
        pieces.push(piece);
        aheadBytes += length;
        inFlight++;
        entry ??= this.acquire(block);
        const buf = this.pieceBuffers.take().subarray(0, length);
        this.readInto(block, position, buf).then(
          () => void (piece.chunk = buf),
          (err: Error) => {
            piece.error = err;
            this.pieceBuffers.give(buf);
          },
        ).finally(() => {
          inFlight--;
          releaseIfIdle();
          if (!readable.destroyed) deliver();
        });
        position += length;
      }
      deliver();
    };
    const readable: Readable = new Readable({
      highWaterMark: READ_AHEAD,
      read: fill,
      destroy: (err, callback) => {
        releaseIfIdle();
        callback(err);
      },
    });
    return readable;
  }

  /**
   * Blocks about to be deleted: their handles are opened now (while the files exist) and kept
   * for `graceMs`, so that a read that looked an object up before it moved still finds its
   * bytes; after that, each handle closes once its last reader is done.
   */
  async retire(ids: readonly number[], graceMs: number): Promise<void> {
    const pinned = ids.map((id) => ({ id, entry: this.acquire(id) }));
    await Promise.all(pinned.map(({ entry }) => entry.handle.catch(() => undefined)));
    for (const { id } of pinned) this.retired.add(id);
    const timer = setTimeout(() => {
      for (const { id, entry } of pinned) this.releaseHandle(id, entry);
    }, graceMs);
    timer.unref();
  }

  /** After close, reads fail: a handle opened then would never be closed. */
  get closed(): boolean {
    return this.closedFlag;
  }

  async close(): Promise<void> {
    this.closedFlag = true;
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (e) => (await e.handle.catch(() => undefined))?.close()));
  }

  private acquire(block: number): CachedHandle {
    if (this.closedFlag) throw new Error(`cannot read ${blockFileName(block)}: the store is closed`);
    let entry = this.handles.get(block);
    if (!entry) {
      // Counted before evicting: with every other handle in use, the new one must not be the one closed.
      entry = { handle: this.storage.openRead(blockFileName(block)), refs: 1 };
      entry.handle.catch(() => undefined);
      this.handles.set(block, entry);
      this.evict();
      return entry;
    }
    // Map order is insertion order: move to the back so the least recently used goes first.
    this.handles.delete(block);
    this.handles.set(block, entry);
    entry.refs++;
    return entry;
  }

  private releaseHandle(block: number, entry: CachedHandle): void {
    entry.refs--;
    if (entry.refs === 0 && this.retired.has(block) && this.handles.get(block) === entry) {
      this.handles.delete(block);
      this.retired.delete(block);
      void entry.handle.then((h) => h.close(), () => undefined);
      return;
    }
    // A handle that failed to open is dropped so a later read retries.
    entry.handle.catch(() => {
      if (this.handles.get(block) === entry) this.handles.delete(block);
    });
  }

  private evict(): void {
    for (const [id, entry] of this.handles) {
      if (this.handles.size <= MAX_CACHED_HANDLES) return;
      if (entry.refs === 0) {
        this.handles.delete(id);
        void entry.handle.then((h) => h.close(), () => undefined);
      }
    }
  }
}
