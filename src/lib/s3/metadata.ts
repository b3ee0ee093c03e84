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
/** The same, as a map: a stored name such as `constructor` must not find Object's. */
const STANDARD_BY_LOWER: ReadonlyMap<string, string> = new Map(Object.entries(STANDARD_HEADERS));

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

/**
 * Writes the response headers of a stored object's metadata into `headers`, in one pass over
 * it (this is on every GET and HEAD): Content-Type (S3's default when none was stored), the
 * standard headers and the user metadata, names as S3 sends them whatever case they were stored in.
 */
export function putMetadataHeaders(headers: OutgoingHttpHeaders, stored: Record<string, string>): void {
  headers['Content-Type'] = DEFAULT_CONTENT_TYPE;
  for (const name in stored) {
    const value = stored[name]!;
    // zipkv stores user names lower-cased: the common case needs no lower-casing here.
    if (name.startsWith(META_PREFIX)) {
      headers[name] = value;
      continue;
    }
    const lower = name.toLowerCase();
    if (lower.startsWith(META_PREFIX)) headers[lower] = value;
    else {
      const standard = STANDARD_BY_LOWER.get(lower);
      if (standard !== undefined) headers[standard] = value;
    }
  }
}

/** GET's response-* query parameters override the stored headers, as S3 allows: [parameter, header]. */
export const RESPONSE_OVERRIDES: ReadonlyArray<readonly [string, string]> = [
  ['response-content-type', 'Content-Type'],
  ['response-content-language', 'Content-Language'],
  ['response-expires', 'Expires'],
  ['response-cache-control', 'Cache-Control'],
  ['response-content-disposition', 'Content-Disposition'],
  ['response-content-encoding', 'Content-Encoding'],
];
