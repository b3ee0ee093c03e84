/**
 * Object metadata as S3 keeps it: user `x-amz-meta-*` headers (names lower-cased, values byte
 * for byte) and the standard headers S3 stores with an object. The original zipkvserver stored
 * user names in Go's canonical form (`X-Amz-Meta-Foo`); those are answered lower-cased too.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { s3Error } from './errors.js';

const META_PREFIX = 'x-amz-meta-';

/** Standard headers kept with an object, by lower-case name -> the name stored and sent back. */
const STANDARD_HEADERS: Record<string, string> = {
  'content-type': 'Content-Type',
  'content-encoding': 'Content-Encoding',
  'content-disposition': 'Content-Disposition',
  'content-language': 'Content-Language',
  'cache-control': 'Cache-Control',
  expires: 'Expires',
  'x-amz-website-redirect-location': 'x-amz-website-redirect-location',
};

/** S3 allows 2 KB of user metadata; S3QL fills up to that. A little slack over S3's limit. */
export const MAX_USER_METADATA_BYTES = 8 * 1024;

export const DEFAULT_CONTENT_TYPE = 'binary/octet-stream';

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}

/** The user metadata of a request (x-amz-meta-*), checked against the size limit. */
export function userMetadataFrom(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  let bytes = 0;
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith(META_PREFIX)) continue;
    const v = single(value) ?? '';
    out[name] = v;
    bytes += Buffer.byteLength(name) - META_PREFIX.length + Buffer.byteLength(v);
  }
  if (bytes > MAX_USER_METADATA_BYTES) {
    throw s3Error('MetadataTooLarge', `Your metadata headers exceed the maximum allowed metadata size of ${MAX_USER_METADATA_BYTES} bytes.`);
  }
  return out;
}

/**
 * Content-Encoding without `aws-chunked`, which names the framing of the upload (undone on the
 * way in), not the encoding of the object; undefined when nothing else is left.
 */
function storedContentEncoding(value: string): string | undefined {
  const codings = value.split(',').filter((c) => c.trim().toLowerCase() !== 'aws-chunked');
  const rest = codings.join(',').trim();
  return rest === '' ? undefined : rest;
}

/** The standard headers of a request that are stored with the object. */
export function standardHeadersFrom(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [lower, stored] of Object.entries(STANDARD_HEADERS)) {
    let value = single(headers[lower]);
    if (value !== undefined && lower === 'content-encoding') value = storedContentEncoding(value);
    if (value !== undefined) out[stored] = value;
  }
  return out;
}

/** Everything stored for a new object: user metadata and standard headers. */
export function objectMetadataFrom(headers: IncomingHttpHeaders): Record<string, string> {
  return { ...standardHeadersFrom(headers), ...userMetadataFrom(headers) };
}

/** Splits stored metadata into user metadata and standard headers, whatever case it was stored in. */
export function splitStoredMetadata(stored: Record<string, string>): { user: Record<string, string>; standard: Record<string, string> } {
  const user: Record<string, string> = {};
  const standard: Record<string, string> = {};
  for (const [name, value] of Object.entries(stored)) {
    const lower = name.toLowerCase();
    if (lower.startsWith(META_PREFIX)) user[lower] = value;
    else if (STANDARD_HEADERS[lower]) standard[STANDARD_HEADERS[lower]] = value;
  }
  return { user, standard };
}

/** Response headers for a stored object's metadata (Content-Type defaults as S3's does). */
export function metadataResponseHeaders(stored: Record<string, string>): OutgoingHttpHeaders {
  const { user, standard } = splitStoredMetadata(stored);
  const headers: OutgoingHttpHeaders = { 'Content-Type': DEFAULT_CONTENT_TYPE, ...standard };
  for (const [name, value] of Object.entries(user)) headers[name] = value;
  return headers;
}

/** GET's response-* query parameters override the stored headers, as S3 allows. */
export const RESPONSE_OVERRIDES: Record<string, string> = {
  'response-content-type': 'Content-Type',
  'response-content-language': 'Content-Language',
  'response-expires': 'Expires',
  'response-cache-control': 'Cache-Control',
  'response-content-disposition': 'Content-Disposition',
  'response-content-encoding': 'Content-Encoding',
};
