/**
 * Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) and
 * Range, evaluated as S3 does (RFC 9110 precedence: an ETag condition decides over the date
 * condition beside it).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { s3Error } from './errors.js';

export type PreconditionOutcome = 'proceed' | 'not-modified';

function etagList(value: string): string[] {
  return value.split(',').map((t) => t.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1'));
}

function matches(value: string, etag: string): boolean {
  const tags = etagList(value);
  return tags.includes('*') || tags.includes(etag);
}

function parseDate(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}

/** Names of the headers: the same rules serve GET/HEAD and x-amz-copy-source-if-*. */
export interface ConditionHeaders {
  ifMatch?: string;
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  ifUnmodifiedSince?: string;
}

export function conditionHeaders(headers: IncomingHttpHeaders, prefix = ''): ConditionHeaders {
  const get = (n: string) => {
    const v = headers[`${prefix}${n}`];
    return Array.isArray(v) ? v.join(',') : v;
  };
  return {
    ifMatch: get('if-match'),
    ifNoneMatch: get('if-none-match'),
    ifModifiedSince: get('if-modified-since'),
    ifUnmodifiedSince: get('if-unmodified-since'),
  };
}

/**
 * Throws PreconditionFailed (412) or returns 'not-modified' (304) or 'proceed'. Dates compare
 * at one-second resolution, the resolution of HTTP dates.
 */
export function evaluatePreconditions(cond: ConditionHeaders, etag: string, lastModified: Date): PreconditionOutcome {
  const modified = Math.floor(lastModified.getTime() / 1000) * 1000;
  if (cond.ifMatch !== undefined) {
    if (!matches(cond.ifMatch, etag)) throw s3Error('PreconditionFailed', undefined, { Condition: 'If-Match' });
  } else {
    const since = parseDate(cond.ifUnmodifiedSince);
    if (since !== undefined && modified > since) throw s3Error('PreconditionFailed', undefined, { Condition: 'If-Unmodified-Since' });
  }
  if (cond.ifNoneMatch !== undefined) {
    if (matches(cond.ifNoneMatch, etag)) return 'not-modified';
  } else {
    const since = parseDate(cond.ifModifiedSince);
    if (since !== undefined && modified <= since) return 'not-modified';
  }
  return 'proceed';
}

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * The single byte range of a Range header for an object of `size` bytes; undefined when there
 * is none or it is not one S3 honours (S3 ignores malformed and multiple ranges and sends the
 * whole object). An unsatisfiable range is InvalidRange (416).
 */
export function parseRange(value: string | undefined, size: number): ByteRange | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value);
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  const unsatisfiable = () => s3Error('InvalidRange', undefined, { RangeRequested: value, ActualObjectSize: String(size) });
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined; // syntactically invalid: ignored
  if (start >= size) throw unsatisfiable();
  return { start, end };
}
