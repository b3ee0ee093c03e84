/**
 * AWS Signature Version 4 for S3: the Authorization-header form and the presigned-URL
 * (query-string) form, plus the pieces needed to check the per-chunk signatures of a
 * `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body.
 *
 * Canonical request (S3 flavour):
 *   METHOD \n canonical-uri \n canonical-query \n canonical-headers \n \n signed-headers \n payload-hash
 * S3 does not double-encode the path: the canonical URI is the URI-encoding of the decoded path,
 * which for well-behaved clients is exactly the path they put on the request line.
 */

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export const V4_ALGORITHM = 'AWS4-HMAC-SHA256';
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';
/** SHA-256 of the empty string, hex. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/**
 * What a verifier of `aws-chunked` chunk signatures needs: every chunk is signed with the same
 * key, timestamp and scope as the request, chaining from the request's own signature (the seed).
 */
export interface StreamingSignatureContext {
  signingKey: Buffer;
  /** The request signature (from the Authorization header): "previous signature" of chunk 1. */
  seedSignature: string;
  /** x-amz-date of the request, `YYYYMMDDTHHMMSSZ`. */
  timestamp: string;
  /** Credential scope, `YYYYMMDD/region/s3/aws4_request`. */
  scope: string;
}

/** The credential part of a V4 signature: `AK/YYYYMMDD/region/service/aws4_request`. */
export interface V4Credential {
  accessKey: string;
  date: string;
  region: string;
  service: string;
  terminator: string;
  /** date/region/service/terminator */
  scope: string;
}

export interface V4AuthorizationHeader {
  credential: V4Credential;
  signedHeaders: string[];
  signature: string;
}

export class V4ParseError extends Error {}

// ---------------------------------------------------------------------------------------------
// Encoding

const HEX = '0123456789ABCDEF';

