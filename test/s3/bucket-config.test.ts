/**
 * Read-only bucket configuration queries, answered as S3 answers for a bucket that has none
 * (tools such as s3cmd info, rclone and the consoles probe them), through the AWS SDK (V4) and
 * raw V2-signed requests as s3cmd sends them; setting any of them stays NotImplemented.
 */
import { createHmac } from 'node:crypto';
import {
  GetBucketAccelerateConfigurationCommand,
  GetBucketAclCommand,
  GetBucketCorsCommand,
  GetBucketEncryptionCommand,
  GetBucketLifecycleConfigurationCommand,
  GetBucketLoggingCommand,
  GetBucketNotificationConfigurationCommand,
  GetBucketOwnershipControlsCommand,
  GetBucketPolicyCommand,
  GetBucketReplicationCommand,
  GetBucketRequestPaymentCommand,
  GetBucketTaggingCommand,
  GetBucketWebsiteCommand,
  GetObjectLockConfigurationCommand,
  GetPublicAccessBlockCommand,
} from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { type RawResponse, rawRequest, xmlField } from '../helpers/http.js';
import { TEST_CREDENTIALS, startServer, type TestServer, s3Fails } from '../helpers/server.js';

const NOT_CONFIGURED: Array<[string, string]> = [
  ['cors', 'NoSuchCORSConfiguration'],
  ['lifecycle', 'NoSuchLifecycleConfiguration'],
  ['policy', 'NoSuchBucketPolicy'],
  ['tagging', 'NoSuchTagSet'],
  ['website', 'NoSuchWebsiteConfiguration'],
  ['encryption', 'ServerSideEncryptionConfigurationNotFoundError'],
  ['replication', 'ReplicationConfigurationNotFoundError'],
  ['object-lock', 'ObjectLockConfigurationNotFoundError'],
  ['publicAccessBlock', 'NoSuchPublicAccessBlockConfiguration'],
  ['ownershipControls', 'OwnershipControlsNotFoundError'],
];
const DEFAULTS: Array<[string, string]> = [
  ['acl', 'AccessControlPolicy'],
  ['logging', 'BucketLoggingStatus'],
  ['requestPayment', 'RequestPaymentConfiguration'],
  ['notification', 'NotificationConfiguration'],
  ['accelerate', 'AccelerateConfiguration'],
];

/** A request signed with V2 as s3cmd signs it: the sub-resource is part of the signed resource. */
function v2Request(port: number, method: string, path: string, body?: string): Promise<RawResponse> {
  const date = new Date().toUTCString();
  const contentType = body === undefined ? '' : 'application/xml';
  const signature = createHmac('sha1', TEST_CREDENTIALS.secretKey).update(`${method}\n\n${contentType}\n${date}\n${path}`).digest('base64');
  const headers: Record<string, string> = { Date: date, Authorization: `AWS ${TEST_CREDENTIALS.accessKey}:${signature}` };
  if (body !== undefined) headers['Content-Type'] = contentType;
  return rawRequest(port, { method, path, headers, body });
}

