/**
 * Request authentication for the S3 layer: recognises the four ways a request can be signed
 * (V2 header, V2 query string, V4 header, V4 presigned URL), checks the signature against the
 * configured credentials and reports what the caller still has to check on the body:
 *
 * - `v4` with a hex payloadHash: the SHA-256 of the body must equal it
 *   (XAmzContentSHA256Mismatch otherwise);
 * - `v4` with a `STREAMING-...` payloadHash: the body is aws-chunked; decode it with
 *   `new AwsChunkedDecoder(awsChunkedOptions(headers, result.streaming))` (aws-chunked.ts), which
 *   checks the chunk signatures when `streaming` is set. An anonymous server still has to decode
 *   such bodies (without a context), see `isAwsChunked`.
 *
 * It takes the request target as parseRequestTarget (request-target.ts) parsed it, the very
 * result the router then acts on: the signature is checked over exactly the path and query that
 * are served, with the query parameters decoded once ('+' a literal plus, RFC 3986, as the AWS
 * SDKs encode a space as %20).
 */

import type { IncomingHttpHeaders } from 'node:http';
import { s3Error } from '../errors.js';
import type { RequestTarget } from '../request-target.js';
import { V2ParseError, parseV2Authorization, signV2, stringToSignV2 } from './signature-v2.js';
import {
  STREAMING_SIGNED,
  STREAMING_SIGNED_TRAILER,
  STREAMING_UNSIGNED_TRAILER,
  UNSIGNED_PAYLOAD,
  V4ParseError,
  V4_ALGORITHM,
  canonicalRequest,
  canonicalUri,
  deriveSigningKey,
  formatAmzDate,
  parseAmzDate,
  parseCredential,
  parseSignedHeaders,
  parseV4Authorization,
  signHex,
  signaturesEqual,
  stringToSign,
  type StreamingSignatureContext,
  type V4AuthorizationHeader,
  type V4Credential,
} from './signature-v4.js';

export type { StreamingSignatureContext } from './signature-v4.js';

export interface Credentials {
  accessKey: string;
  secretKey: string;
}

export interface AuthInput {
  method: string;
  /** The request target, parsed once by parseRequestTarget for authentication and routing alike. */
  target: RequestTarget;
  headers: IncomingHttpHeaders;
}

export interface AuthOptions {
  now?: Date;
  /** Skip the clock-skew and expiry checks (used by tests replaying recorded requests). */
  skipClockCheck?: boolean;
  /**
   * For a virtual-hosted-style request (bucket in the Host name): the bucket. V2 signs the
   * resource as `/bucket/key` whatever the style, so the verifier needs to put it back.
   */
  virtualHostBucket?: string;
}

export type AuthResult =
  /** No credentials configured: everything is accepted, signed requests too, without checking. */
  | { kind: 'anonymous' }
  | { kind: 'v2' }
  /**
   * payloadHash is x-amz-content-sha256: a hex SHA-256 the caller must check against the body,
   * 'UNSIGNED-PAYLOAD', or one of the 'STREAMING-...' values (aws-chunked body). `streaming` is
   * set for the signed streaming forms, to verify the chunk signatures.
   */
  | { kind: 'v4'; payloadHash: string; streaming?: StreamingSignatureContext }
  /** payloadHash is set only when the URL signed a hex X-Amz-Content-Sha256 (otherwise unsigned payload). */
  | { kind: 'v4-presigned'; payloadHash?: string };

/** Largest accepted difference between the request's time and ours. */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
/** Longest validity of a V4 presigned URL (seven days). */
export const MAX_PRESIGNED_EXPIRES_S = 7 * 24 * 3600;

const VALID_PAYLOAD_HASH = /^[0-9a-f]{64}$/;
const STREAMING_VALUES = new Set([STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER]);

function single(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value[0] : value;
}

function checkSkew(requestTime: Date, opts: AuthOptions): void {
  if (opts.skipClockCheck) return;
  const now = opts.now ?? new Date();
  if (Math.abs(now.getTime() - requestTime.getTime()) > MAX_CLOCK_SKEW_MS) {
    throw s3Error('RequestTimeTooSkewed', undefined, {
      RequestTime: requestTime.toISOString(),
      ServerTime: now.toISOString(),
      MaxAllowedSkewMilliseconds: String(MAX_CLOCK_SKEW_MS),
    });
  }
}

function checkAccessKey(provided: string, creds: Credentials): void {
  if (provided !== creds.accessKey) throw s3Error('InvalidAccessKeyId', undefined, { AWSAccessKeyId: provided });
}