function isUnreserved(b: number): boolean {
  return (
    (b >= 0x41 && b <= 0x5a) || // A-Z
    (b >= 0x61 && b <= 0x7a) || // a-z
    (b >= 0x30 && b <= 0x39) || // 0-9
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e // - . _ ~
  );
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Percent-decodes to raw bytes. Works on bytes so that escapes which are not valid UTF-8 survive
 * a decode/encode round trip unchanged; a '%' not followed by two hex digits is kept literally.
 * '+' is a literal plus (RFC 3986), as the AWS SDKs encode a space as %20.
 */
export function percentDecodeBytes(s: string): Buffer {
  const src = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(src.length);
  let n = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x25 && i + 2 < src.length) {
      const hi = hexValue(src[i + 1]!);
      const lo = hexValue(src[i + 2]!);
      if (hi >= 0 && lo >= 0) {
        out[n++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    out[n++] = c;
  }
  return out.subarray(0, n);
}

/** AWS UriEncode of raw bytes: unreserved characters kept, '/' kept unless encodeSlash, the rest %XX. */
export function uriEncodeBytes(bytes: Uint8Array, encodeSlash: boolean): string {
  let out = '';
  for (const b of bytes) {
    if (isUnreserved(b) || (b === 0x2f && !encodeSlash)) out += String.fromCharCode(b);
    else out += '%' + HEX[b >> 4] + HEX[b & 15];
  }
  return out;
}

/** AWS UriEncode of a (decoded) string, UTF-8. */
export function uriEncode(s: string, encodeSlash = true): string {
  return uriEncodeBytes(Buffer.from(s, 'utf8'), encodeSlash);
}

/**
 * Canonical URI from the raw (still percent-encoded) path of the request line: each segment is
 * decoded and re-encoded with AWS's rules, so `%7E`, `~` and `%7e` all give `~`, and `!` or `%21`
 * both give `%21`. An encoded slash (%2F) inside a segment stays encoded.
 */
export function canonicalUri(rawPath: string): string {
  if (rawPath === '') return '/';
  return rawPath
    .split('/')
    .map((seg) => uriEncodeBytes(percentDecodeBytes(seg), true))
    .join('/');
}

/** Splits a raw query string into [name, value] pairs, percent-decoded ('+' stays '+'). */
export function parseRawQuery(rawQuery: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  if (rawQuery === '') return pairs;
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    pairs.push([percentDecodeBytes(name).toString('utf8'), percentDecodeBytes(value).toString('utf8')]);
  }
  return pairs;
}

/**
 * Canonical query string: every parameter (name and value) UriEncoded with '/' encoded, sorted
 * by encoded name then encoded value, joined as `a=1&b=`. `exclude` names are left out (the
 * presigned form leaves out X-Amz-Signature).
 */
export function canonicalQuery(rawQuery: string, exclude?: string): string {
  const items: Array<[string, string]> = [];
  if (rawQuery !== '') {
    for (const part of rawQuery.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const rawName = eq < 0 ? part : part.slice(0, eq);
      const rawValue = eq < 0 ? '' : part.slice(eq + 1);
      const nameBytes = percentDecodeBytes(rawName);
      if (exclude !== undefined && nameBytes.toString('utf8') === exclude) continue;
      items.push([uriEncodeBytes(nameBytes, true), uriEncodeBytes(percentDecodeBytes(rawValue), true)]);
    }
  }
  // Plain code-unit comparison: the encoded strings are ASCII, so this is byte order.
  items.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return items.map(([n, v]) => `${n}=${v}`).join('&');
}

/** A header's value for signing: repeated values joined by ',', each trimmed, inner whitespace runs collapsed. */
export function canonicalHeaderValue(value: string | string[] | undefined): string {
  if (value === undefined) return '';
  const values = Array.isArray(value) ? value : [value];
  return values.map((v) => v.trim().replace(/\s+/g, ' ')).join(',');
}

export function canonicalHeaders(headers: IncomingHttpHeaders, signedHeaders: readonly string[]): string {
  let out = '';
  for (const name of signedHeaders) out += `${name}:${canonicalHeaderValue(headers[name])}\n`;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Hashing and signing

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(typeof data === 'string' ? signableBytes(data) : data).digest('hex');
}

/**
 * The bytes a client signed for a string built from request parts. Node decodes header bytes as
 * latin1, so a string whose characters all fit in a byte is turned back into those bytes (a UTF-8
 * header value arrives as its bytes, one character each, and must not be encoded twice); a string
 * holding wider characters can only have come from code, and is taken as UTF-8.
 */
export function signableBytes(s: string): Buffer {
  return /[^\u0000-\u00ff]/.test(s) ? Buffer.from(s, 'utf8') : Buffer.from(s, 'latin1');
}

function hmac(key: Uint8Array | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}


/** kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
export function deriveSigningKey(secretKey: string, date: string, region: string, service: string): Buffer {
  const kDate = hmac('AWS4' + secretKey, date);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, 'aws4_request');
}

export function signHex(signingKey: Uint8Array, stringToSign: string): string {
  return createHmac('sha256', signingKey).update(signableBytes(stringToSign)).digest('hex');
}

export interface CanonicalRequestInput {
  method: string;
  /** Raw path as on the request line, without the query. */
  rawPath: string;
  /** Raw query (after '?'), may be ''. */
  rawQuery: string;
  headers: IncomingHttpHeaders;
  signedHeaders: readonly string[];
  payloadHash: string;
  /** Query parameter left out of the canonical query (X-Amz-Signature for presigned URLs). */
  excludeQueryParam?: string;
  /** Use the path exactly as received instead of the decoded and re-encoded one. */
  literalPath?: boolean;
}

export function canonicalRequest(input: CanonicalRequestInput): string {
  const uri = input.literalPath ? input.rawPath || '/' : canonicalUri(input.rawPath);
  return [
    input.method.toUpperCase(),
    uri,
    canonicalQuery(input.rawQuery, input.excludeQueryParam),
    canonicalHeaders(input.headers, input.signedHeaders),
    input.signedHeaders.join(';'),
    input.payloadHash,
  ].join('\n');
}

export function stringToSign(timestamp: string, scope: string, canonicalRequestText: string): string {
  return `${V4_ALGORITHM}\n${timestamp}\n${scope}\n${sha256Hex(canonicalRequestText)}`;
}

