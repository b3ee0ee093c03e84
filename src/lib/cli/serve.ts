/** Runs the S3 server on a store until SIGINT or SIGTERM, then closes both cleanly. */
import { isIP } from 'node:net';
import { type CompactionResult, openStore } from '../store/store.js';
import { S3Server } from '../s3/server.js';
import type { Credentials } from '../s3/auth/authenticate.js';
import { formatBytes } from './output.js';
import { RemoteBucket, parseUpstreamUrl } from '../store/storage/remote.js';

export interface ServeOptions {
  dir: string;
  addr: string;
  blockSize: number;
  bucket: string;
  fsync: boolean;
  quiet: boolean;
  credentials?: Credentials;
  idleTimeoutMs: number;
  /** Connections open at once (more are answered 503 SlowDown). */
  maxConnections?: number;
  /** A multipart upload neither completed nor aborted is dropped this long after it began. */
  uploadExpiryMs?: number;
  /** Retention (--keep-history): undefined keeps the whole history. */
  keepHistoryMs?: number;
  /** Testing only (hidden flag --compaction-interval): ms between looks for compaction work. */
  compactionIntervalMs?: number;
  /** Testing only (hidden flag --checkpoint-bytes): journal size that triggers a checkpoint. */
  checkpointBytes?: number;
  /** A live copy in an S3 bucket prefix: s3://BUCKET/PREFIX, with a custom endpoint (RGW...). */
  upstream?: string;
  upstreamEndpoint?: string;
  /** Local bytes of blocks kept with an upstream (--cache-size). */
  cacheBytes?: number;
  /** How often committed writes are shipped upstream (ms). */
  upstreamIntervalMs?: number;
  /** Where the start-up line, request lines and the summary go. */
  out: (line: string) => void;
  warn: (line: string) => void;
}

/**
 * The request log: lines gathered and handed to `out` in one piece every FLUSH_MS, or sooner
 * when MAX_LINES wait, instead of one write per request. Flushed at shutdown and at process exit
 * (an exit that skips the shutdown still writes what was gathered).
 */
export class BufferedLines {
  private lines: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  static readonly FLUSH_MS = 200;
  static readonly MAX_LINES = 1000;
  private readonly atExit = () => this.flush();

  constructor(private readonly out: (text: string) => void) {
    process.on('exit', this.atExit);
  }

  readonly line = (text: string): void => {
    this.lines.push(text);
    if (this.lines.length >= BufferedLines.MAX_LINES) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), BufferedLines.FLUSH_MS).unref();
  };

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length === 0) return;
    const text = this.lines.join('\n');
    this.lines = [];
    this.out(text);
  }

  close(): void {
    this.flush();
    process.off('exit', this.atExit);
  }
}

export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr);
  if (!m) throw new Error(`-addr must be host:port (e.g. 127.0.0.1:7711), not ${JSON.stringify(addr)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port ${port} is out of range`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** What the start-up line says of retention. */
function historyLine(keepHistoryMs: number | undefined, historyStart: number): string {
  const begins = historyStart > 0 ? `history begins at revision ${historyStart}` : 'history complete';
  if (keepHistoryMs === undefined) return `${begins}, every operation kept`;
  const units: Array<[number, string]> = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'm'], [1000, 's']];
  const [size, unit] = units.find(([ms]) => keepHistoryMs % ms === 0) ?? [1, 'ms'];
  return `${begins}, operations kept for ${keepHistoryMs / size}${unit}`;
}