const NO_DATE = 'AWS authentication requires a valid Date or x-amz-date header';

export function authenticate(input: AuthInput, creds: Credentials | undefined, opts: AuthOptions = {}): AuthResult {
  if (creds === undefined) return { kind: 'anonymous' };

  const { rawPath, rawQuery } = input.target;
  const params = input.target.query;
  const query = (name: string): string | undefined => params.get(name) ?? undefined;
  const authorization = single(input.headers['authorization']);

  const hasHeader = authorization !== undefined;
  const hasV4Query = params.has('X-Amz-Algorithm');
  const hasV2Query = params.has('Signature') || params.has('AWSAccessKeyId');
  if (Number(hasHeader) + Number(hasV4Query) + Number(hasV2Query) > 1) {
    throw s3Error(
      'InvalidArgument',
      'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified',
      { ArgumentName: 'Authorization', ArgumentValue: authorization ?? '' },
    );
  }

  const ctx: RequestParts = { method: input.method, rawPath, rawQuery, headers: input.headers, query };
  if (hasHeader) {
    const a = authorization.trimStart();
    if (a.startsWith(V4_ALGORITHM + ' ')) return verifyV4Header(ctx, authorization, creds, opts);
    if (a.startsWith('AWS ')) return verifyV2Header(ctx, authorization, creds, opts);
    throw s3Error('InvalidArgument', 'Unsupported Authorization Type', { ArgumentName: 'Authorization', ArgumentValue: authorization });
  }
  if (hasV4Query) return verifyV4Presigned(ctx, creds, opts);
  if (hasV2Query) return verifyV2Query(ctx, creds, opts);
  throw s3Error('AccessDenied');
}

interface RequestParts {
  method: string;
  rawPath: string;
  rawQuery: string;
  headers: IncomingHttpHeaders;
  /** A decoded query parameter (the first value of that name), from the one parsed target. */
  query: (name: string) => string | undefined;
}

// ---------------------------------------------------------------------------------------------
// V2

/**
 * Paths a V2 signature may have been computed over: as received, then AWS-encoded if different.
 * A path-style request for the bucket itself (`/bucket`) is also tried as `/bucket/`, the
 * resource S3 names for a bucket and what botocore signs for ListObjects.
 */
function v2PathCandidates(rawPath: string, pathStyle: boolean): string[] {
  const candidates = [rawPath];
  const normalised = canonicalUri(rawPath);
  if (normalised !== rawPath) candidates.push(normalised);
  if (pathStyle && /^\/[^/]+$/.test(rawPath)) candidates.push(`${rawPath}/`);
  return candidates;
}

function verifyV2(parts: RequestParts, secretKey: string, accessKey: string, provided: string, opts: AuthOptions, expires?: string): void {
  const pathPrefix = opts.virtualHostBucket ? '/' + opts.virtualHostBucket : '';
  let first: string | undefined;
  for (const path of v2PathCandidates(parts.rawPath, pathPrefix === '')) {
    const sts = stringToSignV2({ method: parts.method, rawPath: path, rawQuery: parts.rawQuery, headers: parts.headers, expires, pathPrefix });
    first ??= sts;
    if (signaturesEqual(signV2(secretKey, sts), provided)) return;
  }
  throw s3Error('SignatureDoesNotMatch', undefined, { AWSAccessKeyId: accessKey, StringToSign: first!, SignatureProvided: provided });
}

function verifyV2Header(parts: RequestParts, authorization: string, creds: Credentials, opts: AuthOptions): AuthResult {
  let parsed: { accessKey: string; signature: string };
  try {
    parsed = parseV2Authorization(authorization);
  } catch (err) {
    if (err instanceof V2ParseError) throw s3Error('InvalidArgument', err.message, { ArgumentName: 'Authorization', ArgumentValue: authorization });
    throw err;
  }
  checkAccessKey(parsed.accessKey, creds);
  const dateText = single(parts.headers['x-amz-date']) ?? single(parts.headers['date']);
  const time = dateText === undefined ? NaN : Date.parse(dateText);
  if (Number.isNaN(time)) throw s3Error('AccessDenied', NO_DATE);
  checkSkew(new Date(time), opts);
  verifyV2(parts, creds.secretKey, parsed.accessKey, parsed.signature, opts);
  return { kind: 'v2' };
}

