/**
 * What an upload to the upstream relies on for its integrity: the request signs the body's
 * SHA-256 (x-amz-content-sha256, covered by the signature), and the service refuses a body that
 * does not match it. Checked against zipkv as the service, through a proxy that alters one byte
 * of the body on its way: an upload that did not carry the hash would be stored altered.
 */
import net from 'node:net';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { RemoteBucket, UpstreamError } from '../../src/lib/store/storage/remote.js';
import { TEST_CREDENTIALS, type TestServer, bodyBytes, startServer } from '../helpers/server.js';
import { pseudoRandomBytes } from './util.js';

/** A TCP proxy to `port` that flips one byte of the first request body passing through it. */
async function corruptingProxy(port: number): Promise<{ port: number; flipped: () => boolean; close: () => Promise<void> }> {
  let flipped = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let seen = '';
    client.on('data', (chunk: Buffer) => {
      if (!flipped) {
        // The body starts after the blank line that ends the headers.
        const before = seen.length;
        seen += chunk.toString('latin1');
        const end = seen.indexOf('\r\n\r\n');
        const at = end < 0 ? -1 : end + 4 + 100 - before;
        if (at >= 0 && at < chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[at] = chunk[at]! ^ 0xff;
          flipped = true;
        }
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    flipped: () => flipped,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('upstream uploads: integrity', () => {
  let service: TestServer;
  before(async () => {
    service = await startServer({ bucket: 'upstream', credentials: TEST_CREDENTIALS });
  });
  after(async () => {
    await service.stop();
  });

  const remoteAt = (port: number) =>
    new RemoteBucket(
      { bucket: 'upstream', prefix: 'p/' },
      { endpoint: `http://127.0.0.1:${port}`, credentials: { accessKeyId: TEST_CREDENTIALS.accessKey, secretAccessKey: TEST_CREDENTIALS.secretKey }, timeoutMs: 5000 },
    );

  it('a body altered on its way is refused, and nothing is stored; the same body unaltered is stored byte for byte', async () => {
    const body = pseudoRandomBytes(64 * 1024, 7);
    const proxy = await corruptingProxy(service.port);
    try {
      let failure: unknown;
      await remoteAt(proxy.port)
        .put('block1', body)
        .catch((err: unknown) => (failure = err));
      expect(proxy.flipped(), 'the proxy altered the body').to.equal(true);
      expect(failure).to.be.instanceOf(UpstreamError);
    } finally {
      await proxy.close();
    }
    const missing = await service.client.send(new GetObjectCommand({ Bucket: 'upstream', Key: 'p/block1' })).catch((err: Error) => err);
    expect((missing as Error).name).to.equal('NoSuchKey');

    await remoteAt(service.port).put('block1', body);
    const stored = await service.client.send(new GetObjectCommand({ Bucket: 'upstream', Key: 'p/block1' }));
    expect((await bodyBytes(stored.Body)).equals(body)).to.equal(true);
  });
});
