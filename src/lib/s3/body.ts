/**
 * Request bodies in every framing clients use: Content-Length, chunked transfer encoding (both
 * undone by node:http) and aws-chunked (the SDKs' streaming uploads, decoded here). The body
 * is checked on the way through against what the request announced: x-amz-content-sha256 when
 * it is a hash, an x-amz-checksum-* header or trailer. A mismatch fails the stream, and the
 * store then records nothing.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, pipeline, type Readable } from 'node:stream';
import type { RequestContext } from './context.js';
import { header } from './context.js';
import { s3Error } from './errors.js';
import {
  AwsChunkedDecoder,
  awsChunkedOptions,
  createChecksumVerifier,
  isAwsChunked,
  type ChecksumVerifier,
} from './aws-chunked.js';

export interface RequestBody {
  stream: Readable;
  /** Size of the decoded body when announced; undefined for a chunked body without one. */
  size: number | undefined;
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/** The announced Content-Length, or undefined; a malformed one is an error. */
export function contentLength(ctx: RequestContext): number | undefined {
  const value = header(ctx, 'content-length');
  if (value === undefined) return undefined;
  if (!/^\d{1,16}$/.test(value)) throw s3Error('InvalidArgument', 'Content-Length is not a number.');
  return Number(value);
}

/** Lets a client that sent `Expect: 100-continue` send its body. */
export function acceptBody(ctx: RequestContext): void {
  if (ctx.expectsContinue) {
    ctx.expectsContinue = false;
    ctx.res.writeContinue();
  }
}

/** Opens the body of an upload, with its framing undone and its integrity checks in place. */
export function openRequestBody(ctx: RequestContext): RequestBody {
  const { req } = ctx;
  const chunked = isAwsChunked(req.headers);
  let size: number | undefined;
  const stages: NodeJS.ReadWriteStream[] = [];
  if (chunked) {
    const options = awsChunkedOptions(req.headers, ctx.auth.kind === 'v4' ? ctx.auth.streaming : undefined);
    if (options.decodedContentLength === undefined) throw s3Error('MissingContentLength', 'x-amz-decoded-content-length is required for aws-chunked bodies.');
    size = options.decodedContentLength;
    stages.push(new AwsChunkedDecoder(options));
  } else {
    size = contentLength(ctx);
    if (size === undefined && header(ctx, 'transfer-encoding') === undefined) throw s3Error('MissingContentLength');
  }
  const sha = header(ctx, 'x-amz-content-sha256');
  const verifier = createChecksumVerifier(req.headers);
  const check = new BodyCheck(sha && HEX_SHA256.test(sha) ? sha : undefined, verifier);
  if (check.active) stages.push(check);
  acceptBody(ctx);
  if (stages.length === 0) return { stream: req, size };
  const stream = (pipeline as (...s: unknown[]) => Readable)(req, ...stages, () => undefined);
  return { stream, size };
}

/** Reads a small body (an XML request) whole; larger than `limit` is refused. */
export async function readSmallBody(ctx: RequestContext, limit: number): Promise<Buffer> {
  const announced = contentLength(ctx);
  if (announced !== undefined && announced > limit) throw s3Error('InvalidRequest', `The request body is larger than ${limit} bytes.`);
  const { stream } = openRequestBody(ctx);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      stream.destroy();
      throw s3Error('InvalidRequest', `The request body is larger than ${limit} bytes.`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Checks the decoded body against a signed SHA-256 and/or an x-amz-checksum-* header. */
class BodyCheck extends Transform {
  private readonly sha: Hash | undefined;

  constructor(
    private readonly expectedSha256: string | undefined,
    private readonly verifier: ChecksumVerifier | undefined,
  ) {
    super();
    this.sha = expectedSha256 ? createHash('sha256') : undefined;
  }

  get active(): boolean {
    return this.sha !== undefined || this.verifier !== undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null, data?: Buffer) => void): void {
    this.sha?.update(chunk);
    this.verifier?.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: (err?: Error | null) => void): void {
    try {
      if (this.sha && this.sha.digest('hex') !== this.expectedSha256) throw s3Error('XAmzContentSHA256Mismatch');
      this.verifier?.verify();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}
