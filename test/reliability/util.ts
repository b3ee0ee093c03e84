/**
 * Helpers shared by the reliability tests: a small seeded PRNG, a plain HTTP S3 client (no SDK:
 * the tests need to know exactly what was sent and when the reply came), a model of the
 * objects clients were told are stored, and checks of a directory as the original reads it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { decodeMetadata } from '../../src/lib/store/schema.js';
import { decodeDbReflect } from '../helpers/reference-db.js';

// ------------------------------------------------------------------ PRNG

/** mulberry32: tiny, fast, and the same sequence for the same seed on every machine. */
export class Prng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** A fresh generator whose seed is drawn from this one (one per client, per cycle). */
  fork(): Prng {
    return new Prng(Math.floor(this.next() * 2 ** 32));
  }

  /** `size` bytes of xorshift output seeded from this generator (fast enough for megabytes). */
  bytes(size: number): Buffer {
    const buf = Buffer.allocUnsafe(size);
    let x = (Math.floor(this.next() * 2 ** 32) | 1) >>> 0;
    let i = 0;
    for (; i + 4 <= size; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf.writeInt32LE(x | 0, i);
    }
    for (; i < size; i++) buf[i] = (x >>> (8 * (i & 3))) & 0xff;
    return buf;
  }
}

/** A seed from the environment (ZIPKV_SEED) or the clock, so a failing run can be repeated. */
export function seedFromEnv(): number {
  const fromEnv = process.env['ZIPKV_SEED'];
  if (fromEnv !== undefined && /^\d+$/.test(fromEnv)) return Number(fromEnv) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function md5hex(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

export function md5base64(data: Uint8Array): string {
  return createHash('md5').update(data).digest('base64');
}

// ------------------------------------------------------------------ HTTP

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Percent-encodes a key for a path, keeping '/' (as S3 clients do). */
export function keyPath(bucket: string, key: string): string {
  return `/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/** One request; resolves with the whole reply, rejects on any connection error or timeout. */
export function request(
  base: string,
  method: string,
  pathAndQuery: string,
  opts: { headers?: OutgoingHttpHeaders; body?: Buffer | string; agent?: http.Agent; timeoutMs?: number } = {},
): Promise<Reply> {
  const url = new URL(base);
  return new Promise<Reply>((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ...opts.headers };
    if (opts.body !== undefined && headers['content-length'] === undefined) headers['content-length'] = Buffer.byteLength(opts.body);
    if (opts.body === undefined && (method === 'PUT' || method === 'POST') && headers['content-length'] === undefined) {
      headers['content-length'] = 0;
    }
    const req = http.request(
      { host: url.hostname, port: Number(url.port), method, path: pathAndQuery, headers, agent: opts.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (!res.complete) return reject(new Error(`${method} ${pathAndQuery}: reply cut short`));
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
        res.on('aborted', () => reject(new Error(`${method} ${pathAndQuery}: reply aborted`)));
      },
    );
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`${method} ${pathAndQuery}: timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The text of every `<name>` element (XML entities decoded). */
export function xmlAll(xml: string | Buffer, name: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`, 'g');
  for (const m of xml.toString().matchAll(re)) out.push(unescapeXml(m[1]!));
  return out;
}

export function xmlOne(xml: string | Buffer, name: string): string | undefined {
  return xmlAll(xml, name)[0];
}

export function unescapeXml(text: string): string {
  return text.replace(/&(?:(amp|lt|gt|quot|apos)|#x([0-9a-fA-F]+)|#(\d+));/g, (_w, named: string, hex: string, dec: string) => {
    if (named) return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[named]!;
    return String.fromCodePoint(hex ? Number.parseInt(hex, 16) : Number(dec));
  });
}

export interface Listed {
  key: string;
  size: number;
  etag: string;
}

/** Every key of the bucket, through ListObjectsV2 pages. */
export async function listAll(base: string, bucket = 'bucket', agent?: http.Agent): Promise<Listed[]> {
  const out: Listed[] = [];
  let token: string | undefined;
  for (let page = 0; page < 10_000; page++) {
    const q = new URLSearchParams({ 'list-type': '2', 'max-keys': '1000' });
    if (token !== undefined) q.set('continuation-token', token);
    const reply = await request(base, 'GET', `/${bucket}?${q.toString()}`, { agent });
    if (reply.status !== 200) throw new Error(`listing failed: ${reply.status} ${reply.body.toString()}`);
    const xml = reply.body.toString();
    for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      out.push({
        key: xmlOne(m[1]!, 'Key')!,
        size: Number(xmlOne(m[1]!, 'Size')),
        etag: xmlOne(m[1]!, 'ETag')!.replace(/"/g, ''),
      });
    }
    if (xmlOne(xml, 'IsTruncated') !== 'true') return out;
    token = xmlOne(xml, 'NextContinuationToken');
  }
  throw new Error('listing never ended');
}

// ------------------------------------------------------------------ model of objects

/** What a client was told is stored under a key. */
export interface ObjState {
  md5: string;
  size: number;
  etag: string;
  contentType: string;
  /** x-amz-meta-* headers, lower-case names. */
  meta: Record<string, string>;
}

/** Absent is undefined. */
export type KeyState = ObjState | undefined;

export function sameState(a: KeyState, b: KeyState): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.md5 !== b.md5 || a.size !== b.size || a.etag !== b.etag || a.contentType !== b.contentType) return false;
  const ka = Object.keys(a.meta).sort();
  const kb = Object.keys(b.meta).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a.meta[k] === b.meta[k]);
}

export function describeState(s: KeyState): string {
  if (!s) return 'absent';
  return `${s.size}B md5=${s.md5} etag=${s.etag} type=${s.contentType} meta=${JSON.stringify(s.meta)}`;
}

/** Reads one object back over HTTP as a KeyState; undefined on 404. */
export async function fetchState(base: string, bucket: string, key: string, agent?: http.Agent): Promise<{ state: KeyState; problem?: string }> {
  const reply = await request(base, 'GET', keyPath(bucket, key), { agent });
  if (reply.status === 404) return { state: undefined };
  if (reply.status !== 200) return { state: undefined, problem: `GET ${key}: status ${reply.status} ${reply.body.toString().slice(0, 200)}` };
  const meta: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.headers)) {
    if (name.startsWith('x-amz-meta-')) meta[name] = Array.isArray(value) ? value.join(',') : (value ?? '');
  }
  const length = Number(reply.headers['content-length']);
  const state: ObjState = {
    md5: md5hex(reply.body),
    size: reply.body.length,
    etag: String(reply.headers['etag'] ?? '').replace(/"/g, ''),
    contentType: String(reply.headers['content-type'] ?? ''),
    meta,
  };
  if (length !== reply.body.length) return { state, problem: `GET ${key}: Content-Length ${length} but ${reply.body.length} bytes` };
  return { state };
}

// ------------------------------------------------------------------ the directory as the original reads it

export interface OriginalView {
  dbFile: string;
  nextBlockId: number;
  blockFiles: string[];
  records: number;
  /** key -> location and metadata of the live objects, replayed from the db alone. */
  live: Map<string, { block: number; offset: number; size: number; metadata: Record<string, string> }>;
  problems: string[];
}

/**
 * Reads a directory the way the original zipkvserver does after a clean shutdown: exactly one
 * db slot, gunzip, decode (reflection, not zipkv's own scanner), every record complete
 * (oneof set, a Location on every put, inside an existing block below next_backend_file), and
 * no block file at or past next_backend_file.
 */
export async function readAsOriginal(dir: string): Promise<OriginalView> {
  const names = await fs.readdir(dir);
  const dbs = names.filter((n) => /^db\d{10}$/.test(n)).sort();
  const blockFiles = names.filter((n) => /^block\d{10}$/.test(n)).sort();
  const problems: string[] = [];
  if (dbs.length !== 1) problems.push(`expected exactly one db file, found ${JSON.stringify(dbs)}`);
  const dbFile = path.join(dir, dbs[0] ?? 'db0000000000');
  const db = decodeDbReflect(zlib.gunzipSync(await fs.readFile(dbFile))) as {
    nextBackendFile?: number;
    history?: Array<{ put?: { filename?: string; location?: Record<string, unknown> }; delete?: { filename?: string }; record?: string }>;
  };
  const nextBlockId = db.nextBackendFile ?? 0;
  // The original writes its next block as block<next_backend_file>: no file may be there or
  // beyond. Below it, blocks that compaction found unreferenced may be gone (the original opens
  // a block only when a record points into it; those are checked below).
  for (const name of blockFiles) {
    if (Number(name.slice(5)) >= nextBlockId) problems.push(`${name} is not below next_backend_file ${nextBlockId}`);
  }
  const sizes = new Map<number, number>();
  for (const name of blockFiles) sizes.set(Number(name.slice(5)), (await fs.stat(path.join(dir, name))).size);
  const live: OriginalView['live'] = new Map();
  const history = db.history ?? [];
  history.forEach((record, rev) => {
    if (record.put) {
      const loc = record.put.location;
      if (!loc) return void problems.push(`revision ${rev}: a put without a Location`);
      const block = Number(loc['backendFile'] ?? 0);
      const offset = Number(loc['offset'] ?? 0);
      const size = Number(loc['size'] ?? 0);
      if (size > 0) {
        if (block >= nextBlockId) problems.push(`revision ${rev}: points into block ${block}, not below next_backend_file ${nextBlockId}`);
        const have = sizes.get(block);
        if (have === undefined || offset + size > have) problems.push(`revision ${rev}: ${offset}+${size} is past the end of block ${block} (${have} bytes)`);
      }
      const metadata = loc['metadata'] ? decodeMetadata(loc['metadata'] as Uint8Array) : {};
      live.set(record.put.filename ?? '', { block, offset, size, metadata });
    } else if (record.delete) {
      live.delete(record.delete.filename ?? '');
    } else {
      problems.push(`revision ${rev}: a HistoryRecord with no record set`);
    }
  });
  return { dbFile, nextBlockId, blockFiles, records: history.length, live, problems };
}

/** The bytes of a live object read straight from its block file, as the original serves them. */
export async function readFromBlock(dir: string, loc: { block: number; offset: number; size: number }): Promise<Buffer> {
  if (loc.size === 0) return Buffer.alloc(0);
  const handle = await fs.open(path.join(dir, `block${String(loc.block).padStart(10, '0')}`), 'r');
  try {
    const buf = Buffer.alloc(loc.size);
    const { bytesRead } = await handle.read(buf, 0, loc.size, loc.offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

// ------------------------------------------------------------------ memory

/** A gc() function: the one --expose-gc gives, or one obtained at run time through V8 flags. */
export async function getGc(): Promise<() => void> {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** heapUsed after full collections (several, so that finalisers and weak refs settle). */
export async function settledHeap(gc: () => void): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc();
    await sleep(20);
  }
  return process.memoryUsage().heapUsed;
}
