/** Object operations: GetObject, HeadObject, PutObject, CopyObject, DeleteObject. */
import { once } from 'node:events';
import type { OutgoingHttpHeaders } from 'node:http';
import { MAX_OBJECT_SIZE } from '../store/files.js';
import type { ObjectInfo } from '../store/store.js';
import { contentLength, openRequestBody } from './body.js';
import { header, type RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { RESPONSE_OVERRIDES, objectMetadataFrom, putMetadataHeaders } from './metadata.js';
import { conditionHeaders, evaluatePreconditions, parseRange } from './preconditions.js';
import { sendEmpty, sendStream, sendXml } from './respond.js';
import { parseVersionId } from './versions.js';
import { xmlDocument } from './xml.js';

/** What a header value may hold, as Node checks it: one line of Latin-1 text. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Last-Modified values: objects have whole-second times, and many share one (all written in
 * the same second, or read again and again), so the HTTP date of each second is made once.
 */
const httpDates = new Map<number, string>();
function httpDate(date: Date): string {
  const ms = date.getTime();
  let text = httpDates.get(ms);
  if (text === undefined) {
    if (httpDates.size >= 4096) httpDates.clear();
    text = date.toUTCString();
    httpDates.set(ms, text);
  }
  return text;
}

/** Bodies up to this size are read with one call and sent with one write. */
const SMALL_OBJECT = 256 * 1024;
export const MAX_KEY_BYTES = 1024;

export function checkKey(key: string): void {
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw s3Error('KeyTooLongError', undefined, { MaxSizeAllowed: String(MAX_KEY_BYTES) });
}

export function quoteEtag(etag: string): string {
  return `"${etag}"`;
}

export function objectOrThrow(ctx: RequestContext, key: string): ObjectInfo {
  const info = ctx.store.head(key);
  if (!info) throw s3Error('NoSuchKey', undefined, { Key: key });
  return info;
}

/**
 * The object a request names: the live one, or version `versionId` (a revision). A delete
 * marker's id is 405 with x-amz-delete-marker, and an id that is not a version of the key is
 * NoSuchVersion, as S3 answers.
 */
async function objectOrVersion(ctx: RequestContext, key: string, versionId: string | null): Promise<ObjectInfo> {
  // "null" is S3's id for a version written before versioning: here, the current one.
  if (versionId === null || versionId === 'null') return objectOrThrow(ctx, key);
  const revision = parseVersionId(versionId);
  const version = await ctx.store.version(key, revision);
  if (!version) {
    // Older than the history kept (--keep-history): say so, and where the history begins.
    const start = ctx.store.stats().historyStart;
    const message = revision < start ? `The specified version does not exist: the history kept begins at version ${start}, older versions were forgotten.` : undefined;
    throw s3Error('NoSuchVersion', message, { Key: key, VersionId: versionId });
  }
  if (!version.entry) {
    ctx.res.setHeader('x-amz-delete-marker', 'true');
    ctx.res.setHeader('x-amz-version-id', versionId);
    throw s3Error('MethodNotAllowed', 'The specified method is not allowed against a delete marker.', { Method: ctx.req.method ?? 'GET', ResourceType: 'DeleteMarker' });
  }
  return ctx.store.versionInfo({ ...version, entry: version.entry });
}

/**
 * GET/HEAD ?partNumber=N. Part boundaries are not kept once an upload completes, so every object
 * is answered as one part: part 1 is the whole object (without x-amz-mp-parts-count, which tells
 * clients that download by parts that there is just the one) and any other part is refused.
 */
function checkPartNumber(ctx: RequestContext): void {
  const value = ctx.query.get('partNumber');
  if (value === null) return;
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 10000) {
    throw s3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', { ArgumentName: 'partNumber', ArgumentValue: value });
  }
  if (header(ctx, 'range') !== undefined) throw s3Error('InvalidRequest', 'Cannot specify both Range header and partNumber query parameter');
  if (Number(value) !== 1) throw s3Error('InvalidPartNumber', undefined, { PartNumberRequested: value, ActualPartCount: '1' });
}

