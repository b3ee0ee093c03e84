/**
 * The workloads. Cells are grouped: the servers of a group are started once (each on a fresh
 * temporary directory), loaded with what the group's reads need, and then every cell of the
 * group is run against every server in turn, A B C D E A B C D E, so that slow drifts of the
 * machine (other processes, page cache, thermal state) fall on all servers alike.
 */
import fs from 'node:fs/promises';
import type { Pool } from 'undici';
import {
  type Operation,
  copyObject,
  deleteObject,
  getObject,
  headObject,
  listPage,
  putObject,
  runFixed,
} from './client.js';
import { fillZipkvStore } from './engine-figures.js';
import { type RunningServer, type ServerKind, type StartOptions, freshDir, startServer } from './servers.js';
import { KiB, MiB, prng, sizeLabel } from './util.js';

export type OpName = 'PUT' | 'GET' | 'HEAD' | 'LIST' | 'MIXED';

export interface Cell {
  /** e.g. put-4k-c16 */
  id: string;
  group: string;
  op: OpName;
  /** Object size; undefined for LIST and MIXED. */
  size: number | undefined;
  concurrency: number;
  /** The table the cell is printed in, e.g. "PUT 4 KiB". */
  workload: string;
  /** Short label for charts, e.g. "PUT 4K c16". */
  label: string;
}

export interface GroupEnv {
  quick: boolean;
  /** Keys in the LIST bucket. */
  listKeys: number;
  /** Keys in s3rver's LIST bucket: fewer, as s3rver takes minutes to store 100k objects. */
  s3rverListKeys: number;
  start: StartOptions;
  log: (line: string) => void;
}

export interface Group {
  id: string;
  title: string;
  cells: Cell[];
  /** Starts the servers with the data the cells read; resolves once all are ready. */
  start(kinds: readonly ServerKind[], env: GroupEnv): Promise<RunningServer[]>;
  /** A remark printed with the group's tables. */
  note?(env: GroupEnv): string | undefined;
  /**
   * Servers that cannot do this group's requests, with the reason: they are not started for the
   * group, and the tables show "-" for them.
   */
  unsupported?: Partial<Record<ServerKind, string>>;
  /** The operation of one measured run of `cell` against `server` (the `rep`-th run). */
  operation(cell: Cell, server: RunningServer, rep: number, env: GroupEnv): Operation;
}

function shortSize(size: number): string {
  return size >= MiB ? `${size / MiB}M` : `${size / KiB}K`;
}

function cell(group: string, op: OpName, size: number | undefined, concurrency: number): Cell {
  const sizePart = size === undefined ? '' : `-${shortSize(size).toLowerCase()}`;
  return {
    id: `${op.toLowerCase()}${sizePart}-c${concurrency}`,
    group,
    op,
    size,
    concurrency,
    workload: size === undefined || op === 'HEAD' ? op : `${op} ${sizeLabel(size)}`,
    label: `${op}${size === undefined || op === 'HEAD' ? '' : ` ${shortSize(size)}`} c${concurrency}`,
  };
}

/** Random bytes, generated once: bodies are slices of it. */
let noise: Buffer | undefined;
function randomBody(size: number): Buffer {
  if (!noise || noise.length < size) {
    const rand = prng(7);
    noise = Buffer.allocUnsafe(Math.max(size, 4 * MiB));
    for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE(Math.floor(rand() * 4294967296), i);
  }
  return noise.subarray(0, size);
}

async function startAll(kinds: readonly ServerKind[], options: StartOptions): Promise<RunningServer[]> {
  const started = await Promise.allSettled(kinds.map((k) => startServer(k, options)));
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    throw (failed as PromiseRejectedResult).reason;
  }
  return started.map((r) => (r as PromiseFulfilledResult<RunningServer>).value);
}

const pad = (n: number) => String(n).padStart(8, '0');

// ------------------------------------------------------------------ objects of one size

/** How many objects a GET reads from (round robin), per size: 128 MiB at most. */
function preloadCount(size: number): number {
  return Math.max(16, Math.min(1000, Math.floor((128 * MiB) / size)));
}

/**
 * PUT keys cycle over this many names, the same for every PUT cell and run of a group (later
 * PUTs overwrite earlier ones): this bounds what the ceiling server holds in memory, 256 MiB,
 * whose garbage collection would otherwise slow it down more and more as a group goes on.
 */
