/** Shared test helpers: repository paths, fixture copies and temporary directories. */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/...). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const fixturesDir = path.join(repoRoot, 'test/fixtures');
export const zipkvBin = path.join(repoRoot, 'bin/zipkv');

const made: string[] = [];

/** A fresh temporary directory, removed by `cleanupTempDirs` (called after every test file). */
export async function tempDir(label = 'zipkv'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${label}-`));
  made.push(dir);
  return dir;
}

export async function cleanupTempDirs(): Promise<void> {
  await Promise.all(made.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
}

/** A writable copy of a fixture's data directory (fixtures themselves stay untouched). */
export async function copyFixture(name: string): Promise<string> {
  const dir = path.join(await tempDir(`fixture-${name}`), 'data');
  await fs.mkdir(dir, { recursive: true });
  const src = path.join(fixturesDir, name, 'data');
  try {
    await fs.cp(src, dir, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // `empty` has no data/
  }
  return dir;
}

export interface ManifestLive {
  size: number;
  md5: string;
  metadata: Record<string, string> | null;
}

export interface Manifest {
  live: Record<string, ManifestLive>;
  history: Array<{ rev: number; op: string; key: string; kind: string; location?: { block: number; offset: number; size: number } }>;
  db_next_backend_file?: number;
}

export async function readManifest(name: string): Promise<Manifest> {
  return JSON.parse(await fs.readFile(path.join(fixturesDir, name, 'manifest.json'), 'utf8')) as Manifest;
}

export async function readHistoryTxt(name: string): Promise<string> {
  return fs.readFile(path.join(fixturesDir, name, 'history.txt'), 'utf8');
}
