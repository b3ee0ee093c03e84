/** Small helpers shared by the store tests. */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Store } from '../../src/lib/store/store.js';

export function md5hex(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

/** Deterministic pseudo-random bytes (xorshift), so failures can be reproduced. */
export function pseudoRandomBytes(size: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let x = (seed | 0) || 0x9e3779b9;
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeInt32LE(x | 0, i);
  }
  for (; i < size; i++) buf[i] = i & 0xff;
  return buf;
}

export function randomBody(size: number): Buffer {
  return randomBytes(size);
}

/** Every live key, in listing order, through pages of `page` entries. */
export function allKeys(store: Store, page = 1000): string[] {
  const keys: string[] = [];
  let after: string | undefined;
  for (;;) {
    const result = store.list({ after, limit: page });
    keys.push(...result.objects.map((o) => o.key));
    if (!result.truncated) return keys;
    after = result.nextMarker;
  }
}

/** MD5 of an object's bytes read through a stream, or undefined when the key is not live. */
export async function md5Of(store: Store, key: string): Promise<string | undefined> {
  const info = store.head(key);
  if (!info) return undefined;
  const hash = createHash('md5');
  for await (const chunk of store.createReadStream(info)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** UTF-8 byte order, S3's listing order. */
export function utf8Sort(keys: string[]): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

/** name -> contents of every regular file in a directory tree (relative paths). */
export async function snapshotDir(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (sub: string) => {
    for (const entry of await fs.readdir(path.join(dir, sub), { withFileTypes: true })) {
      const rel = path.join(sub, entry.name);
      if (entry.isDirectory()) await walk(rel);
      else out.set(rel, await fs.readFile(path.join(dir, rel)));
    }
  };
  await walk('');
  return out;
}

/** Copies a store directory as a crash would leave it: without the (live) lock file. */
export async function copyStoreDir(from: string, to: string): Promise<void> {
  await fs.rm(to, { recursive: true, force: true });
  await fs.cp(from, to, { recursive: true });
  await fs.rm(path.join(to, 'zipkv.lock'), { force: true });
}

export async function blockFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => /^block\d{10}$/.test(n)).sort();
}

export async function dbFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => /^db\d{10}$/.test(n)).sort();
}

/** Runs `fn` over `items` with at most `width` calls in flight. */
export async function parallel<T>(items: T[], width: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}
