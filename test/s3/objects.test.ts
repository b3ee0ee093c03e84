import { randomBytes } from 'node:crypto';
import http from 'node:http';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { rawRequest } from '../helpers/http.js';
import { bodyBytes, startServer, type TestServer, s3Fails, md5 } from '../helpers/server.js';



describe('s3: objects (AWS SDK)', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
  });
  after(async () => {
    await t.stop();
  });

  it('PUT then GET returns the bytes, the quoted MD5 ETag, metadata and standard headers', async () => {
    const body = randomBytes(10_000);
    const put = await t.client.send(
      new PutObjectCommand({
        Bucket: 'bucket',
        Key: 'dir/obj one+%.bin',
        Body: body,
        ContentType: 'application/x-test',
        CacheControl: 'max-age=60',
        ContentDisposition: 'attachment; filename="x"',
        ContentEncoding: 'identity',
        Metadata: { camelCase: 'Value With Spaces', md5: 'a=b;c=d,e:f/8' },
      }),
    );
    expect(put.ETag).to.equal(`"${md5(body)}"`);
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'dir/obj one+%.bin' }));
    expect(md5(await bodyBytes(get.Body))).to.equal(md5(body));
    expect(get.ETag).to.equal(`"${md5(body)}"`);
    expect(get.ContentLength).to.equal(body.length);
    expect(get.ContentType).to.equal('application/x-test');
    expect(get.CacheControl).to.equal('max-age=60');
    expect(get.ContentDisposition).to.equal('attachment; filename="x"');
    expect(get.Metadata).to.deep.equal({ camelcase: 'Value With Spaces', md5: 'a=b;c=d,e:f/8' });
    expect(get.LastModified).to.be.instanceOf(Date);
    expect(Math.abs(get.LastModified!.getTime() - Date.now())).to.be.below(5000);
  });

  it('S3QL metadata values come back byte for byte', async () => {
    const value = `!@#$^*()=+/?-_'"><\\| .,;:~%20`;
    const meta: Record<string, string> = { format: 'raw2', md5: 'qHB1WQ8QeQ3lkUPRT5z+WQ==' };
    for (let i = 0; i < 8; i++) meta[`${String(i).padStart(3, '0')}`] = `${value}${i}`.repeat(8);
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 's3ql_metadata', Body: 'x', Metadata: meta }));
    const head = await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 's3ql_metadata' }));
    expect(head.Metadata).to.deep.equal(meta);
    expect(head.ContentLength).to.equal(1);
  });

  it('GET and HEAD headers of metadata stored in any case (as the original wrote it): names as S3 sends them, nothing else', async () => {
    const modifiedMs = Date.UTC(2024, 1, 29, 23, 59, 58);
    await t.store.put('stored-by-go', Buffer.from('abc'), {
      modifiedMs,
      metadata: { 'X-Amz-Meta-Owner': 'go', 'x-amz-meta-plain': 'p', 'content-type': 'text/x-go', 'Cache-Control': 'no-store', constructor: 'c', 'X-Other': 'o' },
    });
    for (const method of ['GET', 'HEAD']) {
      for (let i = 0; i < 2; i++) {
        const res = await rawRequest(t.port, { method, path: '/bucket/stored-by-go' });
        expect(res.status).to.equal(200);
        expect(res.headers['content-type']).to.equal('text/x-go');
        expect(res.headers['cache-control']).to.equal('no-store');
        expect(res.headers['x-amz-meta-owner']).to.equal('go');
        expect(res.headers['x-amz-meta-plain']).to.equal('p');
        expect(res.headers['last-modified']).to.equal('Thu, 29 Feb 2024 23:59:58 GMT');
        expect(res.headers['content-length']).to.equal('3');
        expect(res.headers['accept-ranges']).to.equal('bytes');
        expect(Object.keys(res.headers)).to.not.include('constructor').and.not.include('x-other');
      }
    }
    const plain = await rawRequest(t.port, { path: '/bucket/h-default' }); // not there yet
    expect(plain.status).to.equal(404);
    await t.store.put('h-default', Buffer.from('x'));
    expect((await rawRequest(t.port, { method: 'HEAD', path: '/bucket/h-default' })).headers['content-type']).to.equal('binary/octet-stream');
  });

  it('HEAD gives Content-Length, Content-Type, ETag and Last-Modified', async () => {
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'h', Body: 'hello' }));
    const head = await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'h' }));
    expect(head.ContentLength).to.equal(5);
    expect(head.ETag).to.equal(`"${md5(Buffer.from('hello'))}"`);
    expect(head.ContentType).to.be.a('string');
    expect(head.LastModified).to.be.instanceOf(Date);
  });

  it('a missing key is NoSuchKey on GET and 404 on HEAD', async () => {
    const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'missing' })));
    expect(err.name).to.equal('NoSuchKey');
    expect(err.$metadata.httpStatusCode).to.equal(404);
    const head = await s3Fails(t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'missing' })));
    expect(head.$metadata.httpStatusCode).to.equal(404);
  });

  it('a bad Content-MD5 is BadDigest and stores nothing', async () => {
    const err = await s3Fails(
      t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'bad-md5', Body: 'abc', ContentMD5: Buffer.alloc(16).toString('base64') })),
    );
    expect(err.name).to.equal('BadDigest');
    expect(t.store.head('bad-md5')).to.equal(undefined);
  });

  it('zero-length objects', async () => {
    const put = await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'empty', Body: '' }));
    expect(put.ETag).to.equal('"d41d8cd98f00b204e9800998ecf8427e"');
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'empty' }));
    expect((await bodyBytes(get.Body)).length).to.equal(0);
  });

  it('DELETE answers 204, also for a missing key, and the key is gone', async () => {
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'gone', Body: 'x' }));
    const del = await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'gone' }));
    expect(del.$metadata.httpStatusCode).to.equal(204);
    const again = await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'gone' }));
    expect(again.$metadata.httpStatusCode).to.equal(204);
    expect(t.store.head('gone')).to.equal(undefined);
  });

  it('Range GET: a-b, a-, -n, and 416 past the end', async () => {
    const body = randomBytes(1000);
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'ranged', Body: body }));
    const cases: Array<[string, number, number]> = [
      ['bytes=10-19', 10, 19],
      ['bytes=990-', 990, 999],
      ['bytes=-5', 995, 999],
      ['bytes=900-5000', 900, 999],
    ];
    for (const [range, start, end] of cases) {
      const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'ranged', Range: range }));
      expect(get.$metadata.httpStatusCode, range).to.equal(206);
      expect(get.ContentRange, range).to.equal(`bytes ${start}-${end}/1000`);
      expect((await bodyBytes(get.Body)).equals(body.subarray(start, end + 1)), range).to.equal(true);
    }
    const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'ranged', Range: 'bytes=1000-' })));
    expect(err.$metadata.httpStatusCode).to.equal(416);
    expect(err.name).to.equal('InvalidRange');
  });

  it('large objects stream with ranges across them', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 7);
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'large', Body: body }));
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'large' }));
    expect(md5(await bodyBytes(get.Body))).to.equal(md5(body));
    const part = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'large', Range: 'bytes=1048570-2097160' }));
    expect((await bodyBytes(part.Body)).equals(body.subarray(1048570, 2097161))).to.equal(true);
  });

  it('many large GETs at once, some cut off by their client, each complete one byte-exact (read buffers are reused)', async function () {
    this.timeout(60_000);
    const bodies = [0, 1, 2].map((i) => randomBytes(6 * 1024 * 1024 + 1000 * i + 7));
    for (let i = 0; i < bodies.length; i++) await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: `many/${i}`, Body: bodies[i] }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 12 });
    try {
      const get = (i: number, cut: boolean, range?: [number, number]) =>
        new Promise<Buffer | undefined>((resolve, reject) => {
          const req = http.get(`${t.url}/bucket/many/${i}`, { agent, headers: range ? { Range: `bytes=${range[0]}-${range[1]}` } : {} }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => {
              chunks.push(c);
              if (cut && chunks.length === 1) {
                req.destroy();
                resolve(undefined);
              } else if (chunks.length === 1) {
                // A slow reader: the socket fills, and the server's writes wait with their buffers.
                res.pause();
                setTimeout(() => res.resume(), 30);
              }
            });
            res.on('end', () => resolve(Buffer.concat(chunks)));
            res.on('error', (err) => (cut ? resolve(undefined) : reject(err)));
          });
          req.on('error', (err) => (cut ? resolve(undefined) : reject(err)));
        });
      for (let round = 0; round < 3; round++) {
        const asked = Array.from({ length: 12 }, (_, n) => ({ i: n % 3, cut: n % 4 === 3, range: n % 5 === 1 ? ([1000, 1024 * 1024 + 5000] as [number, number]) : undefined }));
        const got = await Promise.all(asked.map((a) => get(a.i, a.cut, a.range)));
        asked.forEach((a, n) => {
          if (a.cut) return;
          const expected = a.range ? bodies[a.i]!.subarray(a.range[0], a.range[1] + 1) : bodies[a.i]!;
          expect(md5(got[n]!), `GET ${n} of many/${a.i}`).to.equal(md5(expected));
        });
      }
    } finally {
      agent.destroy();
    }
  });

  it('conditional GET: If-None-Match -> 304, If-Match mismatch -> 412, dates', async () => {
    const put = await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'cond', Body: 'c' }));
    const notModified = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfNoneMatch: put.ETag })));
    expect(notModified.$metadata.httpStatusCode).to.equal(304);
    const failed = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfMatch: '"0000"' })));
    expect(failed.$metadata.httpStatusCode).to.equal(412);
    const ok = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfMatch: put.ETag }));
    expect(ok.$metadata.httpStatusCode).to.equal(200);
    const future = new Date(Date.now() + 3600_000);
    const past = new Date(Date.now() - 3600_000);
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfModifiedSince: future })))).$metadata.httpStatusCode).to.equal(304);
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfUnmodifiedSince: past })))).$metadata.httpStatusCode).to.equal(412);
    const modified = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'cond', IfModifiedSince: past }));
    expect(modified.$metadata.httpStatusCode).to.equal(200);
  });

  it('CopyObject: zero-copy, in the forms clients send, with COPY and REPLACE', async () => {
    const body = randomBytes(5000);
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'src dir/ü key', Body: body, Metadata: { a: '1' }, ContentType: 'text/x-src' }));
    const source = t.store.head('src dir/ü key')!;
    for (const copySource of ['bucket/src%20dir/%C3%BC%20key', '/bucket/src%20dir/%C3%BC%20key', encodeURIComponent('bucket/src dir/ü key')]) {
      const out = await t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'copy', CopySource: copySource }));
      expect(out.CopyObjectResult?.ETag, copySource).to.equal(`"${md5(body)}"`);
      expect(out.CopyObjectResult?.LastModified, copySource).to.be.instanceOf(Date);
      const copy = t.store.head('copy')!;
      expect(copy.entry.block).to.equal(source.entry.block);
      expect(copy.entry.offset).to.equal(source.entry.offset);
      const head = await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'copy' }));
      expect(head.Metadata).to.deep.equal({ a: '1' });
      expect(head.ContentType).to.equal('text/x-src');
    }
    await t.client.send(
      new CopyObjectCommand({ Bucket: 'bucket', Key: 'copy', CopySource: 'bucket/copy', MetadataDirective: 'REPLACE', Metadata: { b: '2' }, ContentType: 'text/x-new' }),
    );
    const replaced = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'copy' }));
    expect(replaced.Metadata).to.deep.equal({ b: '2' });
    expect(replaced.ContentType).to.equal('text/x-new');
    expect(md5(await bodyBytes(replaced.Body))).to.equal(md5(body));
  });

  it('CopyObject errors: missing source, other bucket, copy to itself without REPLACE', async () => {
    expect((await s3Fails(t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'c', CopySource: 'bucket/nothing' })))).name).to.equal('NoSuchKey');
    expect((await s3Fails(t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'c', CopySource: 'other/h' })))).name).to.equal('NoSuchBucket');
    expect((await s3Fails(t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'h', CopySource: 'bucket/h' })))).name).to.equal('InvalidRequest');
    expect(t.store.head('c')).to.equal(undefined);
  });

  it('another bucket is NoSuchBucket', async () => {
    const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'other', Key: 'x' })));
    expect(err.name).to.equal('NoSuchBucket');
  });

  it('a key over 1024 bytes is KeyTooLongError', async () => {
    const err = await s3Fails(t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k'.repeat(1025), Body: 'x' })));
    expect(err.name).to.equal('KeyTooLongError');
  });
});

describe('s3: conditional PUT (If-None-Match: *)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    await srv.stop();
  });

  it('creates an object only if the key holds none: 412 PreconditionFailed otherwise, and the object is unchanged', async () => {
    await srv.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'once', Body: 'first', IfNoneMatch: '*' }));
    const err = await s3Fails(srv.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'once', Body: 'second', IfNoneMatch: '*' })));
    expect(err.$metadata.httpStatusCode).to.equal(412);
    expect(err.name).to.equal('PreconditionFailed');
    const got = await srv.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'once' }));
    expect((await bodyBytes(got.Body)).toString()).to.equal('first');
    const revision = srv.store.revision;
    // Other values are not what S3 takes on PUT.
    const bad = await rawRequest(srv.port, { method: 'PUT', path: '/bucket/other', headers: { 'if-none-match': '"abc"', 'content-length': '1' }, body: 'x' });
    expect(bad.status).to.equal(501);
    expect(srv.store.revision).to.equal(revision);
    // Deleted, the key may be created again.
    await srv.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'once' }));
    await srv.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'once', Body: 'again', IfNoneMatch: '*' }));
  });
});