function verifyV2Query(parts: RequestParts, creds: Credentials, opts: AuthOptions): AuthResult {
  const accessKey = parts.query('AWSAccessKeyId');
  const signature = parts.query('Signature');
  const expires = parts.query('Expires');
  if (accessKey === undefined || signature === undefined || expires === undefined) {
    throw s3Error('AccessDenied', 'Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters');
  }
  if (!/^\d+$/.test(expires)) throw s3Error('AccessDenied', `Invalid date (should be seconds since epoch): ${expires}`);
  checkAccessKey(accessKey, creds);
  if (!opts.skipClockCheck) {
    const now = opts.now ?? new Date();
    if (now.getTime() > Number(expires) * 1000) {
      throw s3Error('AccessDenied', 'Request has expired', { Expires: new Date(Number(expires) * 1000).toISOString(), ServerTime: now.toISOString() });
    }
  }
  // Base64 has no spaces: a space is a '+' that the client left unencoded in the URL.
  verifyV2(parts, creds.secretKey, accessKey, signature.replace(/ /g, '+'), opts, expires);
  return { kind: 'v2' };
}

// ---------------------------------------------------------------------------------------------
// V4

/** Every x-amz-* header of the request must be signed (S3 rejects the request otherwise). */
function checkAllAmzHeadersSigned(headers: IncomingHttpHeaders, signedHeaders: readonly string[]): void {
  const signed = new Set(signedHeaders);
  const unsigned = Object.keys(headers)
    .map((n) => n.toLowerCase())
    .filter((n) => n.startsWith('x-amz-') && !signed.has(n));
  if (unsigned.length > 0) {
    throw s3Error('AccessDenied', 'There were headers present in the request which were not signed', { HeadersNotSigned: unsigned.join(', ') });
  }
}

function checkHostSigned(signedHeaders: readonly string[]): void {
  if (!signedHeaders.includes('host')) throw s3Error('AccessDenied', 'The host header must be signed');
}

interface V4Check {
  parts: RequestParts;
  credential: V4Credential;
  signedHeaders: string[];
  signature: string;
  timestamp: string;
  payloadHash: string;
  secretKey: string;
  excludeQueryParam?: string;
}

/** Verifies a V4 signature; returns the signing key. */
function verifyV4(c: V4Check): Buffer {
  const signingKey = deriveSigningKey(c.secretKey, c.credential.date, c.credential.region, c.credential.service);
  const normalised = canonicalUri(c.parts.rawPath);
  // The path as AWS encodes it; then, for a client that signed the path exactly as it sent it
  // with a different encoding, the path as received (both decode to the same key).
  const literalVariants = normalised === c.parts.rawPath ? [false] : [false, true];
  let first: { creq: string; sts: string } | undefined;
  for (const literalPath of literalVariants) {
    const creq = canonicalRequest({
      method: c.parts.method,
      rawPath: c.parts.rawPath,
      rawQuery: c.parts.rawQuery,
      headers: c.parts.headers,
      signedHeaders: c.signedHeaders,
      payloadHash: c.payloadHash,
      excludeQueryParam: c.excludeQueryParam,
      literalPath,
    });
    const sts = stringToSign(c.timestamp, c.credential.scope, creq);
    first ??= { creq, sts };
    if (signaturesEqual(signHex(signingKey, sts), c.signature)) return signingKey;
  }
  throw s3Error('SignatureDoesNotMatch', undefined, {
    AWSAccessKeyId: c.credential.accessKey,
    StringToSign: first!.sts,
    SignatureProvided: c.signature,
    CanonicalRequest: first!.creq,
  });
}

function malformedHeader(message: string): Error {
  return s3Error('AuthorizationHeaderMalformed', `The authorization header is malformed; ${message}`);
}