describe('s3: bucket configuration queries', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer({ credentials: TEST_CREDENTIALS });
  });
  after(async () => {
    await t.stop();
  });

  it('each configuration the bucket does not have is S3\'s 404 with its own error (AWS SDK)', async () => {
    const bucket = { Bucket: 'bucket' };
    for (const [command, name] of [
      [new GetBucketCorsCommand(bucket), 'NoSuchCORSConfiguration'],
      [new GetBucketLifecycleConfigurationCommand(bucket), 'NoSuchLifecycleConfiguration'],
      [new GetBucketPolicyCommand(bucket), 'NoSuchBucketPolicy'],
      [new GetBucketTaggingCommand(bucket), 'NoSuchTagSet'],
      [new GetBucketWebsiteCommand(bucket), 'NoSuchWebsiteConfiguration'],
      [new GetBucketEncryptionCommand(bucket), 'ServerSideEncryptionConfigurationNotFoundError'],
      [new GetBucketReplicationCommand(bucket), 'ReplicationConfigurationNotFoundError'],
      [new GetObjectLockConfigurationCommand(bucket), 'ObjectLockConfigurationNotFoundError'],
      [new GetPublicAccessBlockCommand(bucket), 'NoSuchPublicAccessBlockConfiguration'],
      [new GetBucketOwnershipControlsCommand(bucket), 'OwnershipControlsNotFoundError'],
    ] as const) {
      const err = await s3Fails(t.client.send(command as never));
      expect(err.name, name).to.equal(name);
      expect(err.$metadata.httpStatusCode, name).to.equal(404);
    }
  });

  it('the ACL, logging, request payment, notification and accelerate queries answer S3\'s defaults (AWS SDK)', async () => {
    const bucket = { Bucket: 'bucket' };
    const acl = await t.client.send(new GetBucketAclCommand(bucket));
    expect(acl.Owner?.ID).to.equal('zipkv');
    expect(acl.Grants).to.have.length(1);
    expect(acl.Grants![0]!.Permission).to.equal('FULL_CONTROL');
    expect(acl.Grants![0]!.Grantee).to.deep.include({ ID: 'zipkv', Type: 'CanonicalUser' });
    const logging = await t.client.send(new GetBucketLoggingCommand(bucket));
    expect(logging.LoggingEnabled).to.equal(undefined);
    const payment = await t.client.send(new GetBucketRequestPaymentCommand(bucket));
    expect(payment.Payer).to.equal('BucketOwner');
    const notification = await t.client.send(new GetBucketNotificationConfigurationCommand(bucket));
    expect(notification.TopicConfigurations ?? []).to.deep.equal([]);
    expect(notification.QueueConfigurations ?? []).to.deep.equal([]);
    expect(notification.LambdaFunctionConfigurations ?? []).to.deep.equal([]);
    const accelerate = await t.client.send(new GetBucketAccelerateConfigurationCommand(bucket));
    expect(accelerate.$metadata.httpStatusCode).to.equal(200);
    expect(accelerate.Status).to.equal(undefined);
  });

  it('V2-signed as s3cmd sends them (GET /bucket/?cors ...), every query authenticates and gets the same answer', async () => {
    for (const [name, code] of NOT_CONFIGURED) {
      const res = await v2Request(t.port, 'GET', `/bucket/?${name}`);
      expect(res.status, `${name}: ${res.body.toString()}`).to.equal(404);
      expect(xmlField(res.body, 'Code'), name).to.equal(code);
      expect(xmlField(res.body, 'BucketName'), name).to.equal('bucket');
    }
    for (const [name, root] of DEFAULTS) {
      const res = await v2Request(t.port, 'GET', `/bucket/?${name}`);
      expect(res.status, `${name}: ${res.body.toString()}`).to.equal(200);
      expect(res.headers['content-type']).to.equal('application/xml');
      expect(res.body.toString(), name).to.match(new RegExp(`^<\\?xml[^>]*\\?>\\n<${root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`));
    }
    const acl = (await v2Request(t.port, 'GET', '/bucket/?acl')).body.toString();
    expect(acl).to.include('<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>zipkv</ID>');
    expect(xmlField((await v2Request(t.port, 'GET', '/bucket/?requestPayment')).body, 'Payer')).to.equal('BucketOwner');
  });

  it('setting or deleting any of them stays NotImplemented (501) and changes nothing', async () => {
    const revision = t.store.revision;
    for (const [name] of [...NOT_CONFIGURED, ...DEFAULTS]) {
      for (const method of ['PUT', 'DELETE']) {
        const res = await v2Request(t.port, method, `/bucket/?${name}`, method === 'PUT' ? '<Configuration/>' : undefined);
        expect(res.status, `${method} ?${name}: ${res.body.toString()}`).to.equal(501);
        expect(xmlField(res.body, 'Code')).to.equal('NotImplemented');
      }
    }
    // Still 404 afterwards: nothing was set.
    const cors = await v2Request(t.port, 'GET', '/bucket/?cors');
    expect(xmlField(cors.body, 'Code')).to.equal('NoSuchCORSConfiguration');
    expect(t.store.revision).to.equal(revision);
  });

  it('on an object, the same queries stay NotImplemented; another bucket is NoSuchBucket', async () => {
    const res = await v2Request(t.port, 'GET', '/bucket/some-key?acl');
    expect(res.status).to.equal(501);
    const other = await v2Request(t.port, 'GET', '/other/?cors');
    expect(other.status).to.equal(404);
    expect(xmlField(other.body, 'Code')).to.equal('NoSuchBucket');
  });
});
