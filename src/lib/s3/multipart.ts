/**
 * Multipart upload operations: Create, UploadPart, UploadPartCopy, Complete, Abort (the listings
 * are in multipart-list.ts). Parts are kept by the store's MultipartUploads until completion.
 */
import { Readable } from 'node:stream';
import { UploadError } from '../store/uploads.js';
import { MAX_PART_NUMBER } from '../store/uploads.js';
import { openRequestBody, readSmallBody } from './body.js';
import { header, type RequestContext } from './context.js';
import { s3Error, S3Error } from './errors.js';
import { objectMetadataFrom } from './metadata.js';
import { checkKey, objectOrThrow, parseCopySource, quoteEtag } from './objects.js';
import { conditionHeaders, evaluatePreconditions } from './preconditions.js';
import { sendEmpty, sendXml } from './respond.js';
import { parseXml, xmlDocument, xmlText } from './xml.js';

const MAX_COMPLETE_BODY = 2 * 1024 * 1024;

/** Upload errors carry S3's code; everything else passes through. */
export async function withUploadErrors<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof UploadError) throw new S3Error(err.s3Code, err.message);
    throw err;
  }
}

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
  const upload = await ctx.uploads.create(key, objectMetadataFrom(ctx.req.headers));
  sendXml(ctx, 200, xmlDocument('InitiateMultipartUploadResult', { Bucket: ctx.config.bucket, Key: key, UploadId: upload.id }));
}

export async function uploadPart(ctx: RequestContext): Promise<void> {
  const number = partNumber(ctx);
  const id = uploadId(ctx);
  await withUploadErrors(async () => {
    ctx.uploads.get(id, ctx.key!);
    if (header(ctx, 'x-amz-copy-source') !== undefined) return uploadPartCopy(ctx, id, number);
    const md5Header = header(ctx, 'content-md5');
    const expectedMd5 = md5Header ? Buffer.from(md5Header, 'base64') : undefined;
    if (expectedMd5 && expectedMd5.length !== 16) throw s3Error('InvalidDigest');
    const body = openRequestBody(ctx);
    const part = await ctx.uploads.putPart(id, ctx.key!, number, body.stream, body.size, expectedMd5);
    sendEmpty(ctx, 200, { ETag: quoteEtag(part.etag) });
  });
}

async function uploadPartCopy(ctx: RequestContext, id: string, number: number): Promise<void> {
  const source = objectOrThrow(ctx, parseCopySource(ctx));
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
  const body: Readable = source.size === 0 ? Readable.from([]) : ctx.store.createReadStream(source, start, end);
  const part = await ctx.uploads.putPart(id, ctx.key!, number, body);
  sendXml(ctx, 200, xmlDocument('CopyPartResult', { LastModified: part.lastModified.toISOString(), ETag: quoteEtag(part.etag) }));
}

export async function completeMultipartUpload(ctx: RequestContext): Promise<void> {
  const id = uploadId(ctx);
  const key = ctx.key!;
  await withUploadErrors(async () => {
    ctx.uploads.get(id, key);
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
  });
}

export async function abortMultipartUpload(ctx: RequestContext): Promise<void> {
  await withUploadErrors(() => ctx.uploads.abort(uploadId(ctx), ctx.key!));
  sendEmpty(ctx, 204);
}
