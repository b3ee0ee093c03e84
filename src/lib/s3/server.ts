/**
 * The HTTP server: one request -> authenticate -> route -> handler -> store, and one log line.
 * Shutdown stops accepting, lets requests in flight finish, then the caller closes the store.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Store } from '../store/store.js';
import { authenticate } from './auth/authenticate.js';
import type { RequestContext, S3Config } from './context.js';
import { sendError } from './respond.js';
import { parseRequestTarget } from './request-target.js';
import { route } from './router.js';
import { MultipartUploads } from './uploads.js';

export interface ServerOptions extends S3Config {
  host: string;
  port: number;
  /** Called with one line per request; omit for silence. */
  log?: (line: string) => void;
  /** A connection idle this long (no bytes either way) is closed. */
  idleTimeoutMs?: number;
  /** The request line and headers must arrive within this time (slowloris); default 30 s. */
  headersTimeoutMs?: number;
  /** Connections open at once (default 1024); one more is answered 503 SlowDown and closed. */
  maxConnections?: number;
  /** Largest request header section. */
  maxHeaderBytes?: number;
  /** A multipart upload neither completed nor aborted is dropped this long after it began (default 7 days). */
  uploadExpiryMs?: number;
  /** Multipart uploads open at once (default 1000); one more is refused with 503 ServiceUnavailable. */
  maxUploads?: number;
}

/** Request ids: a random prefix per process and a counter (no random bytes per request). */
const REQUEST_ID_PREFIX = randomBytes(4).toString('hex').toUpperCase();
let requestCounter = 0;
function nextRequestId(): string {
  requestCounter = (requestCounter + 1) % 0x100000000;
  return REQUEST_ID_PREFIX + requestCounter.toString(16).toUpperCase().padStart(8, '0');
}

export interface ServerCounters {
  requests: number;
  errors: number;
  bytesIn: number;
  bytesOut: number;
}

const BAD_REQUEST =
  'HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: ';

export class S3Server {
  readonly counters: ServerCounters = { requests: 0, errors: 0, bytesIn: 0, bytesOut: 0 };
  private readonly http: http.Server;
  private readonly uploads: MultipartUploads;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closing = false;

  constructor(
    private readonly store: Store,
    private readonly options: ServerOptions,
  ) {
    this.uploads = new MultipartUploads(store, { expiryMs: options.uploadExpiryMs, maxUploads: options.maxUploads });
    this.http = http.createServer({
      maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024,
      requestTimeout: 0, // large uploads may take long; idleness is what is timed out
      headersTimeout: options.headersTimeoutMs ?? 30_000,
      // How often the timeouts are checked (Node's default, 30 s, would let a slow client stay
      // up to twice the headers timeout).
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor((options.headersTimeoutMs ?? 30_000) / 4))),
      keepAliveTimeout: 5_000,
    });
    this.http.timeout = options.idleTimeoutMs ?? 60_000;
    const maxConnections = options.maxConnections ?? 1024;
    let connections = 0;
    const refused = new WeakSet<Socket>();
    this.http.on('connection', (socket: Socket) => {
      connections++;
      socket.once('close', () => connections--);
      if (connections > maxConnections) {
        // Answered, not just dropped: a client sees why, and S3 clients retry a 503 later.
        refused.add(socket);
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Too many connections (at most ${maxConnections}); try again later.</Message></Error>`;
        socket.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      }
    });
    // A request that arrives on a refused connection gets nothing more: its 503 is on its way.
    this.http.on('request', (req, res) => void (refused.has(req.socket) ? req.resume() : this.handle(req, res, false)));
    this.http.on('checkContinue', (req, res) => void (refused.has(req.socket) ? req.resume() : this.handle(req, res, true)));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
      const code =
        err.code === 'HPE_HEADER_OVERFLOW' ? 'RequestHeaderSectionTooLarge' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'RequestTimeout' : 'BadRequest';
      const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>The request could not be parsed.</Message></Error>`;
      socket.end(`${BAD_REQUEST}${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.options.port, this.options.host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    return this.http.address() as AddressInfo;
  }

  /** Stops accepting, waits for requests in flight, and closes every connection. */
  async close(): Promise<void> {
    this.closing = true;
    this.uploads.close();
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeIdleConnections();
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.http.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
    const started = performance.now();
    this.inFlight++;
    this.counters.requests++;
    const requestId = nextRequestId();
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('Server', 'zipkv');
    if (this.closing) res.setHeader('Connection', 'close');
    const ctx: RequestContext = {
      req,
      res,
      store: this.store,
      uploads: this.uploads,
      config: this.options,
      requestId,
      rawPath: '/',
      query: new URLSearchParams(),
      bucket: undefined,
      key: undefined,
      auth: { kind: 'anonymous' },
      expectsContinue,
    };
    res.once('close', () => {
      this.finished(ctx, started);
    });
    try {
      // One parse for both: the signature covers exactly what the router acts on.
      const target = parseRequestTarget(req.url ?? '/');
      ctx.rawPath = target.rawPath;
      ctx.query = target.query;
      ctx.bucket = target.bucket;
      ctx.key = target.key;
      ctx.auth = authenticate({ method: req.method ?? 'GET', target, headers: req.headers }, this.options.credentials, {
        skipClockCheck: this.options.skipClockCheck,
      });
      await route(ctx)(ctx);
    } catch (err) {
      const error = sendError(ctx, err);
      if (error.code === 'InternalError') {
        process.stderr.write(`zipkv: internal error on ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}\n`);
      }
    }
  }

  private finished(ctx: RequestContext, started: number): void {
    const { req, res } = ctx;
    const bytesIn = Number(req.headers['x-amz-decoded-content-length'] ?? req.headers['content-length'] ?? 0) || 0;
    const bytesOut = req.method === 'HEAD' ? 0 : Number(res.getHeader('content-length') ?? 0) || 0;
    this.counters.bytesIn += bytesIn;
    this.counters.bytesOut += bytesOut;
    if (res.statusCode >= 400) this.counters.errors++;
    if (this.options.log) {
      const ms = (performance.now() - started).toFixed(1);
      const status = res.writableFinished ? String(res.statusCode) : res.headersSent ? `${res.statusCode}(cut off)` : 'aborted(no reply)';
      this.options.log(`${req.method} /${ctx.bucket ?? ''}${ctx.key !== undefined ? `/${ctx.key}` : ''} ${status} ${req.method === 'GET' ? bytesOut : bytesIn}B ${ms}ms`);
    }
    if (--this.inFlight === 0 && this.drained) {
      const drained = this.drained;
      this.drained = undefined;
      drained();
    }
  }
}
