/**
 * The servers under test, each a child process on a free loopback port with a fresh temporary
 * directory, so that server and load generator never share an event loop.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { BUCKET } from './client.js';

/** The repository root (this file runs from dist/bench/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ZIPKV_BIN = path.join(ROOT, 'bin', 'zipkv');
const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));

export type ServerKind = 'zipkv' | 'zipkv-nofsync' | 's3rver' | 'ceiling' | 'ceiling-durable' | 'original';

/** Every kind the bench knows, in the order they take turns; see activeKinds() for a given run. */
export const SERVER_KINDS: readonly ServerKind[] = ['zipkv', 'zipkv-nofsync', 'original', 's3rver', 'ceiling', 'ceiling-durable'];

export const SERVER_LABELS: Record<ServerKind, string> = {
  zipkv: 'zipkv (durable)',
  'zipkv-nofsync': 'zipkv --no-fsync',
  original: 'zipkvserver (Go original, memory only, no fsync)',
  s3rver: 's3rver',
  ceiling: 'ceiling (Node, in memory)',
  'ceiling-durable': 'durable ceiling (Node, + one fdatasync per batch)',
};

/** The original Go server's executable name, looked up on the PATH. */
export const ORIGINAL_NAME = 'zipkvserver';

/** The same block size as zipkv's default (and the original's own default): 40 MiB. */
const ORIGINAL_BLOCK_SIZE = 40 * 1024 * 1024;

let originalPath: string | null | undefined;

/** The path of `zipkvserver` found on the PATH, or undefined when there is none. */
export function findOriginal(): string | undefined {
  if (originalPath === undefined) {
    originalPath = null;
    for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
      if (!dir) continue;
      const candidate = path.join(dir, ORIGINAL_NAME);
      try {
        accessSync(candidate, fsConstants.X_OK);
        originalPath = candidate;
        break;
      } catch {
        // not here
      }
    }
  }
  return originalPath ?? undefined;
}

/** The kinds of this run: every kind, less the original when `zipkvserver` is not on the PATH. */
export function activeKinds(): ServerKind[] {
  return SERVER_KINDS.filter((k) => k !== 'original' || findOriginal() !== undefined);
}

export interface StartOptions {
  /** Extra node arguments for zipkv children (e.g. --cpu-prof --cpu-prof-dir=...). */
  zipkvNodeArgs?: string[];
  /** Directory to use instead of a fresh one (removed on stop all the same). */
  dir?: string;
  /** s3rver only: objects to store before listening (see s3rver-server.ts). */
  prefill?: number;
  /** Override durability for a zipkv child (used to fill a store fast). */
  fsync?: boolean;
  /** More `zipkv serve` arguments (e.g. --keep-history). */
  extraArgs?: string[];
  /** A zipkv child's stdout, as it comes (its start-up, compaction and summary lines with --quiet). */
  onStdout?: (text: string) => void;
}

export interface RunningServer {
  kind: ServerKind;
  url: string;
  port: number;
  dir: string | undefined;
  pid: number;
  /** Stops the child (SIGTERM, then SIGKILL after a grace period) and removes its directory. */
  stop(options?: { keepDir?: boolean }): Promise<void>;
}

let tempRoot: Promise<string> | undefined;
const running = new Set<ChildProcess>();

/** A directory under which every temporary directory of this run lives (one, however many ask at once). */
export function benchTempRoot(): Promise<string> {
  tempRoot ??= fs.mkdtemp(path.join(os.tmpdir(), 'zipkv-bench-'));
  return tempRoot;
}

export async function freshDir(name: string): Promise<string> {
  return fs.mkdtemp(path.join(await benchTempRoot(), `${name}-`));
}

/** Kills every child still running and removes the temporary root; safe to call twice. */
export async function cleanupAll(): Promise<void> {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
  if (tempRoot) {
    const root = tempRoot;
    tempRoot = undefined;
    await fs.rm(await root, { recursive: true, force: true });
  }
}