export async function getObject(ctx: RequestContext, headOnly: boolean): Promise<void> {
  const key = ctx.key!;
  const { query } = ctx;
  const hasQuery = query.size > 0;
  const info = await objectOrVersion(ctx, key, hasQuery ? query.get('versionId') : null);
  if (hasQuery) checkPartNumber(ctx);
  const etag = await ctx.store.etagOf(info);
  const quotedEtag = quoteEtag(etag);
  const lastModified = httpDate(info.lastModified);
  const version = info.version === undefined ? undefined : String(info.version);
  const reqHeaders = ctx.req.headers;
  if (
    (reqHeaders['if-match'] !== undefined ||
      reqHeaders['if-none-match'] !== undefined ||
      reqHeaders['if-modified-since'] !== undefined ||
      reqHeaders['if-unmodified-since'] !== undefined) &&
    evaluatePreconditions(conditionHeaders(reqHeaders), etag, info.lastModified) === 'not-modified'
  ) {
    const validators: OutgoingHttpHeaders = { ETag: quotedEtag, 'Last-Modified': lastModified };
    if (version !== undefined) validators['x-amz-version-id'] = version;
    ctx.res.writeHead(304, validators);
    ctx.res.end();
    return;
  }
  const range = parseRange(header(ctx, 'range'), info.size);
  // One object, filled in order: metadata, validators, then what this reply adds.
  const headers: OutgoingHttpHeaders = {};
  putMetadataHeaders(headers, info.metadata);
  headers.ETag = quotedEtag;
  headers['Last-Modified'] = lastModified;
  if (version !== undefined) headers['x-amz-version-id'] = version;
  headers['Accept-Ranges'] = 'bytes';
  if (!headOnly && hasQuery) {
    for (const [param, name] of RESPONSE_OVERRIDES) {
      const value = query.get(param);
      if (value === null) continue;
      // A header value is one line of Latin-1 text: anything else could split the response.
      if (!HEADER_VALUE.test(value)) {
        throw s3Error('InvalidArgument', `${param} must be one line of text (Latin-1, no control characters).`, { ArgumentName: param });
      }
      headers[name] = value;
    }
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? info.size - 1;
  const length = Math.max(0, end - start + 1);
  headers['Content-Length'] = length;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${info.size}`;
  const status = range ? 206 : 200;
  if (headOnly) {
    ctx.res.writeHead(status, headers);
    ctx.res.end();
    return;
  }
  if (length <= SMALL_OBJECT) {
    const body = await ctx.store.read(info, start, end);
    ctx.res.writeHead(status, headers);
    ctx.res.end(body);
    return;
  }
  const stream = ctx.store.createReadStream(info, start, end);
  // The status goes out with the first bytes: a read that fails at once (an evicted block while
  // the upstream is down, a disk error) still gets an error reply instead of a cut connection.
  try {
    await once(stream, 'readable');
  } catch (err) {
    stream.destroy();
    throw err;
  }
  ctx.res.writeHead(status, headers);
  await sendStream(ctx, stream);
}

/**
 * The body size a request announces (the decoded length of an aws-chunked body), if any; one
 * larger than the largest object is refused before any byte is read.
 */
export function announcedSize(ctx: RequestContext): number | undefined {
  const decoded = header(ctx, 'x-amz-decoded-content-length');
  const size = decoded !== undefined && /^\d+$/.test(decoded) ? Number(decoded) : contentLength(ctx);
  if (size !== undefined && size > MAX_OBJECT_SIZE) {
    throw s3Error('EntityTooLarge', undefined, { ProposedSize: String(size), MaxSizeAllowed: String(MAX_OBJECT_SIZE) });
  }
  return size;
}

export function parseContentMd5(ctx: RequestContext): Buffer | undefined {
  const value = header(ctx, 'content-md5');
  if (value === undefined) return undefined;
  const md5 = Buffer.from(value.trim(), 'base64');
  if (md5.length !== 16 || md5.toString('base64') !== value.trim()) throw s3Error('InvalidDigest');
  return md5;
}

export async function putObject(ctx: RequestContext): Promise<void> {
  const key = ctx.key!;
  checkKey(key);
  if (header(ctx, 'x-amz-copy-source') !== undefined) return copyObject(ctx);
  const metadata = objectMetadataFrom(ctx.req.headers);
  announcedSize(ctx);
  const expectedMd5 = parseContentMd5(ctx);
  const ifNoneMatch = header(ctx, 'if-none-match');
  // S3 takes only `*` here: create the object unless the key holds one.
  if (ifNoneMatch !== undefined && ifNoneMatch.trim() !== '*') throw s3Error('NotImplemented', 'If-None-Match on PUT takes only *.');
  const body = openRequestBody(ctx);
  const info = await ctx.store.put(key, body.stream, { size: body.size, metadata, expectedMd5, ifAbsent: ifNoneMatch !== undefined });
  sendEmpty(ctx, 200, { ETag: quoteEtag(info.etag!), 'x-amz-version-id': String(info.version) });
}

/** x-amz-copy-source in every form clients send: with or without a leading slash, URL-encoded. */
export function parseCopySource(ctx: RequestContext): { key: string; versionId: string | null } {
  let value = header(ctx, 'x-amz-copy-source')!;
  const q = value.indexOf('?');
  let versionId: string | null = null;
  if (q >= 0) {
    versionId = new URLSearchParams(value.slice(q + 1)).get('versionId');
    value = value.slice(0, q);
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    throw s3Error('InvalidArgument', 'Invalid copy source encoding.', { ArgumentName: 'x-amz-copy-source' });
  }
  if (decoded.startsWith('/')) decoded = decoded.slice(1);
  const slash = decoded.indexOf('/');
  if (slash <= 0 || slash === decoded.length - 1) {
    throw s3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey.', { ArgumentName: 'x-amz-copy-source' });
  }
  const bucket = decoded.slice(0, slash);
  if (bucket !== ctx.config.bucket) throw s3Error('NoSuchBucket', undefined, { BucketName: bucket });
  return { key: decoded.slice(slash + 1), versionId };
}

/** The object (or version) an x-amz-copy-source names. */
export async function copySourceObject(ctx: RequestContext): Promise<ObjectInfo> {
  const { key, versionId } = parseCopySource(ctx);
  return objectOrVersion(ctx, key, versionId);
}

export async function copyObject(ctx: RequestContext): Promise<void> {
  const key = ctx.key!;
  const source = await copySourceObject(ctx);
  const sourceKey = source.key;
  const etag = await ctx.store.etagOf(source);
  if (evaluatePreconditions(conditionHeaders(ctx.req.headers, 'x-amz-copy-source-'), etag, source.lastModified) !== 'proceed') {
    throw s3Error('PreconditionFailed');
  }
  const directive = (header(ctx, 'x-amz-metadata-directive') ?? 'COPY').toUpperCase();
  if (directive !== 'COPY' && directive !== 'REPLACE') {
    throw s3Error('InvalidArgument', 'Unknown metadata directive.', { ArgumentName: 'x-amz-metadata-directive', ArgumentValue: directive });
  }
  if (sourceKey === key && directive === 'COPY' && source.version === undefined) {
    throw s3Error(
      'InvalidRequest',
      "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
    );
  }
  const info = await ctx.store.copy(source, key, directive === 'REPLACE' ? objectMetadataFrom(ctx.req.headers) : undefined);
  if (!info) throw s3Error('NoSuchKey', undefined, { Key: sourceKey });
  ctx.res.setHeader('x-amz-version-id', String(info.version));
  if (source.version !== undefined) ctx.res.setHeader('x-amz-copy-source-version-id', String(source.version));
  sendXml(
    ctx,
    200,
    xmlDocument('CopyObjectResult', { LastModified: info.lastModified.toISOString(), ETag: quoteEtag(etag) }),
  );
}

/** A delete writes a delete record (a delete marker, as S3 calls it) unless the key is not there. */
export async function deleteObject(ctx: RequestContext): Promise<void> {
  checkKey(ctx.key!);
  if (ctx.query.has('versionId')) {
    throw s3Error('InvalidRequest', 'zipkv keeps every version: one cannot be deleted (zipkv rebase rewinds the whole store).');
  }
  const revision = await ctx.store.delete(ctx.key!);
  sendEmpty(ctx, 204, revision === undefined ? {} : { 'x-amz-delete-marker': 'true', 'x-amz-version-id': String(revision) });
}
