/** DeleteObjects (POST /bucket?delete): up to 1000 keys, per-key results, Quiet mode. */
import { createHash } from 'node:crypto';
import { readSmallBody } from './body.js';
import type { RequestContext } from './context.js';
import { header } from './context.js';
import { s3Error } from './errors.js';
import { MAX_KEY_BYTES } from './objects.js';
import { sendXml, toS3Error } from './respond.js';
import { type XmlNode, parseXml, xmlDocument, xmlText } from './xml.js';

const MAX_OBJECTS = 1000;
const MAX_BODY = 2 * 1024 * 1024;

export async function deleteObjects(ctx: RequestContext): Promise<void> {
  const body = await readSmallBody(ctx, MAX_BODY);
  if (header(ctx, 'content-md5') !== undefined) {
    if (createHash('md5').update(body).digest('base64') !== header(ctx, 'content-md5')!.trim()) throw s3Error('BadDigest');
  }
  const text = body.toString('utf8');
  // Count before parsing: a body of tens of thousands of entries would hold the event loop
  // for a second only to be refused.
  if ((text.match(/<(?:\w+:)?Object[\s>]/g)?.length ?? 0) > MAX_OBJECTS) throw s3Error('MalformedXML', `At most ${MAX_OBJECTS} keys can be deleted at once.`);
  const root = parseXml(text).Delete as Record<string, unknown> | undefined;
  if (!root || typeof root !== 'object') throw s3Error('MalformedXML');
  const objects = (root.Object as unknown[] | undefined) ?? [];
  if (objects.length === 0 || objects.length > MAX_OBJECTS) throw s3Error('MalformedXML');
  const keys = objects.map((o) => {
    const key = xmlText((o as Record<string, unknown>).Key);
    if (key === undefined) throw s3Error('MalformedXML');
    return key;
  });
  const quiet = xmlText(root.Quiet)?.trim().toLowerCase() === 'true';
  // Deletes of different keys run together and share the group commit; the reply lists the
  // keys in the order of the request.
  const outcomes = await Promise.all(
    keys.map(async (key): Promise<{ deleted?: XmlNode; error?: XmlNode }> => {
      try {
        if (Buffer.byteLength(key) > MAX_KEY_BYTES || key === '') throw s3Error('KeyTooLongError');
        await ctx.store.delete(key);
        return { deleted: { Key: key } };
      } catch (err) {
        const e = toS3Error(err);
        return { error: { Key: key, Code: e.code, Message: e.message } };
      }
    }),
  );
  const deleted = quiet ? [] : outcomes.flatMap((o) => (o.deleted ? [o.deleted] : []));
  const errors = outcomes.flatMap((o) => (o.error ? [o.error] : []));
  sendXml(ctx, 200, xmlDocument('DeleteResult', { Deleted: deleted, Error: errors }));
}
