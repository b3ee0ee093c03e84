/**
 * The load generator: one undici Pool per measured run (keep-alive, one connection per unit of
 * concurrency, no pipelining), N workers issuing requests back to back for a fixed time.
 *
 * What a run reports: operations that *completed* inside the measurement window (after a short
 * warm-up, before the end), divided by the window's length; their payload bytes; and the
 * latency of each of them (exact samples, sorted for p50/p99). Requests still in flight at the
 * end are awaited but not counted. A window in which fewer than `minOps` (3) requests complete
 * is stretched until they have (10 s at most), so a server that needs seconds per request still
 * gets a figure. Every request is unsigned and path-style (`/bucket/key`).
 */
import { Pool } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';

export const BUCKET = 'bucket';

export interface LoadResult {
  ops: number;
  errors: number;
  /** Payload bytes (request bodies of PUTs, response bodies of GETs and LISTs). */
  bytes: number;
  seconds: number;
  opsPerSec: number;
  /** Decimal megabytes (10^6 bytes) per second. */
  mbPerSec: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** The first failure seen, for the report. */
  firstError?: string;
}

/** One operation: returns the payload bytes it moved. Throwing (or RequestError) counts as an error. */
export type Operation = (pool: Pool, worker: number) => Promise<number>;

export class RequestError extends Error {}

export function newPool(url: string, connections: number): Pool {
  return new Pool(url, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 60_000,
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
}

export function objectPath(key: string): string {
  return `/${BUCKET}/${encodeURIComponent(key).replace(/%2F/g, '/')}`;
}

async function fail(statusCode: number, body: AsyncIterable<Buffer> & { text(): Promise<string> }, what: string): Promise<never> {
  let text = '';
  try {
    text = (await body.text()).slice(0, 300);
  } catch {
    // the body is gone with the connection
  }
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  throw new RequestError(`${what}: HTTP ${statusCode}${code ? ` ${code}` : text ? ` ${text.replace(/\s+/g, ' ').slice(0, 120)}` : ''}`);
}

/** Reads a response body to its end, counting its bytes (events, not an async iterator: cheaper). */
function drain(body: NodeJS.ReadableStream): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    body.on('data', (chunk: Buffer) => {
      n += chunk.length;
    });
    body.once('end', () => resolve(n));
    body.once('error', reject);
  });
}

export async function putObject(pool: Pool, key: string, body: Buffer): Promise<number> {
  const res = await pool.request({ method: 'PUT', path: objectPath(key), body, headers: { 'content-length': String(body.length) } });
  if (res.statusCode !== 200) await fail(res.statusCode, res.body, `PUT ${key}`);
  await res.body.dump();
  return body.length;
}

export async function getObject(pool: Pool, key: string): Promise<number> {
  const res = await pool.request({ method: 'GET', path: objectPath(key) });
  if (res.statusCode !== 200) await fail(res.statusCode, res.body, `GET ${key}`);
  return drain(res.body);
}

export async function headObject(pool: Pool, key: string): Promise<number> {
  const res = await pool.request({ method: 'HEAD', path: objectPath(key) });
  await res.body.dump();
  if (res.statusCode !== 200) throw new RequestError(`HEAD ${key}: HTTP ${res.statusCode}`);
  return 0;
}

export async function deleteObject(pool: Pool, key: string): Promise<number> {
  const res = await pool.request({ method: 'DELETE', path: objectPath(key) });
  if (res.statusCode !== 204 && res.statusCode !== 200) await fail(res.statusCode, res.body, `DELETE ${key}`);
  await res.body.dump();
  return 0;
}

export async function copyObject(pool: Pool, from: string, to: string): Promise<number> {
  const res = await pool.request({
    method: 'PUT',
    path: objectPath(to),
    headers: { 'x-amz-copy-source': objectPath(from), 'content-length': '0' },
  });
  if (res.statusCode !== 200) await fail(res.statusCode, res.body, `COPY ${from} -> ${to}`);
  await res.body.dump();
  return 0;
}

/** One ListObjects (v1) page of at most `maxKeys` keys after `marker`; returns the XML size. */
export async function listPage(pool: Pool, marker: string, maxKeys = 1000): Promise<number> {
  const res = await pool.request({
    method: 'GET',
    path: `/${BUCKET}?max-keys=${maxKeys}&marker=${encodeURIComponent(marker)}`,
  });
  if (res.statusCode !== 200) await fail(res.statusCode, res.body, 'LIST');
  return drain(res.body);
}

/** A growable array of numbers. */
class Samples {
  private data = new Float64Array(4096);
  length = 0;

