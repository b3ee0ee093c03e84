/**
 * Multipart upload operations: Create, UploadPart, UploadPartCopy, Complete, Abort (the listings
 * are in multipart-list.ts). The uploads themselves, their rules and limits are in uploads.ts.
 */
import { openRequestBody, readSmallBody } from './body.js';
import { header, type RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { objectMetadataFrom } from './metadata.js';
import { announcedSize, checkKey, copySourceObject, parseContentMd5, quoteEtag } from './objects.js';
import { conditionHeaders, evaluatePreconditions } from './preconditions.js';
import { sendEmpty, sendXml } from './respond.js';
import { MAX_PART_NUMBER } from './uploads.js';
import { parseXml, xmlDocument, xmlText } from './xml.js';

const MAX_COMPLETE_BODY = 2 * 1024 * 1024;

export function uploadId(ctx: RequestContext): string {
  return ctx.query.get('uploadId') ?? '';
}

function partNumber(ctx: RequestContext): number {
  const value = ctx.query.get('partNumber') ?? '';
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_PART_NUMBER)) {
    throw s3Error('InvalidArgument', `Part number must be an integer between 1 and ${MAX_PART_NUMBER}, inclusive`, { ArgumentName: 'partNumber', ArgumentValue: value });
  }
  return n;
}

export async function createMultipartUpload(ctx: RequestContext): Promise<void> {
  const key = ctx.key!;
  checkKey(key);
  const upload = ctx.uploads.create(key, objectMetadataFrom(ctx.req.headers));
  sendXml(ctx, 200, xmlDocument('InitiateMultipartUploadResult', { Bucket: ctx.config.bucket, Key: key, UploadId: upload.id }));
}

export async function uploadPart(ctx: RequestContext): Promise<void> {
  const number = partNumber(ctx);
  const id = uploadId(ctx);
  ctx.uploads.get(id, ctx.key!); // refused before the body is read
  if (header(ctx, 'x-amz-copy-source') !== undefined) return uploadPartCopy(ctx, id, number);
  announcedSize(ctx);
  const expectedMd5 = parseContentMd5(ctx);
  const body = openRequestBody(ctx);
  const part = await ctx.uploads.putPart(id, ctx.key!, number, body.stream, { size: body.size, expectedMd5 });
  sendEmpty(ctx, 200, { ETag: quoteEtag(part.etag) });
}

async function uploadPartCopy(ctx: RequestContext, id: string, number: number): Promise<void> {
  const source = await copySourceObject(ctx);
  const etag = await ctx.store.etagOf(source);
  if (evaluatePreconditions(conditionHeaders(ctx.req.headers, 'x-amz-copy-source-'), etag, source.lastModified) !== 'proceed') {
    throw s3Error('PreconditionFailed');
  }
  let start = 0;
  let end = source.size - 1;
  const range = header(ctx, 'x-amz-copy-source-range');
  if (range !== undefined) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(range.trim());
    if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) >= source.size) {
      throw s3Error('InvalidArgument', 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy', { ArgumentName: 'x-amz-copy-source-range', ArgumentValue: range });
    }
    start = Number(m[1]);
    end = Number(m[2]);
  }
  const size = source.size === 0 ? 0 : end - start + 1;
  ctx.uploads.get(id, ctx.key!); // refused before the source is opened (it may have ended meanwhile)
  const body = size === 0 ? new Uint8Array(0) : ctx.store.createReadStream(source, start, end);
  const part = await ctx.uploads.putPart(id, ctx.key!, number, body, { size });
  sendXml(ctx, 200, xmlDocument('CopyPartResult', { LastModified: part.lastModified.toISOString(), ETag: quoteEtag(part.etag) }));
}

export async function completeMultipartUpload(ctx: RequestContext): Promise<void> {
  const id = uploadId(ctx);
  const key = ctx.key!;
  ctx.uploads.get(id, key); // refused before the body is read
  const doc = parseXml((await readSmallBody(ctx, MAX_COMPLETE_BODY)).toString('utf8'));
  const root = doc.CompleteMultipartUpload as { Part?: unknown[] } | undefined;
  if (!root || typeof root !== 'object') throw s3Error('MalformedXML');
  const list = (root.Part ?? []).map((p) => {
    const part = p as Record<string, unknown>;
    const number = xmlText(part.PartNumber);
    const etag = xmlText(part.ETag);
    if (number === undefined || !/^\d+$/.test(number) || etag === undefined) throw s3Error('MalformedXML');
    return { number: Number(number), etag };
  });
  const info = await ctx.uploads.complete(id, key, list);
  ctx.res.setHeader('x-amz-version-id', String(info.version));
  sendXml(
    ctx,
    200,
    xmlDocument('CompleteMultipartUploadResult', {
      Location: `http://${header(ctx, 'host') ?? 'localhost'}/${ctx.config.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`,
      Bucket: ctx.config.bucket,
      Key: key,
      ETag: quoteEtag(info.etag!),
    }),
  );
}

export async function abortMultipartUpload(ctx: RequestContext): Promise<void> {
  await ctx.uploads.abort(uploadId(ctx), ctx.key!);
  sendEmpty(ctx, 204);
}
