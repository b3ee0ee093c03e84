/**
 * The multipart listings: ListParts (one upload's parts) and ListMultipartUploads (the uploads in
 * progress, with S3's prefix, delimiter, key-marker/upload-id-marker paging and encoding-type).
 */
import { keyEncoding } from './buckets.js';
import type { RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { uploadId } from './multipart.js';
import { quoteEtag } from './objects.js';
import { sendXml } from './respond.js';
import type { Upload } from './uploads.js';
import { type XmlNode, xmlDocument } from './xml.js';

const MAX_PAGE = 1000;
const OWNER = { ID: 'zipkv', DisplayName: 'zipkv' };

/** A non-negative integer query parameter, or `fallback` when absent; InvalidArgument otherwise. */
function integerParam(ctx: RequestContext, name: string, fallback: number): number {
  const value = ctx.query.get(name);
  if (value === null) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw s3Error('InvalidArgument', `Provided ${name} not an integer or within integer range`, { ArgumentName: name, ArgumentValue: value });
  return Number(value);
}

const byteCompare = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

export function listParts(ctx: RequestContext): void {
  const upload = ctx.uploads.get(uploadId(ctx), ctx.key!);
  const marker = integerParam(ctx, 'part-number-marker', 0);
  const maxParts = Math.min(integerParam(ctx, 'max-parts', MAX_PAGE), MAX_PAGE);
  const parts = [...upload.parts.values()].filter((p) => p.number > marker).sort((a, b) => a.number - b.number);
  const page = parts.slice(0, maxParts);
  const truncated = parts.length > page.length;
  sendXml(
    ctx,
    200,
    xmlDocument('ListPartsResult', {
      Bucket: ctx.config.bucket,
      Key: upload.key,
      UploadId: upload.id,
      Initiator: OWNER,
      Owner: OWNER,
      StorageClass: 'STANDARD',
      PartNumberMarker: marker,
      NextPartNumberMarker: page.length > 0 ? page[page.length - 1]!.number : undefined,
      MaxParts: maxParts,
      IsTruncated: truncated,
      Part: page.map((p) => ({ PartNumber: p.number, LastModified: p.lastModified.toISOString(), ETag: quoteEtag(p.etag), Size: p.size })),
    }),
  );
}

/**
 * Uploads after the (key-marker, upload-id-marker) position. Uploads of one key are in the order
 * they were initiated; an upload-id-marker that names none of them is compared as text.
 */
function afterMarker(all: Upload[], keyMarker: string, idMarker: string | undefined): (u: Upload) => boolean {
  const sameKey = all.filter((u) => u.key === keyMarker);
  const at = idMarker === undefined ? -1 : sameKey.findIndex((u) => u.id === idMarker);
  const laterIds = new Set(
    idMarker === undefined ? [] : (at >= 0 ? sameKey.slice(at + 1) : sameKey.filter((u) => u.id > idMarker)).map((u) => u.id),
  );
  return (u) => {
    const c = byteCompare(u.key, keyMarker);
    return c > 0 || (c === 0 && laterIds.has(u.id));
  };
}

export function listMultipartUploads(ctx: RequestContext): void {
  const { query } = ctx;
  const { encode, encodingType } = keyEncoding(ctx);
  const prefix = query.get('prefix') ?? '';
  const delimiter = query.get('delimiter') || undefined;
  const keyMarker = query.get('key-marker') || undefined;
  const idMarker = keyMarker === undefined ? undefined : query.get('upload-id-marker') || undefined;
  const maxUploads = Math.min(integerParam(ctx, 'max-uploads', MAX_PAGE), MAX_PAGE);

  const all = ctx.uploads.list();
  const after = keyMarker === undefined ? () => true : afterMarker(all, keyMarker, idMarker);
  const uploads: XmlNode[] = [];
  const commonPrefixes: XmlNode[] = [];
  let count = 0;
  let truncated = false;
  let nextKey: string | undefined;
  let nextId: string | undefined;
  let lastPrefix: string | undefined;
  for (const upload of all) {
    if (!upload.key.startsWith(prefix) || !after(upload)) continue;
    const cut = delimiter === undefined ? -1 : upload.key.indexOf(delimiter, prefix.length);
    const common = cut >= 0 ? upload.key.slice(0, cut + delimiter!.length) : undefined;
    if (common !== undefined && (common === lastPrefix || (keyMarker !== undefined && byteCompare(common, keyMarker) <= 0))) continue;
    if (count === maxUploads) {
      truncated = maxUploads > 0;
      break;
    }
    count++;
    if (common !== undefined) {
      commonPrefixes.push({ Prefix: encode(common) });
      lastPrefix = common;
      nextKey = common;
      nextId = undefined;
    } else {
      uploads.push({
        Key: encode(upload.key),
        UploadId: upload.id,
        Initiator: OWNER,
        Owner: OWNER,
        StorageClass: 'STANDARD',
        Initiated: upload.initiated.toISOString(),
      });
      nextKey = upload.key;
      nextId = upload.id;
    }
  }
  sendXml(
    ctx,
    200,
    xmlDocument('ListMultipartUploadsResult', {
      Bucket: ctx.config.bucket,
      KeyMarker: encode(keyMarker ?? ''),
      UploadIdMarker: idMarker ?? '',
      NextKeyMarker: truncated && nextKey !== undefined ? encode(nextKey) : undefined,
      NextUploadIdMarker: truncated && nextId !== undefined ? nextId : undefined,
      Delimiter: delimiter !== undefined ? encode(delimiter) : undefined,
      Prefix: encode(prefix),
      MaxUploads: maxUploads,
      EncodingType: encodingType ?? undefined,
      IsTruncated: truncated,
      Upload: uploads,
      CommonPrefixes: commonPrefixes,
    }),
  );
}
