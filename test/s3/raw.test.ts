import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { XMLValidator } from 'fast-xml-parser';
import { rawExchange, rawRequest, statusOf, xmlField } from '../helpers/http.js';
import { startServer, type TestServer, md5 } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A CRC-32 in the form of an x-amz-checksum-crc32 value. */
function crc32Base64(data: Buffer): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32(data) >>> 0);
  return b.toString('base64');
}

/** An aws-chunked body without chunk signatures, with a crc32 trailer. */
function awsChunked(data: Buffer, chunkSize: number, checksum = crc32Base64(data)): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += chunkSize) {
    const chunk = data.subarray(at, at + chunkSize);
    parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`0\r\nx-amz-checksum-crc32:${checksum}\r\n\r\n`));
  return Buffer.concat(parts);
}

/** A PUT through node:http with `Expect: 100-continue`: the body goes only after "100 Continue". */
function putWithContinue(port: number, key: string, body: Buffer, headers: Record<string, string | number> = {}) {
  return new Promise<{ status: number; continued: boolean; etag: string | undefined; body: string }>((resolve, reject) => {
    let continued = false;
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'PUT',
        path: `/bucket/${key}`,
        agent: false,
        headers: { 'Content-Length': body.length, 'Content-Type': 'application/octet-stream', Expect: '100-continue', ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, continued, etag: res.headers.etag, body: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('error', reject);
  });
}

describe('s3: raw HTTP (what SDKs do not send)', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
  });
  after(async () => {
    await t.stop();
  });

  const stillServes = async () => {
    await t.store.put('alive', Buffer.from('yes'));
    const res = await rawRequest(t.port, { path: '/bucket/alive' });
    expect(res.status).to.equal(200);
    expect(res.body.toString()).to.equal('yes');
  };

  it('Expect: 100-continue gets "100 Continue", then 200 with the MD5 ETag (as S3QL uploads)', async () => {
    const body = randomBytes(1_048_744);
    const res = await putWithContinue(t.port, 's3ql_data_7', body, {
      'Content-MD5': createHash('md5').update(body).digest('base64'),
      'x-amz-meta-format': 'raw2',
    });
    expect(res.continued).to.equal(true);
    expect(res.status).to.equal(200);
    expect(res.body).to.equal('');
    expect(res.etag!.replace(/"/g, '')).to.equal(md5(body));
    expect(md5(await t.store.read(t.store.head('s3ql_data_7')!))).to.equal(md5(body));
  });

  it('Expect with Content-Length over 2 GiB - 1 is EntityTooLarge, without "100 Continue"', async () => {
    const request = [
      'PUT /bucket/huge HTTP/1.1',
      'Host: 127.0.0.1',
      `Content-Length: ${2 ** 31}`,
      'Expect: 100-continue',
      '',
      '',
    ].join('\r\n');
    const reply = await rawExchange(t.port, request, { idleMs: 500 });
    expect(reply).to.not.contain('100 Continue');
    expect(statusOf(reply)).to.equal(400);
    expect(xmlField(reply, 'Code')).to.equal('EntityTooLarge');
    expect(reply.toLowerCase()).to.contain('connection: close');
    // The largest allowed size is still offered "100 Continue".
    const ok = await rawExchange(t.port, request.replace(`${2 ** 31}`, `${2 ** 31 - 1}`), { idleMs: 300 });
    expect(ok).to.match(/^HTTP\/1\.1 100 Continue/);
    expect(t.store.head('huge')).to.equal(undefined);
    await stillServes();
  });

  it('a chunked PUT without Content-Length is stored correctly', async () => {
    const body = randomBytes(700_000);
    const res = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: t.port, method: 'PUT', path: '/bucket/chunked', agent: false }, (r) => {
        r.resume();
        r.on('end', () => resolve(r.statusCode!));
      });
      req.on('error', reject);
      for (let at = 0; at < body.length; at += 65_536) req.write(body.subarray(at, at + 65_536));
      req.end();
    });
    expect(res).to.equal(200);
    const info = t.store.head('chunked')!;
    expect(info.size).to.equal(body.length);
    expect(md5(await t.store.read(info))).to.equal(md5(body));
  });

  it('a PUT with neither Content-Length nor chunked encoding is MissingContentLength (411)', async () => {
    const reply = await rawExchange(t.port, 'PUT /bucket/no-length HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(statusOf(reply)).to.equal(411);
    expect(xmlField(reply, 'Code')).to.equal('MissingContentLength');
    expect(t.store.head('no-length')).to.equal(undefined);
  });

  it('a body shorter than its Content-Length, then a closed connection: nothing stored, server fine', async () => {
    await new Promise<void>((resolve) => {
      const socket = net.connect(t.port, '127.0.0.1', () => {
        socket.write('PUT /bucket/short HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
        socket.write(randomBytes(40_000));
        setTimeout(() => socket.destroy(), 50);
      });
      socket.on('close', () => resolve());
      socket.on('error', () => undefined);
    });
    // Half-closing after a partial body too.
    await rawExchange(t.port, Buffer.concat([Buffer.from('PUT /bucket/short2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n'), Buffer.from('12345')]), {
      endInput: true,
      idleMs: 300,
    });
    await sleep(100);
    expect(t.store.head('short')).to.equal(undefined);
    expect(t.store.head('short2')).to.equal(undefined);
    await stillServes();
    // The same keys can be written afterwards.
    const put = await rawRequest(t.port, { method: 'PUT', path: '/bucket/short', body: 'complete' });
    expect(put.status).to.equal(200);
    expect((await t.store.read(t.store.head('short')!)).toString()).to.equal('complete');
  });

  it('aws-chunked with STREAMING-UNSIGNED-PAYLOAD-TRAILER and a crc32 trailer is decoded and checked', async () => {
    const data = randomBytes(150_000);
    const send = (key: string, body: Buffer) =>
      rawRequest(t.port, {
        method: 'PUT',
        path: `/bucket/${key}`,
        headers: {
          'Content-Encoding': 'aws-chunked',
          'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
          'x-amz-decoded-content-length': data.length,
          'x-amz-trailer': 'x-amz-checksum-crc32',
          'Content-Length': body.length,
        },
        body,
      });
    const ok = await send('trailer/ok', awsChunked(data, 65_536));
    expect(ok.status, ok.body.toString()).to.equal(200);
    expect(ok.headers.etag).to.equal(`"${md5(data)}"`);
    const info = t.store.head('trailer/ok')!;
    expect(md5(await t.store.read(info))).to.equal(md5(data));
    // aws-chunked is the upload's framing, not the object's encoding.
    expect(info.metadata['Content-Encoding']).to.equal(undefined);
    const head = await rawRequest(t.port, { method: 'HEAD', path: '/bucket/trailer/ok' });
    expect(head.headers['content-encoding']).to.equal(undefined);

    const bad = await send('trailer/bad', awsChunked(data, 65_536, crc32Base64(Buffer.from('other'))));
    expect(bad.status).to.equal(400);
    expect(xmlField(bad.body, 'Code')).to.equal('BadDigest');
    expect(t.store.head('trailer/bad')).to.equal(undefined);
  });

  it('the SDK streaming upload keeps only the real Content-Encoding', async () => {
    const { Readable } = await import('node:stream');
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'enc/plain', Body: Readable.from([Buffer.from('abc')]), ContentLength: 3 }));
    await t.client.send(
      new PutObjectCommand({ Bucket: 'bucket', Key: 'enc/gzip', Body: Readable.from([Buffer.from('abc')]), ContentLength: 3, ContentEncoding: 'gzip' }),
    );
    expect((await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'enc/plain' }))).ContentEncoding).to.equal(undefined);
    expect((await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'enc/gzip' }))).ContentEncoding).to.equal('gzip');
  });

  it('a wrong x-amz-content-sha256 is XAmzContentSHA256Mismatch and stores nothing', async () => {
    const res = await rawRequest(t.port, {
      method: 'PUT',
      path: '/bucket/sha',
      headers: { 'x-amz-content-sha256': createHash('sha256').update('something else').digest('hex') },
      body: 'the body',
    });
    expect(res.status).to.equal(400);
    expect(xmlField(res.body, 'Code')).to.equal('XAmzContentSHA256Mismatch');
    expect(t.store.head('sha')).to.equal(undefined);
    const right = await rawRequest(t.port, {
      method: 'PUT',
      path: '/bucket/sha',
      headers: { 'x-amz-content-sha256': createHash('sha256').update('the body').digest('hex') },
      body: 'the body',
    });
    expect(right.status).to.equal(200);
  });

  it('HEAD of a missing key is 404 with no body', async () => {
    await t.store.put('alive', Buffer.from('yes'));
    const reply = await rawExchange(t.port, 'HEAD /bucket/missing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /bucket/alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(statusOf(reply)).to.equal(404);
    // The next response follows the HEAD's header section directly: no body in between.
    const end = reply.indexOf('\r\n\r\n') + 4;
    expect(reply.slice(0, end)).to.match(/^HTTP\/1\.1 404/);
    const rest = reply.slice(end);
    expect(rest).to.match(/^HTTP\/1\.1 200 /);
    expect(rest.endsWith('\r\n\r\nyes')).to.equal(true);
  });

  it("error bodies are S3's <Error> document, without a namespace, as application/xml", async () => {
    const res = await rawRequest(t.port, { path: '/bucket/no/such%20key' });
    expect(res.status).to.equal(404);
    expect(res.headers['content-type']).to.equal('application/xml');
    const text = res.body.toString('utf8');
    expect(XMLValidator.validate(text)).to.equal(true);
    expect(text).to.match(/^<\?xml version="1\.0" encoding="UTF-8"\?>\s*<Error><Code>NoSuchKey<\/Code><Message>[^<]+<\/Message>.*<Resource>[^<]+<\/Resource><RequestId>[^<]+<\/RequestId><\/Error>$/s);
    expect(xmlField(text, 'Resource')).to.equal('/bucket/no/such key');
    expect(xmlField(text, 'Key')).to.equal('no/such key');
    expect(xmlField(text, 'RequestId')).to.equal(res.headers['x-amz-request-id']);
    expect(Number(res.headers['content-length'])).to.equal(res.body.length);
  });

  it('unknown sub-resources (?tagging, ?acl) are NotImplemented (501)', async () => {
    await t.store.put('sub', Buffer.from('x'));
    for (const [method, p] of [
      ['GET', '/bucket/sub?tagging'],
      ['PUT', '/bucket/sub?tagging'],
      ['GET', '/bucket/sub?acl'],
      ['PUT', '/bucket/sub?acl'],
      ['PUT', '/bucket?acl'],
      ['PUT', '/bucket?cors'],
      ['DELETE', '/bucket/sub?tagging'],
    ] as const) {
      const res = await rawRequest(t.port, { method, path: p, body: method === 'PUT' ? '<Tagging/>' : undefined });
      expect(res.status, `${method} ${p}`).to.equal(501);
      expect(xmlField(res.body, 'Code'), `${method} ${p}`).to.equal('NotImplemented');
    }
    // None of them touched the object.
    expect((await t.store.read(t.store.head('sub')!)).toString()).to.equal('x');
  });

  it('a versionId that is not a revision is refused; DELETE of any version is refused; "null" is the current version', async () => {
    await t.store.put('versioned', Buffer.from('current'));
    for (const method of ['GET', 'HEAD', 'DELETE', 'PUT']) {
      const res = await rawRequest(t.port, { method, path: '/bucket/versioned?versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY', body: method === 'PUT' ? 'other' : undefined });
      expect(res.status, method).to.equal(400);
      if (method !== 'HEAD') expect(xmlField(res.body, 'Code'), method).to.equal(method === 'DELETE' ? 'InvalidRequest' : 'InvalidArgument');
    }
    expect((await t.store.read(t.store.head('versioned')!)).toString()).to.equal('current');
    const nullVersion = await rawRequest(t.port, { path: '/bucket/versioned?versionId=null' });
    expect(nullVersion.body.toString()).to.equal('current');
  });

  it('GET ?partNumber: part 1 is the whole object, other parts are InvalidPartNumber', async () => {
    const body = randomBytes(3000);
    await t.store.put('parts', body);
    const one = await rawRequest(t.port, { path: '/bucket/parts?partNumber=1' });
    expect(one.status).to.equal(200);
    expect(one.body.equals(body)).to.equal(true);
    expect(one.headers['x-amz-mp-parts-count']).to.equal(undefined);
    const two = await rawRequest(t.port, { path: '/bucket/parts?partNumber=2' });
    expect(two.status).to.equal(416);
    expect(xmlField(two.body, 'Code')).to.equal('InvalidPartNumber');
    const head = await rawRequest(t.port, { method: 'HEAD', path: '/bucket/parts?partNumber=2' });
    expect(head.status).to.equal(416);
    const zero = await rawRequest(t.port, { path: '/bucket/parts?partNumber=0' });
    expect(xmlField(zero.body, 'Code')).to.equal('InvalidArgument');
    const both = await rawRequest(t.port, { path: '/bucket/parts?partNumber=1', headers: { Range: 'bytes=0-1' } });
    expect(both.status).to.equal(400);
  });

  it('PATCH and other unknown methods are MethodNotAllowed (405)', async () => {
    for (const [method, p] of [
      ['PATCH', '/bucket/sub'],
      ['PATCH', '/bucket'],
      ['OPTIONS', '/bucket/sub'],
    ] as const) {
      const res = await rawRequest(t.port, { method, path: p, headers: { 'Content-Length': '0' } });
      expect(res.status, `${method} ${p}`).to.equal(405);
      expect(xmlField(res.body, 'Code')).to.equal('MethodNotAllowed');
    }
  });

  it('malformed percent-encoding in the path is a 400', async () => {
    for (const p of ['/bucket/%zz', '/bucket/a%', '/bucket/%C3', '/bucket/%C3%28', '/b%ucket/x']) {
      const res = await rawRequest(t.port, { path: p });
      expect(res.status, p).to.equal(400);
      expect(xmlField(res.body, 'Code'), p).to.be.oneOf(['InvalidArgument', 'InvalidURI']);
    }
  });

  it('a huge header section is refused with a 4xx and the server keeps serving', async () => {
    const reply = await rawExchange(t.port, `GET /bucket/alive HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(statusOf(reply)).to.be.within(400, 499);
    const many = Array.from({ length: 3000 }, (_, i) => `x-amz-meta-h${i}: v`).join('\r\n');
    const reply2 = await rawExchange(t.port, `PUT /bucket/many HTTP/1.1\r\nHost: x\r\n${many}\r\nContent-Length: 1\r\n\r\nx`);
    expect(statusOf(reply2)).to.be.within(400, 499);
    expect(t.store.head('many')).to.equal(undefined);
    await stillServes();
  });

  it('path tricks are keys or errors and never reach the file system', async () => {
    const parent = path.dirname(t.dir);
    const before = await fs.readdir(parent);
    const dirBefore = (await fs.readdir(t.dir)).sort();
    const tricks: Array<[string, string | undefined]> = [
      ['/bucket/../etc/passwd', '../etc/passwd'],
      ['/bucket/%2e%2e/x', '../x'],
      ['/bucket/..%2f..%2fescape', '../../escape'],
      ['/bucket/./dot', './dot'],
      ['/bucket//double', '/double'],
      ['/bucket/%2Fabs', '/abs'],
    ];
    for (const [target, key] of tricks) {
      const put = await rawExchange(t.port, `PUT ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\ntrick`);
      expect(statusOf(put), target).to.equal(200);
      const get = await rawExchange(t.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(statusOf(get), target).to.equal(200);
      expect(get.endsWith('\r\n\r\ntrick'), target).to.equal(true);
      expect(t.store.head(key!), target).to.not.equal(undefined);
    }
    // No bucket segment: an error, not some other document.
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const reply = await rawExchange(t.port, `${method} //bucket/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      expect(statusOf(reply), method).to.be.within(400, 499);
      expect(reply, method).to.not.contain('ListAllMyBucketsResult');
    }
    expect(t.store.head('bucket/x')).to.equal(undefined);
    expect(await fs.readdir(parent)).to.deep.equal(before);
    expect((await fs.readdir(t.dir)).sort()).to.deep.equal(dirBefore);
  });

  it('listings during concurrent PUTs never fail', async () => {
    const puts = Array.from({ length: 200 }, (_, i) =>
      rawRequest(t.port, { method: 'PUT', path: `/bucket/concurrent/${String(i).padStart(3, '0')}`, body: randomBytes(2000) }),
    );
    const lists = Array.from({ length: 50 }, (_, i) =>
      rawRequest(t.port, { path: `/bucket/?${i % 2 ? 'list-type=2&' : ''}prefix=concurrent%2F` }),
    );
    const [putResults, listResults] = await Promise.all([Promise.all(puts), Promise.all(lists)]);
    expect(putResults.map((r) => r.status)).to.deep.equal(Array(200).fill(200));
    for (const res of listResults) {
      expect(res.status).to.equal(200);
      expect(XMLValidator.validate(res.body.toString())).to.equal(true);
      const keys = [...res.body.toString().matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
      expect(keys).to.deep.equal([...keys].sort());
    }
    const final = await rawRequest(t.port, { path: '/bucket/?prefix=concurrent%2F' });
    expect([...final.body.toString().matchAll(/<Key>/g)].length).to.equal(200);
  });
});
