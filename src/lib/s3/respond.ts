/** Writing replies: XML documents, empty replies, streamed bodies and S3 error documents. */
import type { Readable } from 'node:stream';
import type { RequestContext } from './context.js';
import { resourceOf } from './context.js';
import { S3Error, s3Error } from './errors.js';
import { xmlDocument } from './xml.js';
import {
  BodySizeMismatchError,
  DigestMismatchError,
  DurabilityError,
  ObjectExistsError,
  ObjectTooLargeError,
  StoreFailedError,
  StoreStateError,
  VersionForgottenError,
} from '../store/errors.js';
import { prematureClose } from '../store/body.js';
import { UpstreamError } from '../store/storage/remote.js';

export function sendXml(ctx: RequestContext, status: number, xml: string): void {
  const body = Buffer.from(xml, 'utf8');
  ctx.res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': body.length });
  ctx.res.end(body);
}

/** An empty reply; `headers` (the caller's own object) gets Content-Length: 0. */
export function sendEmpty(ctx: RequestContext, status: number, headers: Record<string, string | number> = {}): void {
  headers['Content-Length'] = 0;
  ctx.res.writeHead(status, headers);
  ctx.res.end();
}

/**
 * Sends a stream of the store's as the reply body (the status is already written), with
 * backpressure, and gives each chunk back to the store once the socket has its bytes. Settles
 * when the reply has finished; fails, with the stream destroyed, if the client goes away first.
 */
export function sendStream(ctx: RequestContext, stream: Readable): Promise<void> {
  const { res, store } = ctx;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      stream.off('data', onData);
      res.off('drain', onDrain);
      res.off('close', onClose);
      if (err) {
        stream.destroy();
        res.destroy();
        reject(err);
      } else resolve();
    };
    const onData = (chunk: Buffer): void => {
      // A failed write may still hold the chunk somewhere: it is then left to the collector.
      if (!res.write(chunk, (err) => void (err ? undefined : store.recycle(chunk)))) stream.pause();
    };
    const onDrain = (): void => void stream.resume();
    const onClose = (): void => settle(res.writableFinished ? undefined : prematureClose('The client closed the connection'));
    stream.on('data', onData);
    stream.once('end', () => res.end(() => settle()));
    stream.once('error', (err: Error) => settle(err));
    res.on('drain', onDrain);
    res.once('close', onClose);
    stream.resume();
  });
}

/** Turns anything thrown by a handler into the S3 error a client understands. */
export function toS3Error(err: unknown): S3Error {
  if (err instanceof S3Error) return err;
  if (err instanceof BodySizeMismatchError) return s3Error('IncompleteBody', err.message);
  if (err instanceof DigestMismatchError) return s3Error('BadDigest');
  if (err instanceof ObjectTooLargeError) return s3Error('EntityTooLarge', err.message);
  if (err instanceof StoreFailedError) return s3Error('ServiceUnavailable', err.message);
  if (err instanceof DurabilityError) return s3Error('ServiceUnavailable', err.message);
  if (err instanceof UpstreamError) return s3Error('ServiceUnavailable', 'The upstream store holding this object did not answer; try again later.');
  if (err instanceof ObjectExistsError) return s3Error('PreconditionFailed', undefined, { Condition: 'If-None-Match' });
  if (err instanceof VersionForgottenError) return s3Error('NoSuchVersion', err.message);
  if (err instanceof StoreStateError) return s3Error('ServiceUnavailable', 'The server is shutting down.');
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return s3Error('ServiceUnavailable', 'The server is out of disk space.');
  if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET') return s3Error('IncompleteBody');
  return s3Error('InternalError');
}

export function sendError(ctx: RequestContext, err: unknown): S3Error {
  const error = toS3Error(err);
  const { res } = ctx;
  if (res.headersSent) {
    // The reply is under way: all we can still do is break the connection so the client sees it.
    res.destroy();
    return error;
  }
  const xml = xmlDocument(
    'Error',
    {
      Code: error.code,
      Message: error.message,
      ...error.details,
      Resource: resourceOf(ctx),
      RequestId: ctx.requestId,
    },
    null,
  );
  const headers: Record<string, string | number> = {};
  if (error.code === 'InvalidRange' && error.details.ActualObjectSize) {
    headers['Content-Range'] = `bytes */${error.details.ActualObjectSize}`;
  }
  if (error.status === 304) {
    sendEmpty(ctx, 304, headers);
    return error;
  }
  // A request whose body was not read (refused early) cannot keep its connection.
  if (!ctx.req.complete) headers.Connection = 'close';
  const body = Buffer.from(xml, 'utf8');
  res.writeHead(error.status, { ...headers, 'Content-Type': 'application/xml', 'Content-Length': body.length });
  res.end(body);
  return error;
}