function putKeySpace(size: number): number {
  return Math.max(64, Math.min(10_000, Math.floor((256 * MiB) / size)));
}

function objectGroup(size: number, withHead: boolean): Group {
  const id = shortSize(size).toLowerCase();
  const cells = [cell(id, 'PUT', size, 1), cell(id, 'PUT', size, 16), cell(id, 'GET', size, 1), cell(id, 'GET', size, 16)];
  if (withHead) cells.push(cell(id, 'HEAD', size, 16));
  const count = preloadCount(size);
  return {
    id,
    title: `objects of ${sizeLabel(size)}`,
    cells,
    async start(kinds, env) {
      const servers = await startAll(kinds, env.start);
      const body = randomBody(size);
      await Promise.all(servers.map((s) => runFixed(s.url, count, 8, (pool, i) => putObject(pool, `get/${pad(i)}`, body))));
      return servers;
    },
    operation(c, _server, rep) {
      const body = randomBody(size);
      let n = 0;
      switch (c.op) {
        case 'PUT': {
          const space = putKeySpace(size);
          return (pool: Pool) => putObject(pool, `put/${pad(n++ % space)}`, body);
        }
        case 'GET':
          n = rep * 997;
          return (pool: Pool) => getObject(pool, `get/${pad(n++ % count)}`);
        case 'HEAD':
          return (pool: Pool) => headObject(pool, `get/${pad(n++ % count)}`);
        default:
          throw new Error(`no ${c.op} in ${id}`);
      }
    },
  };
}

// ------------------------------------------------------------------ LIST