function verifyV4Header(parts: RequestParts, authorization: string, creds: Credentials, opts: AuthOptions): AuthResult {
  let parsed: V4AuthorizationHeader;
  try {
    parsed = parseV4Authorization(authorization);
  } catch (err) {
    if (err instanceof V4ParseError) throw malformedHeader(err.message);
    throw err;
  }
  const { credential, signedHeaders, signature } = parsed;
  checkAccessKey(credential.accessKey, creds);

  const amzDate = single(parts.headers['x-amz-date']);
  let time: Date | undefined;
  let timestamp: string;
  if (amzDate !== undefined) {
    time = parseAmzDate(amzDate);
    timestamp = amzDate;
  } else {
    const date = single(parts.headers['date']);
    const t = date === undefined ? NaN : Date.parse(date);
    if (!Number.isNaN(t)) time = new Date(t);
    timestamp = time ? formatAmzDate(time) : '';
  }
  if (time === undefined) throw s3Error('AccessDenied', NO_DATE);
  if (credential.date !== timestamp.slice(0, 8)) throw malformedHeader('Invalid credential date. Date is not the same as X-Amz-Date.');
  checkSkew(time, opts);

  const payloadHash = single(parts.headers['x-amz-content-sha256']);
  if (payloadHash === undefined) throw s3Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  if (!VALID_PAYLOAD_HASH.test(payloadHash) && payloadHash !== UNSIGNED_PAYLOAD && !STREAMING_VALUES.has(payloadHash)) {
    throw s3Error('InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.', {
      ArgumentName: 'x-amz-content-sha256',
      ArgumentValue: payloadHash,
    });
  }
  checkHostSigned(signedHeaders);
  checkAllAmzHeadersSigned(parts.headers, signedHeaders);

  const signingKey = verifyV4({ parts, credential, signedHeaders, signature, timestamp, payloadHash, secretKey: creds.secretKey });
  if (payloadHash === STREAMING_SIGNED || payloadHash === STREAMING_SIGNED_TRAILER) {
    return { kind: 'v4', payloadHash, streaming: { signingKey, seedSignature: signature, timestamp, scope: credential.scope } };
  }
  return { kind: 'v4', payloadHash };
}

function queryError(message: string): Error {
  return s3Error('AuthorizationQueryParametersError', message);
}

function verifyV4Presigned(parts: RequestParts, creds: Credentials, opts: AuthOptions): AuthResult {
  const q = parts.query;
  const algorithm = q('X-Amz-Algorithm');
  if (algorithm !== V4_ALGORITHM) throw queryError(`X-Amz-Algorithm only supports "${V4_ALGORITHM}"`);
  const credentialText = q('X-Amz-Credential');
  const amzDate = q('X-Amz-Date');
  const expiresText = q('X-Amz-Expires');
  const signedHeadersText = q('X-Amz-SignedHeaders');
  const signature = q('X-Amz-Signature');
  if (credentialText === undefined || amzDate === undefined || expiresText === undefined || signedHeadersText === undefined || signature === undefined) {
    throw queryError(
      'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
    );
  }
  let credential: V4Credential;
  let signedHeaders: string[];
  try {
    credential = parseCredential(credentialText);
    signedHeaders = parseSignedHeaders(signedHeadersText);
  } catch (err) {
    if (err instanceof V4ParseError) throw queryError(`Error parsing the X-Amz-Credential parameter; ${err.message}`);
    throw err;
  }
  const time = parseAmzDate(amzDate);
  if (time === undefined) throw queryError(`X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'"`);
  if (!/^\d+$/.test(expiresText)) throw queryError('X-Amz-Expires should be a number');
  const expires = Number(expiresText);
  if (expires > MAX_PRESIGNED_EXPIRES_S) throw queryError(`X-Amz-Expires must be less than a week (in seconds) that is ${MAX_PRESIGNED_EXPIRES_S}`);
  if (credential.date !== amzDate.slice(0, 8)) throw queryError('Invalid credential date. Date is not the same as X-Amz-Date.');
  checkAccessKey(credential.accessKey, creds);

  if (!opts.skipClockCheck) {
    const now = opts.now ?? new Date();
    if (now.getTime() < time.getTime() - MAX_CLOCK_SKEW_MS) throw s3Error('AccessDenied', 'Request is not valid yet');
    if (now.getTime() > time.getTime() + expires * 1000) {
      throw s3Error('AccessDenied', 'Request has expired', {
        'X-Amz-Expires': expiresText,
        Expires: new Date(time.getTime() + expires * 1000).toISOString(),
        ServerTime: now.toISOString(),
      });
    }
  }
  checkHostSigned(signedHeaders);
  checkAllAmzHeadersSigned(parts.headers, signedHeaders);

  const signedPayload = q('X-Amz-Content-Sha256');
  const payloadHash = signedPayload ?? UNSIGNED_PAYLOAD;
  verifyV4({ parts, credential, signedHeaders, signature, timestamp: amzDate, payloadHash, secretKey: creds.secretKey, excludeQueryParam: 'X-Amz-Signature' });
  if (signedPayload !== undefined && VALID_PAYLOAD_HASH.test(signedPayload)) {
    return { kind: 'v4-presigned', payloadHash: signedPayload };
  }
  return { kind: 'v4-presigned' };
}
