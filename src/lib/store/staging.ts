/**
 * Staging: bodies kept aside, outside the history, until they are committed as an object or
 * discarded. A body of unknown length is spooled here first so its size is known before it
 * reserves space in a block; multipart uploads (their policy lives in the S3 layer) stage each
 * part and commit the parts, in order, as one object. The scratch area is emptied whenever a
 * writer opens the store, so nothing staged outlives a restart.
 */
import { Readable } from 'node:stream';
import { type Body, BodyCheck, type BodyDigest, writePieces } from './body.js';
import { SCRATCH_DIR } from './files.js';
import type { Storage } from './storage/storage.js';

/** A staged body: where it is, and what it turned out to be. */
export interface StagedBody extends BodyDigest {
  readonly name: string;
}

export interface StageOptions {
  /** The announced size, when known: the body must be exactly that long. */
  size?: number;
  /** The announced MD5 (Content-MD5): a mismatch stages nothing. */
  expectedMd5?: Buffer;
}

export class Staging {
  private counter = 0;

  constructor(private readonly storage: Storage) {}

  /** Writes `body` to a scratch file of its own; nothing is left behind if it fails. */
  async stage(body: Body, opts: StageOptions = {}): Promise<StagedBody> {
    const name = `${SCRATCH_DIR}/stage-${process.pid}-${this.counter++}`;
    const check = new BodyCheck(opts.size, opts.expectedMd5);
    let file;
    try {
      file = await this.storage.create(name);
      const out = file;
      await writePieces(check.chunks(body), (buffers, position) => out.writev(buffers, position), 0);
      return { name, ...check.finish() };
    } catch (err) {
      if (!(body instanceof Uint8Array)) body.destroy();
      await this.storage.remove(name).catch(() => undefined);
      throw err;
    } finally {
      await file?.close();
    }
  }

  /** The bytes of staged bodies, one after the other. */
  stream(bodies: readonly StagedBody[]): Readable {
    const storage = this.storage;
    return Readable.from(
      (async function* () {
        for (const body of bodies) yield* storage.readStream(body.name);
      })(),
    );
  }

  /** Frees a staged body's space at once. */
  async discard(body: StagedBody): Promise<void> {
    await this.storage.remove(body.name);
  }
}
