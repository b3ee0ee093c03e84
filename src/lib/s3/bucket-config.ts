/**
 * Read-only bucket configuration queries, answered as S3 answers for a bucket that has none, so
 * that tools which probe them (s3cmd info, rclone, the consoles) stay quiet. Setting any of them
 * stays NotImplemented.
 */
import type { RequestContext } from './context.js';
import { type S3ErrorCode, s3Error } from './errors.js';
import { sendXml } from './respond.js';
import { xmlDocument } from './xml.js';

/** Sub-resources S3 answers with 404 and a code of its own when nothing is configured. */
const NOT_CONFIGURED: Record<string, [S3ErrorCode, string]> = {
  cors: ['NoSuchCORSConfiguration', 'The CORS configuration does not exist'],
  lifecycle: ['NoSuchLifecycleConfiguration', 'The lifecycle configuration does not exist'],
  policy: ['NoSuchBucketPolicy', 'The bucket policy does not exist'],
  tagging: ['NoSuchTagSet', 'The TagSet does not exist'],
  website: ['NoSuchWebsiteConfiguration', 'The specified bucket does not have a website configuration'],
  encryption: ['ServerSideEncryptionConfigurationNotFoundError', 'The server side encryption configuration was not found'],
  replication: ['ReplicationConfigurationNotFoundError', 'The replication configuration was not found'],
  'object-lock': ['ObjectLockConfigurationNotFoundError', 'Object Lock configuration does not exist for this bucket'],
  publicAccessBlock: ['NoSuchPublicAccessBlockConfiguration', 'The public access block configuration was not found'],
  ownershipControls: ['OwnershipControlsNotFoundError', 'The bucket ownership controls were not found'],
};

const OWNER = { ID: 'zipkv', DisplayName: 'zipkv' };

/** The owner's grant, with the grantee's type as S3 writes it (s3cmd reads the attribute). */
const ACL_DOCUMENT = xmlDocument('AccessControlPolicy', {
  Owner: OWNER,
  AccessControlList: { Grant: { Grantee: OWNER, Permission: 'FULL_CONTROL' } },
}).replace('<Grantee>', '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">');

/** Sub-resources S3 answers with a default document: the owner's ACL, or an empty configuration. */
const DEFAULTS: Record<string, string> = {
  acl: ACL_DOCUMENT,
  logging: xmlDocument('BucketLoggingStatus', {}),
  requestPayment: xmlDocument('RequestPaymentConfiguration', { Payer: 'BucketOwner' }),
  notification: xmlDocument('NotificationConfiguration', {}),
  accelerate: xmlDocument('AccelerateConfiguration', {}),
};

/** The read-only configuration queries answered here (GET of the bucket); writes are NotImplemented. */
export const BUCKET_CONFIG_QUERIES: readonly string[] = [...Object.keys(NOT_CONFIGURED), ...Object.keys(DEFAULTS)];

/** GET /bucket?<name> for one of BUCKET_CONFIG_QUERIES. */
export function getBucketConfig(name: string): (ctx: RequestContext) => void {
  return (ctx) => {
    const missing = NOT_CONFIGURED[name];
    if (missing) throw s3Error(missing[0], missing[1], { BucketName: ctx.config.bucket });
    sendXml(ctx, 200, DEFAULTS[name]!);
  };
}
