/**
 * One writer per directory. The lock file holds the owner's pid; a lock whose pid is no longer
 * alive (a process killed with kill -9) is stale and taken over.
 *
 * Taking the lock is a hard link of a private file (already holding the pid) to the lock name,
 * which fails if the name exists. Removing a stale lock is done only while holding a second,
 * short-lived "break" file, and only after reading the lock again under it: two processes that
 * both find the same stale lock cannot then remove a lock the other has just taken.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StoreLockedError } from './errors.js';
import { LOCK_FILE } from './files.js';

/** A break file older than this belongs to a process that died while breaking a lock. */
const STALE_BREAK_MS = 10_000;

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A name no other attempt uses, in this process or another. */
function uniqueName(file: string, what: string): string {
  return `${file}.${what}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

export class DirectoryLock {
  private constructor(private readonly file: string) {}

  static async acquire(dir: string): Promise<DirectoryLock> {
    const file = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 5; attempt++) {
      // Written aside and linked into place, so the lock file never exists without its pid.
      const mine = uniqueName(file, 'new');
      await fs.writeFile(mine, `${process.pid}\n`, { mode: 0o644 });
      try {
        await fs.link(mine, file);
        return new DirectoryLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        await fs.rm(mine, { force: true });
      }
      const owner = await readOwner(file);
      if (owner.pid !== undefined && isAlive(owner.pid)) {
        throw new StoreLockedError(`${dir} is in use by process ${owner.pid} (lock file ${file}); stop that process first`);
      }
      if (!owner.exists) continue; // released meanwhile: try again
      await breakStaleLock(file, owner.content);
    }
    throw new StoreLockedError(`${dir}: could not take the lock file ${file}`);
  }

  /** The pid holding the directory, if a live process does. */
  static async holder(dir: string): Promise<number | undefined> {
    const { pid } = await readOwner(path.join(dir, LOCK_FILE));
    return pid !== undefined && isAlive(pid) ? pid : undefined;
  }

  async release(): Promise<void> {
    await fs.rm(this.file, { force: true });
  }
}

/**
 * Removes the lock file if it still holds `staleContent` (a dead or unreadable owner). Done
 * under the break file, so the check and the removal cannot interleave with another breaker.
 */
async function breakStaleLock(file: string, staleContent: string | undefined): Promise<void> {
  const breakFile = `${file}.break`;
  const mine = uniqueName(file, 'break');
  await fs.writeFile(mine, `${process.pid}\n`, { mode: 0o644 });
  try {
    await fs.link(mine, breakFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Someone else is breaking the lock right now, or died doing it (its pid is gone, or long ago).
    const st = await fs.stat(breakFile).catch(() => undefined);
    const breaker = await readOwner(breakFile);
    const dead = breaker.exists && breaker.pid !== undefined && !isAlive(breaker.pid);
    if (st && (dead || Date.now() - st.mtimeMs > STALE_BREAK_MS)) await fs.rm(breakFile, { force: true });
    else await new Promise((resolve) => setTimeout(resolve, 20));
    return;
  } finally {
    await fs.rm(mine, { force: true });
  }
  try {
    const again = await readOwner(file);
    if (again.exists && again.content === staleContent && !(again.pid !== undefined && isAlive(again.pid))) {
      await fs.rm(file, { force: true });
    }
  } finally {
    await fs.rm(breakFile, { force: true });
  }
}

async function readOwner(file: string): Promise<{ exists: boolean; content?: string; pid?: number }> {
  let content: string;
  try {
    content = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false };
    throw err;
  }
  const pid = Number.parseInt(content, 10);
  return { exists: true, content, pid: Number.isInteger(pid) && pid > 0 ? pid : undefined };
}
