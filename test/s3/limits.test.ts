/** The limits a bad or slow client meets: clear S3 errors, nothing changed. */
import net from 'node:net';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { rawExchange, rawRequest, statusOf, xmlField } from '../helpers/http.js';
import { TEST_CREDENTIALS, startServer, type TestServer, s3Fails } from '../helpers/server.js';

const OVERRIDES = [
  'response-content-type',
  'response-content-language',
  'response-expires',
  'response-cache-control',
  'response-content-disposition',
  'response-content-encoding',
];

describe('s3: limits on the request path', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer({ credentials: TEST_CREDENTIALS, maxConnections: 8, headersTimeoutMs: 1000 });
  });
  after(async () => {
    await t.stop();
  });

  it('response-* overrides with CR/LF or characters above U+00FF are 400 InvalidArgument (AWS SDK)', async () => {
    await t.store.put('plain', Buffer.from('x'));
    for (const value of ['text/plain\r\nX-Injected: 1', 'caf\u00e9 \u20ac']) {
      const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'plain', ResponseContentType: value })));
      expect(err.$metadata.httpStatusCode, JSON.stringify(value)).to.equal(400);
      expect(err.name).to.equal('InvalidArgument');
    }
    const ok = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'plain', ResponseContentType: 'text/caf\u00e9' }));
    expect(ok.ContentType).to.equal('text/caf\u00e9');
  });

  it('connections over the cap are answered 503 SlowDown and closed at once; the others are served', async () => {
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const socket = net.connect(t.port, '127.0.0.1');
        await new Promise((resolve) => socket.once('connect', resolve));
        held.push(socket);
      }
      const started = Date.now();
      const over = await rawExchange(t.port, 'GET /bucket/plain HTTP/1.1\r\nHost: x\r\n\r\n', { idleMs: 5000 });
      expect(Date.now() - started, 'closed by the server, not by the idle wait').to.be.below(2000);
      expect(statusOf(over)).to.equal(503);
      expect(over).to.include('<Code>SlowDown</Code>').and.include('Connection: close');
      // The held connections are still served.
      const served = await new Promise<string>((resolve) => {
        let text = '';
        held[0]!.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.includes('</Error>')) resolve(text);
        });
        held[0]!.write('GET /bucket/plain HTTP/1.1\r\nHost: x\r\n\r\n');
      });
      expect(statusOf(served)).to.equal(403); // unsigned: refused by authentication, but served
    } finally {
      for (const s of held) s.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const after = await rawRequest(t.port, { path: '/bucket/plain' });
    expect(after.status, 'a slot is free again').to.equal(403);
  });

  it('a client that sends its headers too slowly (slowloris) is cut off', async () => {
    const started = Date.now();
    const reply = await rawExchange(t.port, 'GET /bucket/plain HTTP/1.1\r\nHost: x\r\n', { idleMs: 5000 });
    const elapsed = Date.now() - started;
    expect(elapsed).to.be.below(4500);
    expect(statusOf(reply)).to.equal(400);
    expect(reply).to.include('<Code>RequestTimeout</Code>');
  });

  it('a client that drips a header line every 200 ms is cut off at the headers timeout all the same', async () => {
    const socket = net.connect(t.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const started = Date.now();
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write('GET /bucket/plain HTTP/1.1\r\n');
    const drip = setInterval(() => socket.writable && socket.write(`X-Drip-${Date.now()}: 1\r\n`), 200);
    try {
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 6000))]);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
    expect(Date.now() - started).to.be.below(4500);
    expect(statusOf(reply)).to.equal(400);
    expect(reply).to.include('<Code>RequestTimeout</Code>');
  });
});

describe('s3: limits on the request path (raw requests, no credentials)', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
    await t.store.put('plain', Buffer.from('x'));
  });
  after(async () => {
    await t.stop();
  });

  it('every response-* override refuses CR, LF, NUL and characters above U+00FF (400 InvalidArgument) and takes Latin-1 text', async () => {
    for (const param of OVERRIDES) {
      for (const bad of ['a%0D%0AX-Injected:%201', 'a%0Ab', 'a%0Db', 'a%00b', 'caf%C3%A9%20%E2%82%AC', '%F0%9F%98%80']) {
        const res = await rawRequest(t.port, { path: `/bucket/plain?${param}=${bad}` });
        expect(res.status, `${param}=${bad}: ${res.body.toString()}`).to.equal(400);
        expect(xmlField(res.body, 'Code')).to.equal('InvalidArgument');
        expect(xmlField(res.body, 'Message')).to.include(param);
        expect(res.headers['x-injected']).to.equal(undefined);
      }
      const ok = await rawRequest(t.port, { path: `/bucket/plain?${param}=caf%C3%A9%09ok` });
      expect(ok.status, param).to.equal(200);
      expect(ok.body.toString()).to.equal('x');
    }
  });

  it('an aws-chunked upload with a chunk size line or a trailer past its bound is 400 InvalidArgument and stores nothing', async () => {
    const put = (key: string, body: string) =>
      rawRequest(t.port, {
        method: 'PUT',
        path: `/bucket/${key}`,
        headers: {
          'Content-Encoding': 'aws-chunked',
          'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
          'x-amz-decoded-content-length': 2,
          'x-amz-trailer': 'x-amz-checksum-crc32',
          'Content-Length': Buffer.byteLength(body),
        },
        body,
      });
    const revision = t.store.revision;
    for (const [key, body] of [
      ['long-extension', `2;${'e'.repeat(5000)}\r\nab\r\n0\r\nx-amz-checksum-crc32:noNIbQ==\r\n\r\n`],
      ['long-trailer', `2\r\nab\r\n0\r\nx-amz-meta-x:${'v'.repeat(5000)}\r\nx-amz-checksum-crc32:noNIbQ==\r\n\r\n`],
      ['many-trailers', `2\r\nab\r\n0\r\n${Array.from({ length: 40 }, (_, i) => `x-amz-meta-${i}:v\r\n`).join('')}x-amz-checksum-crc32:noNIbQ==\r\n\r\n`],
    ]) {
      const res = await put(key!, body!);
      expect(res.status, `${key}: ${res.body.toString()}`).to.equal(400);
      expect(xmlField(res.body, 'Code'), key).to.equal('InvalidArgument');
      expect(t.store.head(key!), key).to.equal(undefined);
    }
    expect(t.store.revision).to.equal(revision);
    // The same upload within the bounds is stored.
    const ok = await put('chunked-ok', '2;e=1\r\nab\r\n0\r\nx-amz-checksum-crc32:noNIbQ==\r\n\r\n');
    expect(ok.status, ok.body.toString()).to.equal(200);
  });
});