/** Synchronous last resort for an exit without cleanup (e.g. an uncaught error). */
export function killAllSync(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, stderr: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited (${child.exitCode ?? child.signalCode}) before listening: ${stderr().trim()}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`server did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** The last `bytes` bytes of a file ('' if it cannot be read). */
function tail(file: string, bytes: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    const buffer = Buffer.alloc(Math.min(size, bytes));
    readSync(fd, buffer, 0, buffer.length, size - buffer.length);
    return buffer.toString('utf8');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export async function startServer(kind: ServerKind, options: StartOptions = {}): Promise<RunningServer> {
  const port = await freePort();
  const ownDir = kind !== 'ceiling';
  const dir = options.dir ?? (kind === 'ceiling' ? undefined : await freshDir(kind));
  let args: string[];
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  switch (kind) {
    case 'zipkv':
    case 'zipkv-nofsync': {
      const fsync = options.fsync ?? kind === 'zipkv';
      args = [
        ...(options.zipkvNodeArgs ?? []),
        ZIPKV_BIN,
        'serve',
        '-dir',
        dir!,
        '-addr',
        `127.0.0.1:${port}`,
        '--quiet',
        ...(fsync ? [] : ['--no-fsync']),
        ...(options.extraArgs ?? []),
      ];
      break;
    }
    case 's3rver':
      args = [path.join(BENCH_DIST, 's3rver-server.js'), String(port), dir!, String(options.prefill ?? 0)];
      break;
    case 'ceiling':
      args = [path.join(BENCH_DIST, 'ceiling-server.js'), String(port)];
      break;
    case 'ceiling-durable':
      args = [path.join(BENCH_DIST, 'ceiling-server.js'), String(port), dir!];
      break;
    case 'original':
      args = ['-dir', dir!, '-addr', `127.0.0.1:${port}`, '-bucket', BUCKET, '-bs', String(ORIGINAL_BLOCK_SIZE)];
      break;
  }
  let child: ChildProcess;
  let output: () => string;
  let logFile: string | undefined;
  if (kind === 'original') {
    const bin = findOriginal();
    if (!bin) throw new Error(`original: ${ORIGINAL_NAME} is not on the PATH`);
    // It logs every request (log.Printf to stderr, no flag to turn it off). Its stdout and
    // stderr go to a file next to its directory rather than through a pipe into this process,
    // which is also the load generator and would otherwise spend its time reading those lines.
    logFile = `${dir!}.log`;
    const fd = openSync(logFile, 'w');
    try {
      child = spawn(bin, args, { cwd: ROOT, env, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const file = logFile;
    output = () => tail(file, 8000);
  } else {
    child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', options.onStdout ? 'pipe' : 'ignore', 'pipe'] });
    if (options.onStdout) {
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', options.onStdout);
    }
    let err = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      err = (err + s).slice(-4000);
    });
    output = () => err;
  }
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForPort(port, child, output, options.prefill ? 300_000 : 30_000);
  } catch (e) {
    child.kill('SIGKILL');
    running.delete(child);
    if (ownDir && dir) await fs.rm(dir, { recursive: true, force: true });
    if (logFile) await fs.rm(logFile, { force: true });
    throw new Error(`${kind}: ${(e as Error).message}`);
  }
  let stopped = false;
  return {
    kind,
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    pid: child.pid!,
    async stop(stopOptions = {}) {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const grace = new AbortController();
        const killed = await Promise.race([
          exited.then(() => false),
          sleep(20_000, undefined, { signal: grace.signal }).then(
            () => true,
            () => false,
          ),
        ]);
        grace.abort();
        if (killed) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      running.delete(child);
      const err = output();
      if (kind === 'original') {
        // After SIGTERM it writes its open block and db, closes its listener and then ends
        // through log.Fatal, so exit status 1 is its normal end; "Successfully written files."
        // without any "Failed" is its clean one (docs/benchmarks.md, "The original").
        const clean = child.exitCode === 1 && err.includes('Successfully written files.') && !err.includes('Failed');
        if (!clean) {
          const last = err.trim().split('\n').slice(-12).join('\n');
          process.stderr.write(`bench: original exited with ${child.exitCode ?? child.signalCode} without a clean shutdown: ${last.slice(-1000)}\n`);
        }
      } else if (child.exitCode !== 0 && child.signalCode !== 'SIGTERM' && err.trim()) {
        process.stderr.write(`bench: ${kind} exited with ${child.exitCode ?? child.signalCode}: ${err.trim().slice(-1000)}\n`);
      }
      if (logFile) await fs.rm(logFile, { force: true });
      if (ownDir && dir && !stopOptions.keepDir) await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