/** One log line for a background compaction. */
export function compactionLine(r: CompactionResult): string {
  return (
    `zipkv: compaction: history now begins at revision ${r.historyStart} (${r.forgottenRecords} operations forgotten); ` +
    `${r.blocksRewritten} blocks rewritten, ${r.blocksDeleted} deleted, ${formatBytes(r.bytesFreed)} freed ` +
    `(${formatBytes(r.bytesWritten)} copied) in ${(r.durationMs / 1000).toFixed(1)} s`
  );
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / 1024 / 1024} MiB` : `${bytes} bytes`;
}

/** Serves until a signal; resolves with the summary once the store is closed. */
export async function serve(opts: ServeOptions): Promise<void> {
  const { host, port } = parseAddr(opts.addr);
  // The handlers go in before anything else: a signal that arrives while the store opens, or
  // just after the start-up line, must still end in a clean shutdown, not the default kill.
  let removeHandlers = () => {};
  const stopped = new Promise<string>((resolve) => {
    const stop = (signal: string) => {
      removeHandlers();
      resolve(signal);
    };
    removeHandlers = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  let store;
  try {
    store = await openStore(opts.dir, {
      blockSize: opts.blockSize,
      fsync: opts.fsync,
      warn: opts.warn,
      checkpointBytes: opts.checkpointBytes,
      keepHistoryMs: opts.keepHistoryMs,
      compaction: opts.compactionIntervalMs === undefined ? undefined : { intervalMs: opts.compactionIntervalMs },
      onCompaction: (result) => opts.out(compactionLine(result)),
      upstream: opts.upstream
        ? {
            remote: new RemoteBucket(parseUpstreamUrl(opts.upstream), { endpoint: opts.upstreamEndpoint }),
            intervalMs: opts.upstreamIntervalMs,
            cacheBytes: opts.cacheBytes,
            log: (line) => opts.warn(`zipkv: ${line}`),
          }
        : undefined,
      // Logged once, loudly: from here on every write gets 503 until a restart.
      onFailure: (failure) =>
        opts.warn(`ERROR: ${failure.message}. Every write now gets 503 ServiceUnavailable; restart zipkv to go on writing.`),
    });
  } catch (err) {
    removeHandlers();
    throw err;
  }
  // Request lines are gathered and written a few times a second, not one write per request.
  const requestLog = opts.quiet ? undefined : new BufferedLines(opts.out);
  const server = new S3Server(store, {
    host,
    port,
    bucket: opts.bucket,
    credentials: opts.credentials,
    idleTimeoutMs: opts.idleTimeoutMs,
    maxConnections: opts.maxConnections,
    uploadExpiryMs: opts.uploadExpiryMs,
    log: requestLog?.line,
  });
  let address;
  try {
    address = await server.listen();
  } catch (err) {
    removeHandlers();
    requestLog?.close();
    await store.close();
    throw err;
  }
  const where = address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  const stats = store.stats();
  opts.out(
    `zipkv serving ${store.dir} as bucket "${opts.bucket}" on http://${where} ` +
      `(block size ${mib(opts.blockSize)}, ${opts.fsync ? 'durable: fsync before every reply' : 'NOT durable: fsync off'}, ` +
      `${stats.liveObjects} objects at revision ${stats.revision}, ${historyLine(opts.keepHistoryMs, stats.historyStart)}, ` +
      (stats.upstream
        ? `shipped to ${stats.upstream.url} every ${(opts.upstreamIntervalMs ?? 1000) / 1000} s` +
          `${opts.cacheBytes === undefined ? '' : ` with ${formatBytes(opts.cacheBytes)} of blocks cached locally`}, `
        : '') +
      `${opts.credentials ? 'signed requests only' : 'no credentials: every request accepted'})`,
  );
  if (!opts.credentials && !isLoopback(host)) {
    opts.warn(
      `WARNING: listening on ${host}, which is not a loopback address, without credentials: ` +
        'anyone who can reach it can read, overwrite and delete every object. Set --access-key and --secret-key.',
    );
  }
  const signal = await stopped;
  requestLog?.flush();
  opts.out(`zipkv: ${signal}: finishing requests in flight, then closing the store`);
  await server.close();
  requestLog?.close();
  await store.close();
  const { requests, errors, bytesIn, bytesOut } = server.counters;
  const after = store.stats();
  const traffic = `${requests} requests (${errors} errors), ${bytesIn} bytes in, ${bytesOut} bytes out`;
  if (after.upstream) {
    const u = after.upstream;
    opts.out(
      u.records === 0 && !u.failing
        ? `zipkv: upstream ${u.url} holds everything (${formatBytes(u.shippedBytes)} shipped by this server)`
        : `zipkv: upstream ${u.url} lacks the last ${u.records} records (${u.failing ?? 'not shipped'}); the next start ships them`,
    );
  }
  if (after.failure) {
    opts.out(`zipkv stopped after a failed sync: ${traffic}; no db written (a restart recovers from what is on disk)`);
    return;
  }
  opts.out(
    `zipkv stopped cleanly: ${traffic}; ` +
      `${after.liveObjects} objects at revision ${after.revision}; db written, directory ready for the original tools`,
  );
}
