/**
 * Decoder for `aws-chunked` request bodies (`x-amz-content-sha256: STREAMING-...`), and the
 * additional checksums (`x-amz-checksum-*`) that clients send as a header or as a trailer.
 *
 * Body framing:
 *   hex-size[;chunk-signature=sig]\r\n <size bytes> \r\n   (repeated)
 *   0[;chunk-signature=sig]\r\n
 *   [name:value\r\n ...]                                    trailers, e.g. x-amz-checksum-crc32
 *   \r\n
 *
 * The decoder streams: data bytes are passed on as slices of the incoming pieces, so it holds at
 * most one chunk header line (or trailer line) besides the piece being processed. A chunk's
 * signature can only be checked once all of its bytes have gone by, so a consumer must treat the
 * output as provisional until the stream ends without error (and discard it on error).
 */

import { createHash, type Hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import { s3Error } from './errors.js';
import {
  EMPTY_SHA256,
  chunkStringToSign,
  signHex,
  signaturesEqual,
  trailerStringToSign,
  type StreamingSignatureContext,
} from './auth/signature-v4.js';

// ---------------------------------------------------------------------------------------------
// Checksums

export type ChecksumAlgorithm = 'crc32' | 'crc32c' | 'sha1' | 'sha256' | 'crc64nvme';

export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = ['crc32', 'crc32c', 'sha1', 'sha256', 'crc64nvme'];

/** Size in bytes of each checksum (the header carries it base64-encoded). */
const CHECKSUM_BYTES: Record<ChecksumAlgorithm, number> = { crc32: 4, crc32c: 4, sha1: 20, sha256: 32, crc64nvme: 8 };

export function checksumHeaderName(algorithm: ChecksumAlgorithm): string {
  return `x-amz-checksum-${algorithm}`;
}

function algorithmOfHeader(name: string): ChecksumAlgorithm | undefined {
  const lower = name.toLowerCase();
  return CHECKSUM_ALGORITHMS.find((a) => checksumHeaderName(a) === lower);
}

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): Node has no built-in for it. */
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Continues a CRC-32C over `data` (start from 0), like zlib.crc32's second argument. */
export function crc32c(data: Uint8Array, previous = 0): number {
  let c = ~previous >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

function uint32Base64(value: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b.toString('base64');
}

/** An incremental checksum of one algorithm; digest() is the base64 form S3 uses. */
export class Checksum {
  readonly algorithm: ChecksumAlgorithm;
  private crc = 0;
  private hash: Hash | undefined;

  constructor(algorithm: ChecksumAlgorithm) {
    this.algorithm = algorithm;
    if (algorithm === 'sha1' || algorithm === 'sha256') this.hash = createHash(algorithm);
  }

  update(data: Uint8Array): void {
    switch (this.algorithm) {
      case 'crc32':
        this.crc = crc32(data, this.crc);
        break;
      case 'crc32c':
        this.crc = crc32c(data, this.crc);
        break;
      case 'sha1':
      case 'sha256':
        this.hash!.update(data);
        break;
      case 'crc64nvme':
        // Not computed: Node has no CRC-64/NVME, so such checksums are accepted unverified.
        break;
    }
  }

  /** Base64 digest; undefined for crc64nvme, which is not computed. */
  digest(): string | undefined {
    switch (this.algorithm) {
      case 'crc32':
      case 'crc32c':
        return uint32Base64(this.crc);
      case 'sha1':
      case 'sha256':
        return this.hash!.digest('base64');
      case 'crc64nvme':
        return undefined;
    }
  }
}

/** Checks that a checksum value is base64 of the right size; throws InvalidRequest. */
function checkChecksumValue(algorithm: ChecksumAlgorithm, value: string, where: 'header' | 'trailer'): void {
  const ok = /^[A-Za-z0-9+/]*={0,2}$/.test(value) && value.length % 4 === 0 && Buffer.from(value, 'base64').length === CHECKSUM_BYTES[algorithm];
  if (!ok) throw s3Error('InvalidRequest', `Value for ${checksumHeaderName(algorithm)} ${where} is invalid.`);
}

function mismatch(algorithm: ChecksumAlgorithm): Error {
  return s3Error('BadDigest', `The ${algorithm.toUpperCase()} you specified did not match the calculated checksum.`);
}

/**
 * Verifies a checksum given in advance: feed it the body with update(), then call verify(),
 * which throws BadDigest on a mismatch. For crc64nvme the value is only checked for form.
 */
export class ChecksumVerifier {
  readonly algorithm: ChecksumAlgorithm;
  /** The header name, e.g. x-amz-checksum-crc32. */
  readonly header: string;
  /** The expected value, base64. */
  readonly expected: string;
  private readonly checksum: Checksum;

  constructor(algorithm: ChecksumAlgorithm, expected: string) {
    checkChecksumValue(algorithm, expected, 'header');
    this.algorithm = algorithm;
    this.header = checksumHeaderName(algorithm);
    this.expected = expected;
    this.checksum = new Checksum(algorithm);
  }

  update(data: Uint8Array): void {
    this.checksum.update(data);
  }

  /** Throws BadDigest when the body does not match; returns the (expected) value otherwise. */
  verify(): string {
    const actual = this.checksum.digest();
    if (actual !== undefined && actual !== this.expected) throw mismatch(this.algorithm);
    return this.expected;
  }
}

/**
 * The verifier for the `x-amz-checksum-<algorithm>` request header, if there is one. Throws
 * InvalidRequest when there are several, or the value is not a well-formed checksum.
 */
export function createChecksumVerifier(headers: IncomingHttpHeaders): ChecksumVerifier | undefined {
  const found: Array<[ChecksumAlgorithm, string]> = [];
  for (const [name, value] of Object.entries(headers)) {
    const algorithm = algorithmOfHeader(name);
    if (algorithm === undefined || value === undefined) continue;
    found.push([algorithm, Array.isArray(value) ? value.join(',') : value]);
  }
  if (found.length === 0) return undefined;
  if (found.length > 1) throw s3Error('InvalidRequest', 'Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.');
  const [algorithm, value] = found[0]!;
  return new ChecksumVerifier(algorithm, value.trim());
}

// ---------------------------------------------------------------------------------------------
// aws-chunked

export interface AwsChunkedDecoderOptions {
  /** Verify each chunk's `chunk-signature` (and the trailer signature) with this context. */
  signature?: StreamingSignatureContext;
  /** Trailers are expected after the final chunk (x-amz-content-sha256 ends in -TRAILER). */
  trailers?: boolean;
  /**
   * The x-amz-trailer header: the checksum trailer the body ends with (x-amz-checksum-crc32,
   * ...). The checksum is computed over the decoded data and checked against the trailer.
   */
  declaredTrailer?: string;
  /** x-amz-decoded-content-length: the decoded size must be exactly this. */
  decodedContentLength?: number;
}

/** The content-sha256 values announcing an aws-chunked body. */
export function isAwsChunked(headers: IncomingHttpHeaders): boolean {
  const sha = headers['x-amz-content-sha256'];
  return typeof sha === 'string' && sha.startsWith('STREAMING-');
}

/**
 * Decoder options from the request headers (x-amz-content-sha256, x-amz-trailer,
 * x-amz-decoded-content-length) and, for signed chunks, the context from authenticate().
 */
export function awsChunkedOptions(headers: IncomingHttpHeaders, signature?: StreamingSignatureContext): AwsChunkedDecoderOptions {
  const sha = headers['x-amz-content-sha256'];
  const trailers = typeof sha === 'string' && sha.startsWith('STREAMING-') && sha.endsWith('-TRAILER');
  const options: AwsChunkedDecoderOptions = { trailers };
  if (signature) options.signature = signature;
  const declared = headers['x-amz-trailer'];
  if (trailers && typeof declared === 'string' && declared.trim() !== '') options.declaredTrailer = declared.trim().toLowerCase();
  const decoded = headers['x-amz-decoded-content-length'];
  if (typeof decoded === 'string') {
    if (!/^\d+$/.test(decoded.trim())) throw s3Error('InvalidArgument', 'x-amz-decoded-content-length is not a number', { ArgumentName: 'x-amz-decoded-content-length', ArgumentValue: decoded });
    options.decodedContentLength = Number(decoded.trim());
  }
  return options;
}

/** Longest chunk header (the size line with its extensions) or trailer line accepted, CRLF included. */
export const MAX_CHUNKED_LINE = 4096;
/** Most trailer lines accepted (S3 sends one checksum and its signature). */
export const MAX_TRAILER_LINES = 16;
/** Largest trailer section (every trailer line, CRLFs included, and the closing empty line). */
export const MAX_TRAILER_BYTES = 16 * 1024;

type State = 'header' | 'data' | 'data-cr' | 'data-lf' | 'trailer' | 'done';

function malformed(detail: string): Error {
  return s3Error('InvalidArgument', `Malformed aws-chunked body: ${detail}`);
}

export class AwsChunkedDecoder extends Transform {
  /** Decoded bytes passed on so far. */
  decodedLength = 0;
  /** Trailing headers received (names lowercased), without x-amz-trailer-signature; complete once the stream has ended. */
  readonly trailers: Record<string, string> = {};

  private readonly ctx: StreamingSignatureContext | undefined;
  private readonly expectTrailers: boolean;
  private readonly declaredTrailer: string | undefined;
  private readonly decodedContentLength: number | undefined;
  private readonly trailerChecksum: Checksum | undefined;

  private state: State = 'header';
  private readonly line = Buffer.alloc(MAX_CHUNKED_LINE);
  private lineLength = 0;
  private remaining = 0;
  private chunkHash: Hash | undefined;
  private chunkSignature: string | undefined;
  private previousSignature: string;
  private canonicalTrailers = '';
  private trailerSignature: string | undefined;
  private trailerLines = 0;
  private trailerBytes = 0;

  constructor(options: AwsChunkedDecoderOptions = {}) {
    super();
    this.ctx = options.signature;
    this.previousSignature = options.signature?.seedSignature ?? '';
    this.expectTrailers = options.trailers ?? false;
    this.decodedContentLength = options.decodedContentLength;
    const declared = options.declaredTrailer?.trim().toLowerCase();
    if (declared) {
      const algorithm = algorithmOfHeader(declared);
      if (algorithm === undefined) throw s3Error('InvalidArgument', `Unsupported trailing header: ${declared}`, { ArgumentName: 'x-amz-trailer', ArgumentValue: declared });
      this.declaredTrailer = declared;
      this.trailerChecksum = new Checksum(algorithm);
    }
  }

  override _transform(piece: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.consume(piece);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.state === 'trailer' && this.lineLength === 0 && this.trailerLines === 0 && !this.expectTrailers) {
        // `0\r\n` without the closing empty line: tolerated when no trailers are expected.
        this.finish();
      }
      if (this.state !== 'done') throw s3Error('IncompleteBody', 'The aws-chunked body ended before its final chunk.');
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consume(piece: Buffer): void {
    let i = 0;
    while (i < piece.length) {
      switch (this.state) {
        case 'header':
        case 'trailer': {
          const nl = piece.indexOf(0x0a, i);
          const end = nl < 0 ? piece.length : nl;
          // The LF counts too: a line is at most MAX_CHUNKED_LINE bytes as sent.
          if (this.lineLength + (end - i) + 1 > MAX_CHUNKED_LINE) {
            throw malformed(`${this.state === 'header' ? 'chunk size line' : 'trailer line'} longer than ${MAX_CHUNKED_LINE} bytes`);
          }
          if (this.state === 'trailer' && (this.trailerBytes += end - i + (nl < 0 ? 0 : 1)) > MAX_TRAILER_BYTES) {
            throw malformed(`trailers longer than ${MAX_TRAILER_BYTES} bytes`);
          }
          piece.copy(this.line, this.lineLength, i, end);
          this.lineLength += end - i;
          if (nl < 0) return;
          i = nl + 1;
          if (this.lineLength === 0 || this.line[this.lineLength - 1] !== 0x0d) throw malformed('line not terminated by CRLF');
          const text = this.line.toString('latin1', 0, this.lineLength - 1);
          this.lineLength = 0;
          if (this.state === 'header') this.chunkHeader(text);
          else this.trailerLine(text);
          break;
        }
        case 'data': {
          const n = Math.min(this.remaining, piece.length - i);
          const data = piece.subarray(i, i + n);
          i += n;
          this.remaining -= n;
          this.decodedLength += n;
          if (this.decodedContentLength !== undefined && this.decodedLength > this.decodedContentLength) {
            throw s3Error('IncompleteBody', 'The aws-chunked body holds more data than x-amz-decoded-content-length.');
          }
          this.chunkHash?.update(data);
          this.trailerChecksum?.update(data);
          this.push(data);
          if (this.remaining === 0) {
            this.verifyChunk(this.chunkHash?.digest('hex'));
            this.state = 'data-cr';
          }
          break;
        }
        case 'data-cr':
          if (piece[i++] !== 0x0d) throw malformed('chunk data not followed by CRLF');
          this.state = 'data-lf';
          break;
        case 'data-lf':
          if (piece[i++] !== 0x0a) throw malformed('chunk data not followed by CRLF');
          this.state = 'header';
          break;
        case 'done':
          throw malformed('data after the end of the body');
      }
    }
  }

  private chunkHeader(text: string): void {
    const semi = text.indexOf(';');
    const sizeText = (semi < 0 ? text : text.slice(0, semi)).trim();
    if (!/^[0-9a-fA-F]{1,13}$/.test(sizeText)) throw malformed(`bad chunk size "${sizeText.slice(0, 32)}"`);
    const size = parseInt(sizeText, 16);
    let signature: string | undefined;
    if (semi >= 0) {
      for (const ext of text.slice(semi + 1).split(';')) {
        const eq = ext.indexOf('=');
        const name = (eq < 0 ? ext : ext.slice(0, eq)).trim();
        if (name === 'chunk-signature') signature = eq < 0 ? '' : ext.slice(eq + 1).trim();
      }
    }
    if (this.ctx && signature === undefined) throw s3Error('SignatureDoesNotMatch', 'A chunk of the aws-chunked body is missing its chunk-signature.');
    this.chunkSignature = signature;
    if (size === 0) {
      this.verifyChunk(EMPTY_SHA256);
      this.state = 'trailer';
      return;
    }
    this.remaining = size;
    this.chunkHash = this.ctx ? createHash('sha256') : undefined;
    this.state = 'data';
  }

  /** Checks the signature of the chunk just read (its data's SHA-256 in hex). */
  private verifyChunk(dataSha256: string | undefined): void {
    if (!this.ctx) return;
    const sts = chunkStringToSign(this.ctx, this.previousSignature, dataSha256 ?? EMPTY_SHA256);
    const expected = signHex(this.ctx.signingKey, sts);
    if (!signaturesEqual(expected, this.chunkSignature ?? '')) {
      throw s3Error('SignatureDoesNotMatch', 'The chunk signature we calculated does not match the signature you provided.', {
        StringToSign: sts,
        SignatureProvided: this.chunkSignature ?? '',
      });
    }
    this.previousSignature = expected;
  }

  private trailerLine(text: string): void {
    if (text === '') {
      this.finish();
      return;
    }
    const colon = text.indexOf(':');
    if (colon <= 0) throw malformed('bad trailer line');
    const name = text.slice(0, colon).trim().toLowerCase();
    const value = text.slice(colon + 1).trim();
    if (++this.trailerLines > MAX_TRAILER_LINES) throw malformed(`more than ${MAX_TRAILER_LINES} trailer lines`);
    if (name === 'x-amz-trailer-signature') {
      this.trailerSignature = value;
      return;
    }
    if (this.trailerSignature !== undefined) throw malformed('trailer after x-amz-trailer-signature');
    this.trailers[name] = value;
    this.canonicalTrailers += `${name}:${value}\n`;
  }

  private finish(): void {
    if (this.ctx && this.expectTrailers) {
      if (this.trailerSignature === undefined) throw s3Error('SignatureDoesNotMatch', 'The aws-chunked body is missing x-amz-trailer-signature.');
      const sts = trailerStringToSign(this.ctx, this.previousSignature, this.canonicalTrailers);
      const expected = signHex(this.ctx.signingKey, sts);
      if (!signaturesEqual(expected, this.trailerSignature)) {
        throw s3Error('SignatureDoesNotMatch', 'The trailer signature we calculated does not match the signature you provided.', {
          StringToSign: sts,
          SignatureProvided: this.trailerSignature,
        });
      }
    }
    for (const name of Object.keys(this.trailers)) {
      const algorithm = algorithmOfHeader(name);
      if (algorithm !== undefined && name !== this.declaredTrailer) {
        throw s3Error('InvalidRequest', `The trailing header ${name} was not declared in x-amz-trailer.`);
      }
    }
    if (this.declaredTrailer !== undefined) {
      const value = this.trailers[this.declaredTrailer];
      if (value === undefined) throw s3Error('IncompleteBody', `The aws-chunked body is missing the declared trailer ${this.declaredTrailer}.`);
      const algorithm = this.trailerChecksum!.algorithm;
      checkChecksumValue(algorithm, value, 'trailer');
      const actual = this.trailerChecksum!.digest();
      if (actual !== undefined && actual !== value) throw mismatch(algorithm);
    }
    if (this.decodedContentLength !== undefined && this.decodedLength !== this.decodedContentLength) {
      throw s3Error('IncompleteBody', 'The decoded size of the aws-chunked body differs from x-amz-decoded-content-length.');
    }
    this.state = 'done';
  }
}