/** String to sign of one aws-chunked chunk. */
export function chunkStringToSign(ctx: Omit<StreamingSignatureContext, 'signingKey'>, previousSignature: string, chunkSha256Hex: string): string {
  return `AWS4-HMAC-SHA256-PAYLOAD\n${ctx.timestamp}\n${ctx.scope}\n${previousSignature}\n${EMPTY_SHA256}\n${chunkSha256Hex}`;
}

/** String to sign of the trailer section of a signed aws-chunked body. */
export function trailerStringToSign(ctx: Omit<StreamingSignatureContext, 'signingKey'>, previousSignature: string, canonicalTrailers: string): string {
  return `AWS4-HMAC-SHA256-TRAILER\n${ctx.timestamp}\n${ctx.scope}\n${previousSignature}\n${sha256Hex(canonicalTrailers)}`;
}

/** Constant-time comparison of two signature strings. */
export function signaturesEqual(expected: string, provided: string): boolean {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(provided, 'utf8');
  if (a.length !== b.length) {
    // Still spend the time of a comparison so the length is the only thing that leaks.
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** Parses `AK/YYYYMMDD/region/service/aws4_request`; the access key may itself hold '/'. */
export function parseCredential(value: string): V4Credential {
  const parts = value.split('/');
  if (parts.length < 5) throw new V4ParseError(`the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  const terminator = parts.pop()!;
  const service = parts.pop()!;
  const region = parts.pop()!;
  const date = parts.pop()!;
  const accessKey = parts.join('/');
  if (accessKey === '' || !/^\d{8}$/.test(date) || region === '') {
    throw new V4ParseError(`the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  }
  if (terminator !== 'aws4_request') throw new V4ParseError(`the Credential has an invalid terminal: expecting "aws4_request", got "${terminator}"`);
  if (service !== 's3') throw new V4ParseError(`the Credential has an invalid service: expecting "s3", got "${service}"`);
  return { accessKey, date, region, service, terminator, scope: `${date}/${region}/${service}/${terminator}` };
}

/** Parses and checks the names of a SignedHeaders list (`host;x-amz-date`). */
export function parseSignedHeaders(value: string): string[] {
  const names = value.split(';');
  for (const n of names) {
    if (n === '' || n !== n.toLowerCase() || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(n)) {
      throw new V4ParseError(`SignedHeaders is mal-formed: "${value}"`);
    }
  }
  return names;
}

/**
 * Parses `AWS4-HMAC-SHA256 Credential=AK/date/region/s3/aws4_request, SignedHeaders=a;b,
 * Signature=hex` (the commas may or may not be followed by spaces).
 */
export function parseV4Authorization(header: string): V4AuthorizationHeader {
  const trimmed = header.trim();
  if (!trimmed.startsWith(V4_ALGORITHM + ' ')) throw new V4ParseError(`the authorization header does not start with ${V4_ALGORITHM}`);
  const fields = new Map<string, string>();
  for (const part of trimmed.slice(V4_ALGORITHM.length + 1).split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new V4ParseError(`the authorization header component "${p}" is mal-formed`);
    const key = p.slice(0, eq).trim();
    if (fields.has(key)) throw new V4ParseError(`the authorization header repeats ${key}`);
    fields.set(key, p.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined) throw new V4ParseError('the authorization header is missing Credential');
  if (signedHeaders === undefined) throw new V4ParseError('the authorization header is missing SignedHeaders');
  if (signature === undefined) throw new V4ParseError('the authorization header is missing Signature');
  if (!/^[0-9a-f]{64}$/.test(signature)) throw new V4ParseError('the authorization header has a mal-formed Signature');
  return { credential: parseCredential(credential), signedHeaders: parseSignedHeaders(signedHeaders), signature };
}

/** Parses a V4 timestamp `YYYYMMDDTHHMMSSZ`; undefined when malformed. */
export function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, s);
  const date = new Date(t);
  // Reject out-of-range fields (Date.UTC would silently roll them over).
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || date.getUTCHours() !== h || date.getUTCMinutes() !== mi || date.getUTCSeconds() !== s) {
    return undefined;
  }
  return date;
}

/** Formats a date as a V4 timestamp `YYYYMMDDTHHMMSSZ`. */
export function formatAmzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}
