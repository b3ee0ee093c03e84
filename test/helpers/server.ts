/** Starts zipkv's S3 server in-process on a loopback port, with an SDK client pointed at it. */
import { createHash } from 'node:crypto';
import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { openStore, type OpenOptions, type Store } from '../../src/lib/store/store.js';
import { S3Server } from '../../src/lib/s3/server.js';
import type { Credentials } from '../../src/lib/s3/auth/authenticate.js';
import { tempDir } from './paths.js';

export interface TestServer {
  dir: string;
  url: string;
  port: number;
  store: Store;
  server: S3Server;
  client: S3Client;
  /** Stops the server and closes the store (idempotent). */
  stop(): Promise<void>;
}

export interface TestServerOptions extends OpenOptions {
  bucket?: string;
  credentials?: Credentials;
  dir?: string;
  idleTimeoutMs?: number;
  /** Multipart uploads: how long one may stay open, and how many at once (S3Server options). */
  uploadExpiryMs?: number;
  maxUploads?: number;
  /** Connections open at once, and the time allowed for a request's headers (S3Server options). */
  maxConnections?: number;
  headersTimeoutMs?: number;
}

export const TEST_CREDENTIALS: Credentials = { accessKey: 'testkey', secretKey: 'testsecret' };

export function clientFor(url: string, credentials: Credentials = TEST_CREDENTIALS): S3Client {
  return new S3Client({
    endpoint: url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: credentials.accessKey, secretAccessKey: credentials.secretKey },
    maxAttempts: 1,
  });
}

export async function startServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dir = opts.dir ?? (await tempDir('s3'));
  const store = await openStore(dir, { fsync: false, ...opts });
  const server = new S3Server(store, {
    host: '127.0.0.1',
    port: 0,
    bucket: opts.bucket ?? 'bucket',
    credentials: opts.credentials,
    idleTimeoutMs: opts.idleTimeoutMs,
    uploadExpiryMs: opts.uploadExpiryMs,
    maxUploads: opts.maxUploads,
    maxConnections: opts.maxConnections,
    headersTimeoutMs: opts.headersTimeoutMs,
  });
  const { port } = await server.listen();
  const url = `http://127.0.0.1:${port}`;
  const client = clientFor(url, opts.credentials);
  let stopped = false;
  return {
    dir,
    url,
    port,
    store,
    server,
    client,
    async stop() {
      if (stopped) return;
      stopped = true;
      client.destroy();
      await server.close();
      await store.close();
    },
  };
}

/** Collects a stream (an SDK body) into a Buffer. */
export async function bodyBytes(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Awaits an SDK call that must fail with an S3 error, and returns that error. */
export async function s3Fails(promise: Promise<unknown>): Promise<S3ServiceException> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof S3ServiceException) return err;
    throw err;
  }
  throw new Error('expected the request to fail');
}

export function md5(data: Uint8Array | string): string {
  return createHash('md5').update(data).digest('hex');
}
