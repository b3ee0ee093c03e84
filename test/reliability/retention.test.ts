/**
 * Retention end to end, through the real `zipkv serve` and the AWS SDK: with --keep-history 1s
 * and 4 MiB blocks, five cycles of writing and deleting 30 MB shrink the directory, while the
 * server stays up, to at most the live bytes + 4 blocks + 4 MiB within 90 s of the last delete.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DeleteObjectsCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { startZipkvServe } from '../helpers/cli.js';
import { tempDir } from '../helpers/paths.js';
import { clientFor } from '../helpers/server.js';
import { md5hex, sleep } from './util.js';
import { pseudoRandomBytes } from '../store/util.js';

const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(dir)) {
    const stat = await fs.stat(path.join(dir, name)).catch(() => undefined);
    if (stat?.isFile()) total += stat.size;
  }
  return total;
}

describe('reliability: retention bounds disk use while serving', function () {
  this.timeout(180_000);

  it('--keep-history 1s, 4 MiB blocks: after five cycles of writing and deleting 30 MB, the directory shrinks to live + 4 blocks + 4 MiB within 90 s', async () => {
    const dir = path.join(await tempDir('retention'), 'store');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', String(BLOCK), '--keep-history', '1s']);
    const client = clientFor(server.url);
    const live = new Map<string, string>();
    try {
      for (let cycle = 0; cycle < 5; cycle++) {
        // 30 MB of file data in 240 KiB objects, and a few small objects that stay (rewritten each cycle).
        const keys: string[] = [];
        for (let i = 0; i < 125; i++) {
          const key = `data/${cycle}/${i}`;
          await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: key, Body: pseudoRandomBytes(240 * 1024, cycle * 1000 + i + 1) }));
          keys.push(key);
        }
        for (let i = 0; i < 8; i++) {
          const body = pseudoRandomBytes(10_000, 100_000 + cycle * 10 + i);
          await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: `meta/${i}`, Body: body }));
          live.set(`meta/${i}`, md5hex(body));
        }
        for (let at = 0; at < keys.length; at += 100) {
          await client.send(new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Objects: keys.slice(at, at + 100).map((Key) => ({ Key })) } }));
        }
      }
      const liveBytes = 8 * 10_000;
      const bound = liveBytes + 4 * BLOCK + 4 * MiB;
      const peak = await dirBytes(dir);
      const lastDelete = Date.now();
      let size = peak;
      while (size > bound && Date.now() - lastDelete < 90_000) {
        await sleep(500);
        size = await dirBytes(dir);
      }
      const seconds = ((Date.now() - lastDelete) / 1000).toFixed(1);
      console.log(`      directory: ${(peak / MiB).toFixed(1)} MiB after the last delete, ${(size / MiB).toFixed(1)} MiB ${seconds} s later (bound ${(bound / MiB).toFixed(1)} MiB)`);
      expect(size, `${size} bytes after ${seconds} s`).to.be.at.most(bound);
      // The line comes when the compaction has ended, a moment after the blocks it dropped are gone.
      const compacted = /zipkv: compaction: history now begins at revision \d+/;
      for (const until = Date.now() + 10_000; !compacted.test(server.output()) && Date.now() < until; ) await sleep(100);
      expect(server.output()).to.match(compacted);
      // Still serving, with the right bytes.
      for (const [key, md5] of live) {
        const reply = await client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key }));
        expect(md5hex(Buffer.from(await reply.Body!.transformToByteArray())), key).to.equal(md5);
      }
    } finally {
      client.destroy();
      const stopped = await server.stop();
      expect(stopped.code).to.equal(0);
    }
    expect(await fs.stat(dir).then(() => true)).to.equal(true);
  });
});
