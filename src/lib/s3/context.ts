/** What a handler gets for one request: the parsed request, the store and the server's settings. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Store } from '../store/store.js';
import type { AuthResult, Credentials } from './auth/authenticate.js';
import type { MultipartUploads } from './uploads.js';

export interface S3Config {
  bucket: string;
  /** When set, every request must be signed with these. */
  credentials?: Credentials;
  /** Accept signatures whatever their time (replaying recorded requests in tests). */
  skipClockCheck?: boolean;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  store: Store;
  uploads: MultipartUploads;
  config: S3Config;
  requestId: string;
  /** Path as received (still percent-encoded) and the parsed query. */
  rawPath: string;
  query: URLSearchParams;
  /** The bucket named by the path, if any. */
  bucket: string | undefined;
  /** The object key (decoded), if the path names one. */
  key: string | undefined;
  auth: AuthResult;
  /** Set by the 100-continue handler: the client waits for "100 Continue" before the body. */
  expectsContinue: boolean;
}

/** The value of a header that must appear once (Node joins or lists repeats). */
export function header(ctx: RequestContext, name: string): string | undefined {
  const value = ctx.req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** S3's resource string for error documents: /bucket/key. */
export function resourceOf(ctx: RequestContext): string {
  if (!ctx.bucket) return '/';
  return ctx.key === undefined ? `/${ctx.bucket}` : `/${ctx.bucket}/${ctx.key}`;
}
