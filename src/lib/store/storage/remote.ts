/**
 * An S3 bucket prefix as the upstream tier: whole objects in and out, ranged reads, listing.
 * Credentials and region come the AWS way (environment, profiles) through the AWS SDK, unless
 * given explicitly. Every call has a deadline, so an upstream that hangs fails a call instead
 * of holding it, and errors never carry credentials (only the operation, the object name and
 * the service's error code).
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { StoreError } from '../errors.js';

export interface UpstreamLocation {
  bucket: string;
  /** Object names start with this (empty, or ending in `/`). */
  prefix: string;
}

export interface RemoteOptions {
  /** A custom endpoint (Ceph RGW, a second zipkv...): path-style requests. */
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Deadline of one call in ms (default 30 s; an upload gets one per 8 MiB on top). */
  timeoutMs?: number;
}

/** The upstream could not do what was asked (down, slow, refused): reads answer 503. */
export class UpstreamError extends StoreError {
  constructor(message: string) {
    super('EUPSTREAM', message);
  }
}

/** An object that was to be created exists already (If-None-Match: * failed). */
export class UpstreamExistsError extends UpstreamError {}

/** `s3://bucket/prefix` -> bucket and prefix (a prefix gets a trailing `/`). */
export function parseUpstreamUrl(url: string): UpstreamLocation {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!m || m[1]!.length < 3) throw new RangeError(`an upstream is s3://BUCKET/PREFIX (a bucket name of 3 characters or more), not ${url}`);
  let prefix = m[2] ?? '';
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  return { bucket: m[1]!, prefix };
}

export function upstreamUrl(loc: UpstreamLocation): string {
  return `s3://${loc.bucket}/${loc.prefix}`;
}

const DEFAULT_TIMEOUT_MS = 30_000;

export class RemoteBucket {
  readonly url: string;
  private readonly client: S3Client;
  private readonly timeoutMs: number;

  constructor(
    readonly location: UpstreamLocation,
    opts: RemoteOptions = {},
  ) {
    this.url = upstreamUrl(location);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.client = new S3Client({
      endpoint: opts.endpoint,
      forcePathStyle: opts.endpoint !== undefined,
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      credentials: opts.credentials,
      maxAttempts: 2,
      // Flexible checksums (CRC32 and the like) are not understood by every S3-compatible service.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private key(name: string): string {
    return this.location.prefix + name;
  }

  private async call<T>(what: string, name: string, timeoutMs: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await run(AbortSignal.timeout(timeoutMs));
    } catch (err) {
      throw this.failure(what, name, err, timeoutMs);
    }
  }

  private failure(what: string, name: string, err: unknown, timeoutMs: number): UpstreamError {
    const where = `${what} ${this.url}${name}`;
    if (err instanceof UpstreamError) return err;
    const e = err as Error & { $metadata?: { httpStatusCode?: number } };
    if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return new UpstreamError(`${where}: no answer within ${timeoutMs / 1000} s`);
    if (err instanceof S3ServiceException) {
      if (err.$metadata?.httpStatusCode === 412) return new UpstreamExistsError(`${where}: the object exists already`);
      return new UpstreamError(`${where}: ${err.name} (HTTP ${err.$metadata?.httpStatusCode ?? '?'})`);
    }
    const code = (err as NodeJS.ErrnoException)?.code;
    return new UpstreamError(`${where}: ${code ?? e?.name ?? 'error'}`);
  }

  /**
   * Uploads `body` as `name`; `ifAbsent`: only if no such object exists. The request signs the
   * body's SHA-256 (SigV4, x-amz-content-sha256), which the service checks before it stores
   * anything: a Content-MD5 as well would hash every shipped byte a second time, on the thread
   * that serves requests.
   */
  async put(name: string, body: Uint8Array, opts: { ifAbsent?: boolean } = {}): Promise<void> {
    const timeoutMs = this.timeoutMs + Math.ceil(body.length / (8 * 1024 * 1024)) * 10_000;
    await this.call('uploading', name, timeoutMs, (abortSignal) =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.location.bucket,
          Key: this.key(name),
          Body: body,
          ContentLength: body.length,
          IfNoneMatch: opts.ifAbsent ? '*' : undefined,
        }),
        { abortSignal },
      ),
    );
  }

  /** The whole object, or undefined when there is none. */
  async get(name: string): Promise<Buffer | undefined> {
    try {
      return await this.call('reading', name, this.timeoutMs, async (abortSignal) => {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }), { abortSignal });
        return Buffer.from(await out.Body!.transformToByteArray());
      });
    } catch (err) {
      if (err instanceof UpstreamError && /NoSuchKey|HTTP 404/.test(err.message)) return undefined;
      throw err;
    }
  }

  /** Bytes [start, start + length) of an object. */
  async getRange(name: string, start: number, length: number, timeoutMs = this.timeoutMs): Promise<Buffer> {
    return this.call('reading', name, timeoutMs, async (abortSignal) => {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(name), Range: `bytes=${start}-${start + length - 1}` }),
        { abortSignal },
      );
      const bytes = Buffer.from(await out.Body!.transformToByteArray());
      if (bytes.length !== length) throw new UpstreamError(`reading ${this.url}${name}: ${bytes.length} bytes at ${start} instead of ${length}`);
      return bytes;
    });
  }

  async delete(name: string): Promise<void> {
    await this.call('deleting', name, this.timeoutMs, (abortSignal) =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }), { abortSignal }),
    );
  }

  /** Names (without the prefix) of every object under the prefix. */
  async list(): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call('listing', '', this.timeoutMs, (abortSignal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: this.location.prefix, ContinuationToken: token }), {
          abortSignal,
        }),
      );
      for (const o of page.Contents ?? []) if (o.Key) names.push(o.Key.slice(this.location.prefix.length));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return names;
  }

  close(): void {
    this.client.destroy();
  }
}
