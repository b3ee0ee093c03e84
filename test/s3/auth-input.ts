/**
 * The authentication tests write their requests as request lines (a method, a target, headers);
 * the server parses a target once, with parseRequestTarget, and authenticates that parse. This
 * does the same for a test's request.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { type AuthOptions, type AuthResult, type Credentials, authenticate } from '../../src/lib/s3/auth/authenticate.js';
import { parseRequestTarget } from '../../src/lib/s3/request-target.js';

export interface UrlAuthInput {
  method: string;
  /** The request target exactly as on the request line. */
  url: string;
  headers: IncomingHttpHeaders;
}

export function authenticateUrl(input: UrlAuthInput, creds: Credentials | undefined, opts?: AuthOptions): AuthResult {
  return authenticate({ method: input.method, target: parseRequestTarget(input.url), headers: input.headers }, creds, opts);
}
