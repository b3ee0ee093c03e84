/**
 * What the disk under the temporary directories can do, printed with the results: sequential
 * write bandwidth (1 MiB writes, then fdatasync) and the latency of fdatasync after a 4 KiB
 * append. Large PUTs of a server that writes to disk cannot beat the first; a durable server's
 * small-PUT latency is bounded below by the second.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

export interface DiskFigures {
  /** Decimal MB/s, writes and the closing fdatasync included. */
  writeMBps: number;
  writtenBytes: number;
  fdatasyncP50Ms: number;
  fdatasyncP99Ms: number;
}

export async function measureDisk(dir: string, bytes: number): Promise<DiskFigures> {
  const file = path.join(dir, 'disk-probe');
  const handle = await fs.open(file, 'w');
  try {
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    const t0 = performance.now();
    for (let at = 0; at < bytes; at += chunk.length) await handle.write(chunk, 0, chunk.length, at);
    await handle.datasync();
    const writeMBps = bytes / 1e6 / ((performance.now() - t0) / 1000);
    const small = Buffer.alloc(4096, 0x33);
    const lat: number[] = [];
    for (let i = 0; i < 200; i++) {
      await handle.write(small, 0, small.length, bytes + i * small.length);
      const t = performance.now();
      await handle.datasync();
      lat.push(performance.now() - t);
    }
    lat.sort((a, b) => a - b);
    return { writeMBps, writtenBytes: bytes, fdatasyncP50Ms: lat[99]!, fdatasyncP99Ms: lat[197]! };
  } finally {
    await handle.close();
    await fs.rm(file, { force: true });
  }
}