  push(v: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = v;
  }

  at(i: number): number {
    return this.data[i]!;
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface LoadOptions {
  concurrency: number;
  /** Length of the measurement window. */
  durationMs: number;
  /** Operations completing before this are not measured. */
  warmupMs: number;
  op: Operation;
  /**
   * A window with fewer completions than this is extended until that many have completed (at
   * most `maxExtraMs`): a server that takes seconds per request still gets a figure.
   */
  minOps?: number;
  maxExtraMs?: number;
  /** Give up waiting for requests in flight after the window this long (then the pool is destroyed). */
  drainTimeoutMs?: number;
}

/** Runs `op` from `concurrency` workers for warm-up + duration, and measures the window. */
export async function runLoad(url: string, options: LoadOptions): Promise<LoadResult> {
  const { concurrency, durationMs, warmupMs, op } = options;
  const minOps = options.minOps ?? 3;
  const pool = newPool(url, concurrency);
  // Every success completing after the warm-up: its completion time, latency and bytes.
  const done = new Samples();
  const latency = new Samples();
  const moved = new Samples();
  const failures = new Samples();
  let firstError: string | undefined;
  const start = performance.now();
  const windowStart = start + warmupMs;
  const windowEnd = windowStart + durationMs;
  const hardEnd = windowEnd + (options.maxExtraMs ?? 10_000);
  const keepGoing = () => {
    const now = performance.now();
    return now < windowEnd || (done.length < minOps && now < hardEnd);
  };
  const worker = async (w: number) => {
    while (keepGoing()) {
      const t0 = performance.now();
      try {
        const bytes = await op(pool, w);
        const t1 = performance.now();
        if (t1 >= windowStart) {
          done.push(t1);
          latency.push(t1 - t0);
          moved.push(bytes);
        }
      } catch (err) {
        const t1 = performance.now();
        if (t1 >= windowStart) failures.push(t1);
        firstError ??= (err as Error).message;
        if (!(err instanceof RequestError)) await sleep(10); // a broken connection: do not spin
      }
    }
  };
  const all = Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const drainTimeout = options.drainTimeoutMs ?? 60_000;
  const stopTimer = new AbortController();
  const timedOut = await Promise.race([
    all.then(() => false),
    sleep(hardEnd - performance.now() + drainTimeout, undefined, { signal: stopTimer.signal }).then(
      () => true,
      () => false,
    ),
  ]);
  stopTimer.abort();
  if (timedOut) {
    firstError ??= `requests still in flight ${drainTimeout} ms after the end`;
    await pool.destroy().catch(() => undefined);
  } else {
    await pool.close();
  }
  // The window ends at windowEnd, or later if it had to wait for the minOps-th completion.
  let windowClose = windowEnd;
  let inWindow = 0;
  for (let i = 0; i < done.length; i++) if (done.at(i) <= windowEnd) inWindow++;
  if (inWindow < minOps && done.length > inWindow) {
    const times = Float64Array.from({ length: done.length }, (_, i) => done.at(i)).sort();
    windowClose = Math.min(Math.max(times[Math.min(minOps, times.length) - 1]!, windowEnd), hardEnd);
  }
  const kept: number[] = [];
  let bytes = 0;
  for (let i = 0; i < done.length; i++) {
    if (done.at(i) <= windowClose) {
      kept.push(latency.at(i));
      bytes += moved.at(i);
    }
  }
  let errors = 0;
  for (let i = 0; i < failures.length; i++) if (failures.at(i) <= windowClose) errors++;
  const sorted = Float64Array.from(kept).sort();
  const seconds = (windowClose - windowStart) / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    ops: sorted.length,
    errors,
    bytes,
    seconds,
    opsPerSec: sorted.length / seconds,
    mbPerSec: bytes / 1e6 / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    meanMs: sorted.length ? sum / sorted.length : NaN,
    firstError,
  };
}

/**
 * Runs `count` operations (`op(pool, i)`) at a given concurrency, failing on the first error:
 * used to fill a server before a measured run. Returns the elapsed seconds.
 */
export async function runFixed(
  url: string,
  count: number,
  concurrency: number,
  op: (pool: Pool, i: number) => Promise<unknown>,
): Promise<number> {
  const pool = newPool(url, concurrency);
  const t0 = performance.now();
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: Math.min(concurrency, count) }, async () => {
        while (next < count) await op(pool, next++);
      }),
    );
  } finally {
    await pool.close().catch(() => undefined);
  }
  return (performance.now() - t0) / 1000;
}
