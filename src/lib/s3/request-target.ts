/**
 * The request target, parsed once: authentication checks the signature over exactly the path
 * and query that routing then acts on (both take this function's result, never the url). A
 * target with a `#` is refused before anything else: clients never send one unescaped, and a
 * parser that dropped the tail for one purpose and kept it for another would let a signed
 * request be replayed against other keys.
 */
import { parseRawQuery } from './auth/signature-v4.js';
import { s3Error } from './errors.js';

export interface RequestTarget {
  /** The path as sent (percent-encoded). */
  rawPath: string;
  /** The query as sent, without the `?`. */
  rawQuery: string;
  /**
   * The query parameters, percent-decoded with '+' as a literal plus (as the AWS SDKs encode a
   * space as %20, and as the signatures are computed): what the signature check reads and what
   * the handlers act on are the same values.
   */
  query: URLSearchParams;
  bucket: string | undefined;
  key: string | undefined;
}

const ABSOLUTE_FORM = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?]*/;

function decode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    throw s3Error('InvalidArgument', 'The path is not valid percent-encoded UTF-8.');
  }
}

export function parseRequestTarget(url: string): RequestTarget {
  if (url.includes('#')) throw s3Error('InvalidRequest', 'The request target contains "#": a fragment is never part of a request (escape it as %23 in a key).');
  let target = url;
  // The origin form (`/bucket/key`) is what clients send; the absolute form (proxies) is rare.
  if (target.charCodeAt(0) !== 0x2f) {
    const absolute = ABSOLUTE_FORM.exec(target);
    if (absolute) target = target.slice(absolute[0].length);
  }
  if (target === '' || target.startsWith('?')) target = `/${target}`;
  if (!target.startsWith('/')) throw s3Error('InvalidRequest', 'The request target is not a path.');
  const q = target.indexOf('?');
  const rawPath = q >= 0 ? target.slice(0, q) : target;
  const rawQuery = q >= 0 ? target.slice(q + 1) : '';
  const slash = rawPath.indexOf('/', 1);
  const rawBucket = slash < 0 ? rawPath.slice(1) : rawPath.slice(1, slash);
  const rawKey = slash < 0 ? '' : rawPath.slice(slash + 1);
  return {
    rawPath,
    rawQuery,
    query: rawQuery === '' ? new URLSearchParams() : new URLSearchParams(parseRawQuery(rawQuery)),
    bucket: rawBucket === '' ? undefined : decode(rawBucket),
    key: rawKey === '' ? undefined : decode(rawKey),
  };
}
