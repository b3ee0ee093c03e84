/** The limits a bad or slow client meets: clear S3 errors, nothing changed. */
import net from 'node:net';
import { expect } from 'chai';
import { rawExchange, rawRequest, statusOf } from '../helpers/http.js';
import { TEST_CREDENTIALS, startServer, type TestServer, s3Fails } from '../helpers/server.js';

describe('s3: limits on the request path', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer({ credentials: TEST_CREDENTIALS, maxConnections: 8, headersTimeoutMs: 1000 });
  });
  after(async () => {
    await t.stop();
  });

  it('response-* overrides with CR/LF or characters above U+00FF are 400 InvalidArgument', async () => {
    await t.store.put('plain', Buffer.from('x'));
    const { S3Client, GetObjectCommand } = await import('@aws-sdk/client-s3');
    void S3Client;
    for (const value of ['text/plain\r\nX-Injected: 1', 'caf\u00e9 \u20ac']) {
      const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'plain', ResponseContentType: value })));
      expect(err.$metadata.httpStatusCode, JSON.stringify(value)).to.equal(400);
      expect(err.name).to.equal('InvalidArgument');
    }
    const ok = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'plain', ResponseContentType: 'text/caf\u00e9' }));
    expect(ok.ContentType).to.equal('text/caf\u00e9');
  });

  it('connections over the cap are answered 503 SlowDown and closed; the others are served', async () => {
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const socket = net.connect(t.port, '127.0.0.1');
        await new Promise((resolve) => socket.once('connect', resolve));
        held.push(socket);
      }
      const over = await rawExchange(t.port, 'GET /bucket/plain HTTP/1.1\r\nHost: x\r\n\r\n');
      expect(statusOf(over)).to.equal(503);
      expect(over).to.include('<Code>SlowDown</Code>');
    } finally {
      for (const s of held) s.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const after = await rawRequest(t.port, { path: '/bucket/plain' });
    expect(after.status, 'a slot is free again').to.equal(403); // unsigned: refused by authentication, but served
  });

  it('a client that sends its headers too slowly (slowloris) is cut off', async () => {
    const started = Date.now();
    const reply = await rawExchange(t.port, 'GET /bucket/plain HTTP/1.1\r\nHost: x\r\n', { idleMs: 5000 });
    const elapsed = Date.now() - started;
    expect(elapsed).to.be.below(4500);
    expect(statusOf(reply)).to.equal(400);
    expect(reply).to.include('<Code>RequestTimeout</Code>');
  });
});