const listGroup: Group = {
  id: 'list',
  title: 'LIST',
  cells: [cell('list', 'LIST', undefined, 1)],
  note: (env) =>
    `pages of 1000 keys (ListObjects v1, marker = a random key) from a bucket of ${env.listKeys.toLocaleString('en-US')} keys; ` +
    `s3rver's bucket holds ${env.s3rverListKeys.toLocaleString('en-US')} keys (storing 100k objects in s3rver takes minutes), ` +
    "which favours s3rver: its LIST walks the bucket's directory; the ceiling's LIST returns a fixed tiny document",
  unsupported: {
    'ceiling-durable': "its LIST is the ceiling's: a fixed tiny document",
    original:
      'a page of 1000 keys cannot be asked of it: its listing (GET /bucket/ only; /bucket is a 404) ignores max-keys and marker ' +
      'and returns every key under the prefix in random order, and it crashes when a LIST runs alongside a PUT',
  },
  async start(kinds, env) {
    const keys = env.listKeys;
    // zipkv: one store filled through the store API (fsync off), copied for the second server;
    // LIST only reads, so how the keys were written does not matter. s3rver: filled through its
    // own file-system store before it listens. The ceiling's LIST ignores its contents.
    const zipkvKinds: ServerKind[] = kinds.filter((k) => k === 'zipkv' || k === 'zipkv-nofsync');
    const others = kinds.filter((k) => !zipkvKinds.includes(k));
    const zipkvReady = (async () => {
      if (zipkvKinds.length === 0) return [];
      const dirs = await Promise.all(zipkvKinds.map((k) => freshDir(`${k}-list`)));
      const seconds = await fillZipkvStore(dirs[0]!, keys);
      env.log(`  list: zipkv store of ${keys.toLocaleString('en-US')} keys filled in ${seconds.toFixed(1)} s (store API, fsync off)`);
      for (const dir of dirs.slice(1)) await fs.cp(dirs[0]!, dir, { recursive: true });
      return Promise.all(zipkvKinds.map((k, i) => startServer(k, { ...env.start, dir: dirs[i] })));
    })();
    const t0 = performance.now();
    const othersReady = Promise.all(
      others.map((k) => startServer(k, { ...env.start, prefill: k === 's3rver' ? env.s3rverListKeys : undefined })),
    ).then((servers) => {
      if (others.includes('s3rver')) {
        env.log(`  list: s3rver ready with ${env.s3rverListKeys.toLocaleString('en-US')} keys after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      return servers;
    });
    const [a, b] = await Promise.allSettled([zipkvReady, othersReady]);
    if (a.status === 'rejected' || b.status === 'rejected') {
      for (const r of [a, b]) if (r.status === 'fulfilled') await Promise.all(r.value.map((s) => s.stop()));
      throw a.status === 'rejected' ? a.reason : (b as PromiseRejectedResult).reason;
    }
    const all = [...a.value, ...b.value];
    return kinds.map((k) => all.find((s) => s.kind === k)!);
  },
  operation(_c, server, rep, env) {
    // Pages start after a random key (the same sequence for every server), so that every page
    // holds 1000 keys and the walk does not stay in one warm spot.
    const rand = prng(1000 + rep);
    const span = Math.max(1, (server.kind === 's3rver' ? env.s3rverListKeys : env.listKeys) - 1000);
    return (pool: Pool) => listPage(pool, `list/${pad(Math.floor(rand() * span))}`, 1000);
  },
};

// ------------------------------------------------------------------ MIXED

const MIXED_PRELOAD = 200;

/**
 * An S3QL-like mix: 40% PUT of a new object of 64 KiB-1 MiB, 30% GET, 15% HEAD, 5% copy,
 * 10% delete. Keys are chosen among those live and not in use by another request, so that no
 * request fails because of another one. One state per server, kept across its runs: a key a
 * run deleted stays deleted for the next.
 */
class MixedState {
  private readonly live: string[] = [];
  private readonly busy = new Set<string>();
  private rand: () => number = prng(0);
  private counter = 0;

  constructor() {
    for (let i = 0; i < MIXED_PRELOAD; i++) this.live.push(`mix/${pad(i)}`);
  }

  /** Starts a run: the same random sequence for every server's `rep`-th run. */
  run(seed: number): Operation {
    this.rand = prng(seed);
    return this.op;
  }

  /** A live key no other request uses, marked as in use; undefined when none is found. */
  private pick(): { key: string; index: number } | undefined {
    for (let tries = 0; tries < 8 && this.live.length > 0; tries++) {
      const index = Math.floor(this.rand() * this.live.length);
      const key = this.live[index]!;
      if (!this.busy.has(key)) {
        this.busy.add(key);
        return { key, index };
      }
    }
    return undefined;
  }

  private newKey(): string {
    return `mix/new/${pad(this.counter++)}`;
  }

  readonly op: Operation = async (pool) => {
    const r = this.rand();
    if (r < 0.4) {
      const size = 64 * KiB + Math.floor(this.rand() * (MiB - 64 * KiB));
      const key = this.newKey();
      const n = await putObject(pool, key, randomBody(size));
      this.live.push(key);
      return n;
    }
    if (r < 0.9 || this.live.length < MIXED_PRELOAD / 2) {
      const picked = this.pick();
      if (!picked) return putObject(pool, this.newKey(), randomBody(64 * KiB));
      try {
        if (r < 0.7) return await getObject(pool, picked.key);
        if (r < 0.85) return await headObject(pool, picked.key);
        const to = this.newKey();
        const n = await copyObject(pool, picked.key, to);
        this.live.push(to);
        return n;
      } finally {
        this.busy.delete(picked.key);
      }
    }
    const picked = this.pick();
    if (!picked) return 0;
    // Out of the live set before the request, so that nothing else picks it meanwhile.
    const last = this.live.pop()!;
    const index = this.live.indexOf(picked.key);
    if (index >= 0) this.live[index] = last;
    try {
      return await deleteObject(pool, picked.key);
    } finally {
      this.busy.delete(picked.key);
    }
  };
}

const mixedGroup: Group = {
  id: 'mixed',
  title: 'MIXED (S3QL-like)',
  cells: [cell('mixed', 'MIXED', undefined, 16)],
  async start(kinds, env) {
    const servers = await startAll(kinds, env.start);
    const rand = prng(99);
    const sizes = Array.from({ length: MIXED_PRELOAD }, () => 64 * KiB + Math.floor(rand() * (MiB - 64 * KiB)));
    await Promise.all(servers.map((s) => runFixed(s.url, MIXED_PRELOAD, 8, (pool, i) => putObject(pool, `mix/${pad(i)}`, randomBody(sizes[i]!)))));
    return servers;
  },
  operation(_c, server, rep) {
    let state = mixedStates.get(server);
    if (!state) mixedStates.set(server, (state = new MixedState()));
    return state.run(4242 + rep);
  },
};
const mixedStates = new WeakMap<RunningServer, MixedState>();

export const GROUPS: Group[] = [
  objectGroup(4 * KiB, true),
  objectGroup(64 * KiB, false),
  objectGroup(MiB, false),
  objectGroup(4 * MiB, false),
  listGroup,
  mixedGroup,
];
