import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { openStore } from '../../src/lib/store/store.js';
import { parseSize } from '../../src/lib/cli/sizes.js';
import { runZipkv, startZipkvServe, unwrap } from '../helpers/cli.js';
import { tempDir } from '../helpers/paths.js';
import { type TestServer, clientFor, md5, startServer } from '../helpers/server.js';

describe('cli: zipkv serve --upstream, zipkv restore', function () {
  this.timeout(60_000);
  let upstream: TestServer;
  // The AWS way: credentials from the environment.
  const env = { AWS_ACCESS_KEY_ID: 'AKUPSTREAM', AWS_SECRET_ACCESS_KEY: 'upstream-secret-never-logged', AWS_REGION: 'us-east-1' };
  before(async () => {
    upstream = await startServer({ bucket: 'upstream' });
  });
  after(async () => {
    await upstream.stop();
  });

  it('a server killed with -9 is restored from upstream with what it shipped; the copy refuses to write while the lease is fresh, the old directory restarts', async () => {
    const work = await tempDir('cli-up');
    const dir = path.join(work, 'zipdir');
    const flags = ['--upstream', 's3://upstream/site1', '--upstream-endpoint', upstream.url, '--quiet', '-addr', '127.0.0.1:0'];
    const server = await startZipkvServe(['-dir', dir, ...flags], { env });
    expect(server.output()).to.match(/shipped to s3:\/\/upstream\/site1\/ every 1 s/);
    const client = clientFor(server.url);
    const bodies = new Map<string, string>();
    try {
      for (let i = 0; i < 30; i++) {
        const body = `object ${i} `.repeat(100 + i);
        await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: `k${i}`, Body: body }));
        bodies.set(`k${i}`, md5(body));
      }
    } finally {
      client.destroy();
    }
    // Two intervals: everything acknowledged is upstream. Then the machine is lost.
    await new Promise((r) => setTimeout(r, 2500));
    const killed = await server.stop('SIGKILL');
    expect(killed.signal).to.equal('SIGKILL');
    expect(killed.stdout + killed.stderr).to.not.include(env.AWS_SECRET_ACCESS_KEY);

    const restoredDir = path.join(work, 'restored');
    const restored = await runZipkv(['restore', 's3://upstream/site1', '-dir', restoredDir, '--upstream-endpoint', upstream.url, '--all-blocks'], { env });
    expect(restored.code, restored.stderr).to.equal(0);
    expect(restored.stdout).to.match(/restored .*restored from s3:\/\/upstream\/site1\/: \d+ files/);
    const store = await openStore(restoredDir, { readOnly: true });
    try {
      for (const [key, sum] of bodies) expect(md5(await store.read(store.head(key)!)), key).to.equal(sum);
      expect(store.revision).to.equal(29);
    } finally {
      await store.close();
    }

    // The killed server's lease is fresh: another directory may not write the prefix yet.
    const refused = await runZipkv(['serve', '-dir', restoredDir, ...flags], { env });
    expect(refused.code).to.equal(2);
    expect(unwrap(refused.stderr)).to.match(/written by another zipkv server .*lease renewed \d+ s ago/);
    // The directory that held it restarts at once (its lock makes it the one writer).
    const again = await startZipkvServe(['-dir', dir, ...flags], { env });
    const stopped = await again.stop('SIGTERM');
    expect(stopped.code).to.equal(0);
    expect(stopped.stdout).to.match(/upstream s3:\/\/upstream\/site1\/ holds everything/);
    const stats = await runZipkv(['stats', dir, '--json']);
    const upstreamStats = (JSON.parse(stats.stdout) as { upstream: { url: string; recordsBehind: number; blocksUpstream: number } }).upstream;
    expect(upstreamStats.url).to.equal('s3://upstream/site1/');
    expect(upstreamStats.recordsBehind).to.equal(0);
    expect(upstreamStats.blocksUpstream).to.be.greaterThan(0);
  });

  it('--cache-size takes bytes or a size with a unit, and refuses anything else', () => {
    expect(parseSize('1048576', '--cache-size')).to.equal(1048576);
    expect(parseSize('512M', '--cache-size')).to.equal(512 * 2 ** 20);
    expect(parseSize('1.5g', '--cache-size')).to.equal(1.5 * 2 ** 30);
    expect(parseSize('20GiB', '--cache-size')).to.equal(20 * 2 ** 30);
    for (const bad of ['', '0', '-1', '12X', 'lots']) expect(() => parseSize(bad, '--cache-size'), bad).to.throw(/--cache-size must be a size/);
  });

  it('restore refuses a directory that is not empty and an upstream with no store, and says why', async () => {
    const notEmpty = await tempDir('cli-up');
    await import('node:fs/promises').then((fs) => fs.writeFile(path.join(notEmpty, 'x'), 'x'));
    const a = await runZipkv(['restore', 's3://upstream/site1', '-dir', notEmpty, '--upstream-endpoint', upstream.url], { env });
    expect(a.code).to.equal(2);
    expect(unwrap(a.stderr)).to.match(/is not empty/);
    const b = await runZipkv(['restore', 's3://upstream/nothing-here', '-dir', path.join(notEmpty, 'new'), '--upstream-endpoint', upstream.url], { env });
    expect(b.code).to.equal(2);
    expect(unwrap(b.stderr)).to.match(/holds no zipkv store/);
    const c = await runZipkv(['restore', 'http://x/y', '-dir', path.join(notEmpty, 'new2')], { env });
    expect(c.code).to.equal(2);
    expect(unwrap(c.stderr)).to.match(/an upstream is s3:\/\/BUCKET\/PREFIX/);
  });
});
