/**
 * Routing: from method, path and query to the handler of one S3 operation. Path style only
 * (`/bucket/key`); the key is the percent-decoded rest of the path.
 */
import type { RequestContext } from './context.js';
import { s3Error } from './errors.js';
import { createBucket, getBucketLocation, headBucket, listBuckets, listObjects } from './buckets.js';
import { BUCKET_CONFIG_QUERIES, getBucketConfig } from './bucket-config.js';
import { deleteObjects } from './delete-objects.js';
import { abortMultipartUpload, completeMultipartUpload, createMultipartUpload, uploadPart } from './multipart.js';
import { listMultipartUploads, listParts } from './multipart-list.js';
import { deleteObject, getObject, putObject } from './objects.js';
import { getBucketVersioning, listObjectVersions, putBucketVersioning } from './versions.js';

export type Handler = (ctx: RequestContext) => Promise<void> | void;

const getObjectHandler: Handler = (ctx) => getObject(ctx, false);
const headObjectHandler: Handler = (ctx) => getObject(ctx, true);

/** Sub-resources of S3 that zipkv does not implement: NotImplemented, never a wrong answer. */
const UNSUPPORTED = [
  'accelerate', 'acl', 'analytics', 'attributes', 'cors', 'encryption', 'intelligent-tiering', 'inventory',
  'legal-hold', 'lifecycle', 'logging', 'metrics', 'notification', 'object-lock', 'ownershipControls', 'policy',
  'policyStatus', 'publicAccessBlock', 'replication', 'requestPayment', 'restore', 'retention', 'select',
  'tagging', 'torrent', 'website',
];

export function route(ctx: RequestContext): Handler {
  const method = ctx.req.method ?? 'GET';
  const { query } = ctx;
  if (ctx.bucket === undefined) {
    // `//bucket/key`: the bucket segment is empty; answering for the root would be wrong.
    if (ctx.key !== undefined) throw s3Error('InvalidBucketName', 'The bucket name in the path is empty.', { BucketName: '' });
    if (method === 'GET') return listBuckets;
    throw s3Error('MethodNotAllowed');
  }
  if (ctx.bucket !== ctx.config.bucket) {
    throw s3Error('NoSuchBucket', undefined, { BucketName: ctx.bucket });
  }
  // Most requests (object GETs and PUTs) have no query at all: nothing to look for then.
  if (query.size > 0) {
    if (ctx.key === undefined && method === 'GET') {
      const config = BUCKET_CONFIG_QUERIES.find((name) => query.has(name));
      if (config) return getBucketConfig(config);
    }
    for (const name of UNSUPPORTED) {
      if (query.has(name)) throw s3Error('NotImplemented', `The ?${name} sub-resource is not implemented.`);
    }
  }
  if (ctx.key === undefined) {
    switch (method) {
      case 'GET':
        if (query.has('location')) return getBucketLocation;
        if (query.has('versioning')) return getBucketVersioning;
        if (query.has('versions')) return listObjectVersions;
        if (query.has('uploads')) return listMultipartUploads;
        return listObjects;
      case 'HEAD':
        return headBucket;
      case 'PUT':
        if (query.has('versioning')) return putBucketVersioning;
        return createBucket;
      case 'POST':
        if (query.has('delete')) return deleteObjects;
        throw s3Error('NotImplemented', 'POST to a bucket is implemented only for ?delete.');
      case 'DELETE':
        throw s3Error('NotImplemented', 'zipkv serves one bucket, which cannot be deleted.');
      default:
        throw s3Error('MethodNotAllowed');
    }
  }
  // A version id (a revision) is read by GET and HEAD, and refused by DELETE (history is
  // never erased): see objects.ts. Writes take none.
  const versionId = query.get('versionId');
  if (versionId !== null && method !== 'GET' && method !== 'HEAD' && method !== 'DELETE') {
    throw s3Error('InvalidArgument', 'A version id is not taken by this operation.', { ArgumentName: 'versionId', ArgumentValue: versionId });
  }
  const inUpload = query.has('uploadId');
  switch (method) {
    case 'GET':
      return inUpload ? listParts : getObjectHandler;
    case 'HEAD':
      return headObjectHandler;
    case 'PUT':
      if (inUpload || query.has('partNumber')) return uploadPart;
      return putObject;
    case 'POST':
      if (query.has('uploads')) return createMultipartUpload;
      if (inUpload) return completeMultipartUpload;
      throw s3Error('NotImplemented', 'POST object uploads (HTML forms) are not implemented.');
    case 'DELETE':
      return inUpload ? abortMultipartUpload : deleteObject;
    default:
      throw s3Error('MethodNotAllowed');
  }
}
