/** Request bodies as the engine takes them: counted, hashed, and checked in one place. */
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BodySizeMismatchError, DigestMismatchError, ObjectTooLargeError } from './errors.js';
import { MAX_OBJECT_SIZE } from './files.js';

export type Body = Readable | Uint8Array;

/** What a body turned out to be. */
export interface BodyDigest {
  size: number;
  md5: Buffer;
}

/**
 * Counts and hashes a body as it is consumed. With a known size, the body must be exactly that
 * long: one running long is cut off at once, so it never reaches past its reservation.
 */
export class BodyCheck {
  private readonly hash: Hash = createHash('md5');
  received = 0;

  constructor(
    /** The announced size, when there is one. */
    private readonly size: number | undefined,
    /** The MD5 the client announced (Content-MD5): a mismatch stores nothing. */
    private readonly expectedMd5?: Buffer,
  ) {}

  /** The chunks of `body`, counted and hashed on the way. */
  async *chunks(body: Body): AsyncGenerator<Buffer> {
    if (body instanceof Uint8Array) {
      this.take(body.length);
      this.hash.update(body);
      yield Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    } else {
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          this.take(chunk.length);
          this.hash.update(chunk);
          yield chunk;
        }
      } catch (err) {
        body.destroy();
        throw err;
      }
    }
    if (this.size !== undefined && this.received !== this.size) throw new BodySizeMismatchError(this.size, this.received);
  }

  /** The body's size and MD5, once it has been consumed; checks the announced MD5. */
  finish(): BodyDigest {
    const md5 = this.hash.digest();
    if (this.expectedMd5 && !md5.equals(this.expectedMd5)) throw new DigestMismatchError();
    return { size: this.received, md5 };
  }

  private take(length: number): void {
    this.received += length;
    if (this.size !== undefined && this.received > this.size) throw new BodySizeMismatchError(this.size, this.received);
    if (this.received > MAX_OBJECT_SIZE) throw new ObjectTooLargeError(this.received, MAX_OBJECT_SIZE);
  }
}

/** Large bodies are written in pieces of about this size, one piece in flight at a time. */
const WRITE_PIECE = 1024 * 1024;

/**
 * Writes chunks from `position` on. Chunks are gathered into pieces of about `pieceBytes` bytes,
 * and one piece is written while the next is received, so the socket and the disk work at the
 * same time with bounded memory.
 */
export async function writePieces(
  chunks: AsyncIterable<Buffer>,
  write: (buffers: readonly Uint8Array[], position: number) => Promise<void>,
  position: number,
  pieceBytes = WRITE_PIECE,
): Promise<void> {
  let piece: Buffer[] = [];
  let gathered = 0;
  let at = position;
  let writing: Promise<void> = Promise.resolve();
  const flush = async () => {
    await writing;
    writing = write(piece, at);
    writing.catch(() => undefined); // surfaced by the next await of `writing`
    at += gathered;
    piece = [];
    gathered = 0;
  };
  for await (const chunk of chunks) {
    piece.push(chunk);
    gathered += chunk.length;
    if (gathered >= pieceBytes) await flush();
  }
  if (gathered > 0) await flush();
  await writing;
}
