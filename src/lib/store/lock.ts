/**
 * One writer per directory. The lock file holds the owner's pid; a lock whose pid is no longer
 * alive (a process killed with kill -9) is stale and taken over.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { StoreLockedError } from './errors.js';
import { LOCK_FILE } from './files.js';

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class DirectoryLock {
  private constructor(private readonly file: string) {}

  static async acquire(dir: string): Promise<DirectoryLock> {
    const file = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 5; attempt++) {
      // Written aside and linked into place, so the lock file never exists without its pid.
      const mine = `${file}.${process.pid}`;
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
      if (owner !== undefined && isAlive(owner)) {
        throw new StoreLockedError(
          `${dir} is in use by process ${owner} (lock file ${file}); stop that process first`,
        );
      }
      // Stale (its owner is gone) or unreadable: move it aside atomically, then retry, so
      // two processes that both saw it stale cannot both win.
      const aside = `${file}.stale-${process.pid}`;
      try {
        await fs.rename(file, aside);
        await fs.rm(aside, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    throw new StoreLockedError(`${dir}: could not take the lock file ${file}`);
  }

  /** The pid holding the directory, if a live process does. */
  static async holder(dir: string): Promise<number | undefined> {
    const owner = await readOwner(path.join(dir, LOCK_FILE));
    return owner !== undefined && isAlive(owner) ? owner : undefined;
  }

  async release(): Promise<void> {
    await fs.rm(this.file, { force: true });
  }
}

async function readOwner(file: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await fs.readFile(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
