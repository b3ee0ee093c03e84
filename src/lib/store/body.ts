/** Request bodies as the engine takes them: counted, hashed, and checked in one place. */
import crypto, { type Hash } from 'node:crypto';
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
  /** Hashes chunks as they stream by (`chunks`); created on the first one. */
  private hash: Hash | undefined;
  /** A body read whole (`readAll`), hashed at `finish`: in one call when it came in one chunk. */
  private whole: Buffer[] | undefined;
  received = 0;

  constructor(
    /** The announced size, when there is one. */
    private readonly size: number | undefined,
    /** The MD5 the client announced (Content-MD5): a mismatch stores nothing. */
    private readonly expectedMd5?: Buffer,
  ) {}

  /** The chunks of `body`, counted and hashed on the way. */
  async *chunks(body: Body): AsyncGenerator<Buffer> {
    const hash = (this.hash ??= crypto.createHash('md5'));
    if (body instanceof Uint8Array) {
      this.take(body.length);
      hash.update(body);
      yield Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    } else {
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          this.take(chunk.length);
          hash.update(chunk);
          yield chunk;
        }
      } catch (err) {
        body.destroy();
        throw err;
      }
    }
    this.checkComplete();
  }

  /**
   * The whole body as its chunks, counted and checked as `chunks` does. For small bodies: plain
   * stream events cost a fraction of an async iterator's promises, on every small PUT.
   */
  readAll(body: Body): Promise<Buffer[]> {
    if (body instanceof Uint8Array) {
      try {
        this.take(body.length);
        this.checkComplete();
      } catch (err) {
        return Promise.reject(err as Error);
      }
      this.whole = [Buffer.from(body.buffer, body.byteOffset, body.byteLength)];
      return Promise.resolve(this.whole);
    }
    // A stream already gone never emits again: waiting for it would hold the body's memory.
    if (body.destroyed) return Promise.reject(body.errored ?? prematureClose());
    return new Promise<Buffer[]>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const done = (err: Error | undefined): void => {
        body.off('data', onData);
        body.off('end', onEnd);
        body.off('error', done);
        body.off('close', onClose);
        if (err) {
          body.destroy();
          reject(err);
        } else {
          this.whole = chunks;
          resolve(chunks);
        }
      };
      const onData = (chunk: Buffer): void => {
        try {
          this.take(chunk.length);
        } catch (err) {
          return done(err as Error);
        }
        chunks.push(chunk);
      };
      const onEnd = (): void => {
        try {
          this.checkComplete();
        } catch (err) {
          return done(err as Error);
        }
        done(undefined);
      };
      const onClose = (): void => done(prematureClose());
      body.on('data', onData);
      body.on('end', onEnd);
      body.on('error', done);
      body.on('close', onClose);
      body.resume(); // even if something paused it
    });
  }

  /** The body's size and MD5, once it has been consumed; checks the announced MD5. */
  finish(): BodyDigest {
    let md5: Buffer;
    if (this.whole?.length === 1) md5 = crypto.hash('md5', this.whole[0]!, 'buffer');
    else {
      const hash = this.hash ?? crypto.createHash('md5');
      for (const chunk of this.whole ?? []) hash.update(chunk);
      md5 = hash.digest();
    }
    if (this.expectedMd5 && !md5.equals(this.expectedMd5)) throw new DigestMismatchError();
    return { size: this.received, md5 };
  }

  private checkComplete(): void {
    if (this.size !== undefined && this.received !== this.size) throw new BodySizeMismatchError(this.size, this.received);
  }

  private take(length: number): void {
    this.received += length;
    if (this.size !== undefined && this.received > this.size) throw new BodySizeMismatchError(this.size, this.received);
    if (this.received > MAX_OBJECT_SIZE) throw new ObjectTooLargeError(this.received, MAX_OBJECT_SIZE);
  }
}

/** What stream.finished calls a stream closed before its end: a client that went away. */
export function prematureClose(message = 'The request body ended early'): Error {
  return Object.assign(new Error(message), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
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
