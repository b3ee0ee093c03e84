import { createHash, createHmac, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { expect } from 'chai';
import { rawExchange, rawRequest, statusOf, xmlField } from '../helpers/http.js';
import { TEST_CREDENTIALS, bodyBytes, clientFor, startServer, type TestServer, s3Fails, md5 } from '../helpers/server.js';

const sha256 = (b: string) => createHash('sha256').update(b).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();


/** Records the x-amz-content-sha256 of every request a client sends, as signed. */
function recordPayloadModes(client: S3Client): string[] {
  const seen: string[] = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers ?? {};
      seen.push(headers['x-amz-content-sha256'] ?? '');
      return next(args);
    },
    { step: 'deserialize', name: 'recordPayloadMode' },
  );
  return seen;
}

/** A V2 `Authorization` header as S3QL's s3c:// backend computes it. */
function v2Headers(method: string, resource: string, headers: Record<string, string>, secret = TEST_CREDENTIALS.secretKey): Record<string, string> {
  const date = new Date().toUTCString();
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const amz = Object.keys(lower)
    .filter((k) => k.startsWith('x-amz-'))
    .sort()
    .map((k) => `${k}:${lower[k]!.trim()}\n`)
    .join('');
  const toSign = `${method}\n${lower['content-md5'] ?? ''}\n${lower['content-type'] ?? ''}\n${date}\n${amz}${resource}`;
  const signature = createHmac('sha1', secret).update(toSign, 'utf8').digest('base64');
  return { ...headers, Date: date, Authorization: `AWS ${TEST_CREDENTIALS.accessKey}:${signature}` };
}

const rfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** A V4 presigned URL path, built here from the specification (UNSIGNED-PAYLOAD, host signed). */
function presign(method: string, port: number, key: string, opts: { expires?: number; date?: Date; secret?: string } = {}): string {
  const date = opts.date ?? new Date();
  const amzDate = date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const scope = `${day}/us-east-1/s3/aws4_request`;
  const path = `/bucket/${key.split('/').map(rfc3986).join('/')}`;
  const params: Record<string, string> = {
    'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
    'X-Amz-Credential': `${TEST_CREDENTIALS.accessKey}/${scope}`,
    'X-Amz-Date': amzDate,
    'X-Amz-Expires': String(opts.expires ?? 300),
    'X-Amz-SignedHeaders': 'host',
  };
  const query = Object.keys(params)
    .sort()
    .map((k) => `${rfc3986(k)}=${rfc3986(params[k]!)}`)
    .join('&');
  const canonical = [method, path, query, `host:127.0.0.1:${port}\n`, 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  let key4 = hmac(`AWS4${opts.secret ?? TEST_CREDENTIALS.secretKey}`, day);
  for (const part of ['us-east-1', 's3', 'aws4_request']) key4 = hmac(key4, part);
  const signature = createHmac('sha256', key4).update(toSign).digest('hex');
  return `${path}?${query}&X-Amz-Signature=${signature}`;
}

describe('s3: authentication through the server', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer({ credentials: TEST_CREDENTIALS });
  });
  after(async () => {
    await t.stop();
  });

  it('SDK requests signed with V4 succeed: header-signed and streaming (aws-chunked) bodies', async () => {
    const client = clientFor(t.url);
    const modes = recordPayloadModes(client);
    try {
      const body = randomBytes(3000);
      const put = await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'v4/plain ü', Body: body, Metadata: { who: 'sdk' } }));
      expect(put.ETag).to.equal(`"${md5(body)}"`);
      const streamed = randomBytes(200_000);
      await client.send(
        new PutObjectCommand({ Bucket: 'bucket', Key: 'v4/streamed', Body: Readable.from([streamed.subarray(0, 70_000), streamed.subarray(70_000)]), ContentLength: streamed.length }),
      );
      const get = await client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'v4/streamed' }));
      expect(md5(await bodyBytes(get.Body))).to.equal(md5(streamed));
      const head = await client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'v4/plain ü' }));
      expect(head.Metadata).to.deep.equal({ who: 'sdk' });
      const list = await client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'v4/' }));
      expect(list.Contents!.map((c) => c.Key)).to.deep.equal(['v4/plain ü', 'v4/streamed']);
      const big = randomBytes(6 * 1024 * 1024);
      await new Upload({ client, params: { Bucket: 'bucket', Key: 'v4/multipart', Body: big }, partSize: 5 * 1024 * 1024 }).done();
      expect(t.store.head('v4/multipart')?.size).to.equal(big.length);
      await client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'v4/plain ü' }));
      expect(t.store.head('v4/plain ü')).to.equal(undefined);
    } finally {
      client.destroy();
    }
    expect(modes).to.include('STREAMING-UNSIGNED-PAYLOAD-TRAILER');
    expect(modes.some((m) => /^[0-9a-f]{64}$/.test(m) || m === 'UNSIGNED-PAYLOAD')).to.equal(true);
  });

  it('a wrong secret is SignatureDoesNotMatch (403) and stores nothing', async () => {
    const client = clientFor(t.url, { accessKey: TEST_CREDENTIALS.accessKey, secretKey: 'wrong' });
    try {
      const put = await s3Fails(client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'wrong-secret', Body: 'x' })));
      expect(put.name).to.equal('SignatureDoesNotMatch');
      expect(put.$metadata.httpStatusCode).to.equal(403);
      const list = await s3Fails(client.send(new ListObjectsV2Command({ Bucket: 'bucket' })));
      expect(list.name).to.equal('SignatureDoesNotMatch');
    } finally {
      client.destroy();
    }
    expect(t.store.head('wrong-secret')).to.equal(undefined);
  });

  it('an unknown access key is InvalidAccessKeyId (403)', async () => {
    const client = clientFor(t.url, { accessKey: 'nobody', secretKey: TEST_CREDENTIALS.secretKey });
    try {
      const err = await s3Fails(client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'x' })));
      expect(err.name).to.equal('InvalidAccessKeyId');
      expect(err.$metadata.httpStatusCode).to.equal(403);
    } finally {
      client.destroy();
    }
  });

  it('unsigned raw requests are AccessDenied (403), whatever the operation', async () => {
    await t.store.put('secret', Buffer.from('hidden'));
    for (const [method, path] of [
      ['GET', '/bucket/secret'],
      ['HEAD', '/bucket/secret'],
      ['GET', '/bucket/'],
      ['GET', '/'],
      ['DELETE', '/bucket/secret'],
      ['PUT', '/bucket/new'],
    ] as const) {
      const res = await rawRequest(t.port, { method, path, headers: { 'Content-Length': '0' } });
      expect(res.status, `${method} ${path}`).to.equal(403);
      if (method !== 'HEAD') expect(xmlField(res.body, 'Code'), `${method} ${path}`).to.equal('AccessDenied');
    }
    expect(t.store.head('secret')).to.not.equal(undefined);
    expect(t.store.head('new')).to.equal(undefined);
  });

  it('V2-signed raw requests as S3QL sends them succeed; a bad signature fails', async () => {
    const body = randomBytes(5000);
    const key = 's3ql_data_1 x';
    const resource = `/bucket/${encodeURIComponent(key)}`;
    const putHeaders = {
      'Content-Type': 'application/octet-stream',
      'Content-MD5': createHash('md5').update(body).digest('base64'),
      'x-amz-meta-format': 'raw2',
      'x-amz-meta-000': "'a': b'c'!",
    };
    const put = await rawRequest(t.port, { method: 'PUT', path: resource, headers: { ...v2Headers('PUT', resource, putHeaders), 'Content-Length': body.length }, body });
    expect(put.status, put.body.toString()).to.equal(200);
    expect(put.headers.etag).to.equal(`"${md5(body)}"`);

    const get = await rawRequest(t.port, { path: resource, headers: { ...v2Headers('GET', resource, {}), 'Content-Length': '0' } });
    expect(get.status).to.equal(200);
    expect(md5(get.body)).to.equal(md5(body));
    expect(get.headers['x-amz-meta-000']).to.equal("'a': b'c'!");

    const list = await rawRequest(t.port, { path: '/bucket/?prefix=s3ql_&max-keys=1', headers: v2Headers('GET', '/bucket/', {}) });
    expect(list.status).to.equal(200);
    expect(xmlField(list.body, 'Key')).to.equal(key);

    // botocore signs a request for `/bucket` (ListObjects) over the resource `/bucket/`.
    for (const signed of ['/bucket/', '/bucket']) {
      const bare = await rawRequest(t.port, { path: '/bucket?prefix=s3ql_&encoding-type=url', headers: v2Headers('GET', signed, {}) });
      expect(bare.status, signed).to.equal(200);
    }
    const wrongBucket = await rawRequest(t.port, { path: '/bucket?prefix=s3ql_', headers: v2Headers('GET', '/other/', {}) });
    expect(xmlField(wrongBucket.body, 'Code')).to.equal('SignatureDoesNotMatch');

    const bad = await rawRequest(t.port, { path: resource, headers: v2Headers('GET', resource, {}, 'not-the-secret') });
    expect(bad.status).to.equal(403);
    expect(xmlField(bad.body, 'Code')).to.equal('SignatureDoesNotMatch');
    // A signature for another key does not open this one.
    const other = await rawRequest(t.port, { path: resource, headers: v2Headers('GET', '/bucket/other', {}) });
    expect(xmlField(other.body, 'Code')).to.equal('SignatureDoesNotMatch');
    // A signed PUT whose metadata changed on the way is refused and stores nothing.
    const tampered = { ...v2Headers('PUT', '/bucket/tampered', putHeaders), 'x-amz-meta-format': 'raw3', 'Content-Length': body.length };
    const refused = await rawRequest(t.port, { method: 'PUT', path: '/bucket/tampered', headers: tampered, body });
    expect(xmlField(refused.body, 'Code')).to.equal('SignatureDoesNotMatch');
    expect(t.store.head('tampered')).to.equal(undefined);
  });

  it('a refused upload with Expect: 100-continue gets its error instead of "100 Continue"', async () => {
    const resource = '/bucket/expect-denied';
    const headers = v2Headers('PUT', resource, { 'Content-Type': 'application/octet-stream' }, 'wrong');
    const lines = Object.entries({ ...headers, Host: '127.0.0.1', 'Content-Length': '1000', Expect: '100-continue' }).map(([k, v]) => `${k}: ${v}`);
    const reply = await rawExchange(t.port, `PUT ${resource} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`, { idleMs: 300 });
    expect(reply).to.not.contain('100 Continue');
    expect(statusOf(reply)).to.equal(403);
    expect(xmlField(reply, 'Code')).to.equal('SignatureDoesNotMatch');
    const unsigned = await rawExchange(t.port, `PUT ${resource} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n`, { idleMs: 300 });
    expect(statusOf(unsigned)).to.equal(403);
    expect(unsigned).to.not.contain('100 Continue');
    expect(t.store.head('expect-denied')).to.equal(undefined);
  });

  it('a presigned GET URL works until it expires; a forged one never does', async () => {
    await t.store.put('pre/signed ü', Buffer.from('presigned body'));
    const ok = await rawRequest(t.port, { path: presign('GET', t.port, 'pre/signed ü') });
    expect(ok.status, ok.body.toString()).to.equal(200);
    expect(ok.body.toString()).to.equal('presigned body');

    const expired = await rawRequest(t.port, { path: presign('GET', t.port, 'pre/signed ü', { expires: 60, date: new Date(Date.now() - 3600_000) }) });
    expect(expired.status).to.equal(403);
    expect(xmlField(expired.body, 'Code')).to.equal('AccessDenied');
    expect(xmlField(expired.body, 'Message')).to.match(/expired/);

    const forged = await rawRequest(t.port, { path: presign('GET', t.port, 'pre/signed ü', { secret: 'guess' }) });
    expect(xmlField(forged.body, 'Code')).to.equal('SignatureDoesNotMatch');
    const moved = presign('GET', t.port, 'pre/signed ü').replace('/bucket/pre/', '/bucket/pro/');
    expect(xmlField((await rawRequest(t.port, { path: moved })).body, 'Code')).to.equal('SignatureDoesNotMatch');
    // The URL is for GET only.
    const put = await rawRequest(t.port, { method: 'PUT', path: presign('GET', t.port, 'pre/signed ü'), body: 'overwrite' });
    expect(put.status).to.equal(403);
    expect((await t.store.read(t.store.head('pre/signed ü')!)).toString()).to.equal('presigned body');
  });

  it('a presigned PUT URL stores the body', async () => {
    const res = await rawRequest(t.port, { method: 'PUT', path: presign('PUT', t.port, 'pre/put'), body: 'via url' });
    expect(res.status, res.body.toString()).to.equal(200);
    expect((await t.store.read(t.store.head('pre/put')!)).toString()).to.equal('via url');
  });
});

describe('s3: a server without credentials accepts every request', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
  });
  after(async () => {
    await t.stop();
  });

  it('unsigned, V2 and V4 requests with any keys all succeed', async () => {
    const put = await rawRequest(t.port, { method: 'PUT', path: '/bucket/anon', body: 'anonymous' });
    expect(put.status).to.equal(200);
    const v2 = await rawRequest(t.port, { path: '/bucket/anon', headers: v2Headers('GET', '/bucket/anon', {}, 'whatever') });
    expect(v2.status).to.equal(200);
    expect(v2.body.toString()).to.equal('anonymous');
    const client = clientFor(t.url, { accessKey: 'any', secretKey: 'thing' });
    try {
      const get = await client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'anon' }));
      expect((await bodyBytes(get.Body)).toString()).to.equal('anonymous');
      await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'streamed', Body: Readable.from([Buffer.from('abc')]), ContentLength: 3 }));
      expect((await t.store.read(t.store.head('streamed')!)).toString()).to.equal('abc');
    } finally {
      client.destroy();
    }
    const presigned = await rawRequest(t.port, { path: presign('GET', t.port, 'anon', { secret: 'x', date: new Date(0) }) });
    expect(presigned.status).to.equal(200);
  });
});
