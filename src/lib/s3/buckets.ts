/**
 * Bucket operations for the one bucket zipkv serves: ListObjects (v1 and v2), ListBuckets,
 * HeadBucket, GetBucketLocation, and CreateBucket of the existing bucket.
 */
import type { ObjectInfo } from '../store/store.js';
import type { RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { quoteEtag } from './objects.js';
import { sendEmpty, sendXml } from './respond.js';
import { type XmlNode, xmlDocument } from './xml.js';

export const MAX_KEYS = 1000;
const OWNER = { ID: 'zipkv', DisplayName: 'zipkv' };
/** A fixed creation date: the bucket exists as long as the store does. */
const BUCKET_CREATED = new Date(0).toISOString();

/** encoding-type=url: keys are URL-encoded as S3 does (everything but unreserved and '/'). */
export function urlEncodeKey(key: string): string {
  return encodeURIComponent(key).replace(/%2F/g, '/').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** encoding-type of a listing: the function that writes its keys, and the value to echo back. */
export function keyEncoding(ctx: RequestContext): { encode: (s: string) => string; encodingType: string | null } {
  const encodingType = ctx.query.get('encoding-type');
  if (encodingType !== null && encodingType !== 'url') {
    throw s3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', { ArgumentName: 'encoding-type', ArgumentValue: encodingType });
  }
  return { encode: encodingType === 'url' ? urlEncodeKey : (s: string) => s, encodingType };
}

export function parseMaxKeys(ctx: RequestContext): number {
  const value = ctx.query.get('max-keys');
  if (value === null) return MAX_KEYS;
  if (!/^\d+$/.test(value)) throw s3Error('InvalidArgument', 'Provided max-keys not an integer or within integer range', { ArgumentName: 'max-keys', ArgumentValue: value });
  return Math.min(Number(value), MAX_KEYS);
}

async function contentsOf(ctx: RequestContext, objects: ObjectInfo[], encode: (s: string) => string, owner: boolean): Promise<XmlNode[]> {
  const out: XmlNode[] = [];
  for (const info of objects) {
    out.push({
      Key: encode(info.key),
      LastModified: info.lastModified.toISOString(),
      // Only objects the original wrote need their MD5 computed (once); the rest have it stored.
      ETag: quoteEtag(info.etag ?? (await ctx.store.etagOf(info))),
      Size: info.size,
      Owner: owner ? OWNER : undefined,
      StorageClass: 'STANDARD',
    });
  }
  return out;
}

export async function listObjects(ctx: RequestContext): Promise<void> {
  const v2 = ctx.query.get('list-type') === '2';
  const { encode, encodingType } = keyEncoding(ctx);
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') || undefined;
  const maxKeys = parseMaxKeys(ctx);
  let after: string | undefined;
  let continuationToken: string | undefined;
  let startAfter: string | undefined;
  if (v2) {
    continuationToken = ctx.query.get('continuation-token') ?? undefined;
    startAfter = ctx.query.get('start-after') ?? undefined;
    if (continuationToken !== undefined) {
      after = decodeContinuationToken(continuationToken);
    } else after = startAfter || undefined;
  } else {
    after = ctx.query.get('marker') || undefined;
  }
  const page = ctx.store.list({ prefix, after, delimiter, limit: maxKeys });
  const contents = await contentsOf(ctx, page.objects, encode, !v2 || ctx.query.get('fetch-owner') === 'true');
  const commonPrefixes = page.commonPrefixes.map((p) => ({ Prefix: encode(p) }));
  const common = {
    Name: ctx.config.bucket,
    Prefix: encode(prefix),
  };
  let body: XmlNode;
  if (v2) {
    body = {
      ...common,
      ContinuationToken: continuationToken,
      StartAfter: startAfter !== undefined ? encode(startAfter) : undefined,
      KeyCount: page.objects.length + page.commonPrefixes.length,
      MaxKeys: maxKeys,
      Delimiter: delimiter !== undefined ? encode(delimiter) : undefined,
      EncodingType: encodingType ?? undefined,
      IsTruncated: page.truncated,
      NextContinuationToken: page.truncated && page.nextMarker !== undefined ? encodeContinuationToken(page.nextMarker) : undefined,
      Contents: contents,
      CommonPrefixes: commonPrefixes,
    };
  } else {
    body = {
      ...common,
      Marker: encode(ctx.query.get('marker') ?? ''),
      MaxKeys: maxKeys,
      Delimiter: delimiter !== undefined ? encode(delimiter) : undefined,
      EncodingType: encodingType ?? undefined,
      IsTruncated: page.truncated,
      // S3 sends NextMarker only with a delimiter; sending it always is harmless and lets
      // clients that look for it (S3QL) page without guessing.
      NextMarker: page.truncated && page.nextMarker !== undefined ? encode(page.nextMarker) : undefined,
      Contents: contents,
      CommonPrefixes: commonPrefixes,
    };
  }
  sendXml(ctx, 200, xmlDocument('ListBucketResult', body));
}

function encodeContinuationToken(key: string): string {
  return Buffer.from(key, 'utf8').toString('base64url');
}

function decodeContinuationToken(token: string): string {
  if (!/^[A-Za-z0-9_-]*$/.test(token)) throw s3Error('InvalidArgument', 'The continuation token provided is incorrect', { ArgumentName: 'continuation-token' });
  return Buffer.from(token, 'base64url').toString('utf8');
}

export function listBuckets(ctx: RequestContext): void {
  sendXml(
    ctx,
    200,
    xmlDocument('ListAllMyBucketsResult', {
      Owner: OWNER,
      Buckets: { Bucket: { Name: ctx.config.bucket, CreationDate: BUCKET_CREATED } },
    }),
  );
}

export function headBucket(ctx: RequestContext): void {
  sendEmpty(ctx, 200, { 'x-amz-bucket-region': 'us-east-1' });
}

export function getBucketLocation(ctx: RequestContext): void {
  // us-east-1 is written as an empty LocationConstraint, as S3 does.
  sendXml(ctx, 200, '<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>');
}

/** CreateBucket of the bucket that exists answers as S3's us-east-1 does for its owner. */
export function createBucket(ctx: RequestContext): void {
  sendEmpty(ctx, 200, { Location: `/${ctx.config.bucket}` });
}
