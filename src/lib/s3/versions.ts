/**
 * Versions over S3: the history zipkv keeps anyway, browsed as S3 versions. A version id is the
 * revision of its record, as `zipkv history` prints it and `zipkv rebase --to` takes it.
 * Versioning is always on: history is always kept.
 */
import type { RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { keyEncoding, parseMaxKeys } from './buckets.js';
import { quoteEtag } from './objects.js';
import { readSmallBody } from './body.js';
import { sendEmpty, sendXml } from './respond.js';
import { XmlSequence, type XmlValue, parseXml, xmlDocument, xmlText } from './xml.js';

const OWNER = { ID: 'zipkv', DisplayName: 'zipkv' };

/** A version id as the client sent it: a revision, or InvalidArgument. */
export function parseVersionId(value: string): number {
  if (!/^\d{1,15}$/.test(value)) {
    throw s3Error('InvalidArgument', 'Invalid version id specified', { ArgumentName: 'versionId', ArgumentValue: value });
  }
  return Number(value);
}

export function getBucketVersioning(ctx: RequestContext): void {
  sendXml(ctx, 200, xmlDocument('VersioningConfiguration', { Status: 'Enabled' }));
}

/** `Enabled` changes nothing (it is always on); `Suspended` would stop keeping history: refused. */
export async function putBucketVersioning(ctx: RequestContext): Promise<void> {
  const body = parseXml((await readSmallBody(ctx, 64 * 1024)).toString('utf8'));
  const config = body['VersioningConfiguration'] as Record<string, unknown> | undefined;
  const status = config && typeof config === 'object' ? xmlText(config['Status']) : undefined;
  if (status === 'Enabled') return sendEmpty(ctx, 200);
  if (status === 'Suspended') {
    throw s3Error('InvalidArgument', 'Versioning cannot be suspended: zipkv always keeps the history (see zipkv rebase to forget it).', {
      ArgumentName: 'Status',
      ArgumentValue: status,
    });
  }
  throw s3Error('MalformedXML');
}

export async function listObjectVersions(ctx: RequestContext): Promise<void> {
  const { query } = ctx;
  const { encode, encodingType } = keyEncoding(ctx);
  const prefix = query.get('prefix') ?? '';
  const delimiter = query.get('delimiter') || undefined;
  const keyMarker = query.get('key-marker') ?? '';
  const versionIdMarkerText = query.get('version-id-marker') ?? '';
  const maxKeys = parseMaxKeys(ctx);
  if (versionIdMarkerText !== '' && keyMarker === '') {
    throw s3Error('InvalidArgument', 'A version-id marker cannot be specified without a key marker.', {
      ArgumentName: 'version-id-marker',
      ArgumentValue: versionIdMarkerText,
    });
  }
  const versionIdMarker = versionIdMarkerText === '' ? undefined : parseVersionId(versionIdMarkerText);
  const page = await ctx.store.listVersions({ prefix, delimiter, keyMarker: keyMarker || undefined, versionIdMarker, limit: maxKeys });
  const entries: Array<[string, XmlValue]> = [];
  for (const v of page.versions) {
    const common = { Key: encode(v.key), VersionId: String(v.revision), IsLatest: v.isLatest };
    if (!v.entry) {
      // Deletes the original wrote kept no time: their markers carry the epoch.
      entries.push(['DeleteMarker', { ...common, LastModified: (v.deletedAt ?? new Date(0)).toISOString(), Owner: OWNER }]);
      continue;
    }
    const info = ctx.store.versionInfo({ ...v, entry: v.entry });
    entries.push([
      'Version',
      {
        ...common,
        LastModified: info.lastModified.toISOString(),
        ETag: quoteEtag(info.etag ?? (await ctx.store.etagOf(info))),
        Size: info.size,
        Owner: OWNER,
        StorageClass: 'STANDARD',
      },
    ]);
  }
  sendXml(
    ctx,
    200,
    xmlDocument('ListVersionsResult', {
      Name: ctx.config.bucket,
      Prefix: encode(prefix),
      KeyMarker: encode(keyMarker),
      VersionIdMarker: versionIdMarkerText,
      NextKeyMarker: page.truncated && page.nextKeyMarker !== undefined ? encode(page.nextKeyMarker) : undefined,
      NextVersionIdMarker: page.truncated && page.nextVersionIdMarker !== undefined ? String(page.nextVersionIdMarker) : undefined,
      MaxKeys: maxKeys,
      Delimiter: delimiter !== undefined ? encode(delimiter) : undefined,
      EncodingType: encodingType ?? undefined,
      IsTruncated: page.truncated,
      Entries: new XmlSequence(entries),
      CommonPrefixes: page.commonPrefixes.map((p) => ({ Prefix: encode(p) })),
    }),
  );
}
