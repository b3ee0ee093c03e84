/**
 * The upstream tier on a real engine: a single-host Ceph radosgw brought up by scripts/rgw.sh
 * (only when Debian's Ceph packages are installed; otherwise "not measured"). Measured in one run:
 *
 *   - 4 KiB PUT at 16 connections through the durable zipkv without and with --upstream
 *     (alternating rounds): what shipping costs a write;
 *   - 4 KiB PUT and GET at 16 connections through zipkv (with --upstream on RGW) and against
 *     RGW directly, same client: what packing gives a user of RGW;
 *   - MB/s shipped to RGW, and the time to restore that store from RGW;
 *   - GET latency of a 4 KiB object whose block was evicted (a ranged GET upstream).
 */
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, PutBucketPolicyCommand, S3Client } from '@aws-sdk/client-s3';
import Table from 'cli-table3';
import { type LoadResult, getObject, putObject, runLoad } from './client.js';
import { ROOT, freshDir, freePort, startServer } from './servers.js';
import { KiB, MiB } from './util.js';
import { restoreStore } from '../src/lib/store/restore.js';
import { RemoteBucket } from '../src/lib/store/storage/remote.js';
import { openStore } from '../src/lib/store/store.js';

const KEYS = { accessKeyId: 'zipkvtest', secretAccessKey: 'zipkvtestsecret' };
const BUCKET = 'zipkvbench';

export interface UpstreamBenchResults {
  putLocal: LoadResult;
  putShipping: LoadResult;
  viaZipkv: { put: LoadResult; get: LoadResult };
  rgwDirect: { put: LoadResult; get: LoadResult };
  shippedBytes: number;
  shipSeconds: number;
  restoreSeconds: number;
  evictedGetP50Ms: number;
  evictedGetP99Ms: number;
}

function hasRadosgw(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v radosgw && command -v ceph-mon && command -v ceph-osd'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function mean(results: LoadResult[]): LoadResult {
  const avg = (pick: (r: LoadResult) => number) => results.reduce((s, r) => s + pick(r), 0) / results.length;
  return {
    ops: avg((r) => r.ops),
    errors: results.reduce((s, r) => s + r.errors, 0),
    bytes: avg((r) => r.bytes),
    seconds: avg((r) => r.seconds),
    opsPerSec: avg((r) => r.opsPerSec),
    mbPerSec: avg((r) => r.mbPerSec),
    p50Ms: avg((r) => r.p50Ms),
    p99Ms: avg((r) => r.p99Ms),
    meanMs: avg((r) => r.meanMs),
    firstError: results.find((r) => r.firstError)?.firstError,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

export async function runUpstreamBench(options: { quick: boolean; log: (line: string) => void }): Promise<UpstreamBenchResults | string> {
  const { log } = options;
  if (!hasRadosgw()) return 'radosgw is not installed (apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common)';
  const rgwDir = await freshDir('rgw');
  const rgwPort = await freePort();
  const script = path.join(ROOT, 'scripts/rgw.sh');
  log(`  bringing up radosgw on 127.0.0.1:${rgwPort}`);
  await promisify(execFile)('bash', [script, 'up', rgwDir, String(rgwPort)]);
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const env = { AWS_ACCESS_KEY_ID: KEYS.accessKeyId, AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey, AWS_REGION: 'us-east-1' };
  Object.assign(process.env, env); // zipkv children inherit them
  try {
    const admin = new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1', credentials: KEYS });
    await admin.send(new CreateBucketCommand({ Bucket: BUCKET }));
    // The same unsigned client talks to RGW directly: a bucket anyone may read and write (loopback only).
    await admin.send(new CreateBucketCommand({ Bucket: 'bucket' }));
    const policy = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject', 's3:PutObject'], Resource: ['arn:aws:s3:::bucket/*'] }] };
    await admin.send(new PutBucketPolicyCommand({ Bucket: 'bucket', Policy: JSON.stringify(policy) }));
    admin.destroy();

    const windowMs = options.quick ? 750 : 1500;
    const warmupMs = options.quick ? 100 : 250;
    const rounds = options.quick ? 1 : 2;
    const body = Buffer.alloc(4 * KiB, 5);
    const put = (url: string, label: string) => {
      let n = 0;
      return runLoad(url, { concurrency: 16, durationMs: windowMs, warmupMs, op: (pool) => putObject(pool, `${label}/${n++ % 5000}`, body) });
    };
    const get = (url: string, label: string) => {
      let n = 0;
      return runLoad(url, { concurrency: 16, durationMs: windowMs, warmupMs, op: (pool) => getObject(pool, `${label}/${n++ % 1000}`) });
    };

    const local = await startServer('zipkv', {});
    const shipping = await startServer('zipkv', { extraArgs: ['--upstream', `s3://${BUCKET}/put`, '--upstream-endpoint', endpoint] });
    const putLocal: LoadResult[] = [];
    const putShipping: LoadResult[] = [];
    const viaPut: LoadResult[] = [];
    const viaGet: LoadResult[] = [];
    const directPut: LoadResult[] = [];
    const directGet: LoadResult[] = [];
    try {
      for (let round = 0; round < rounds; round++) {
        putLocal.push(await put(local.url, 'p'));
        putShipping.push(await put(shipping.url, 'p'));
        viaPut.push(await put(shipping.url, 'g'));
        directPut.push(await put(endpoint, 'g'));
        viaGet.push(await get(shipping.url, 'g'));
        directGet.push(await get(endpoint, 'g'));
        log(
          `  round ${round + 1}: PUT 4 KiB c16 zipkv ${putLocal.at(-1)!.opsPerSec.toFixed(0)}/s, with --upstream ${putShipping.at(-1)!.opsPerSec.toFixed(0)}/s; ` +
            `RGW direct PUT ${directPut.at(-1)!.opsPerSec.toFixed(0)}/s GET ${directGet.at(-1)!.opsPerSec.toFixed(0)}/s; zipkv GET ${viaGet.at(-1)!.opsPerSec.toFixed(0)}/s`,
        );
      }
    } finally {
      await local.stop();
      await shipping.stop();
    }

    // Shipping and restore, in this process: 1 MiB objects into 40 MiB blocks.
    const mb = options.quick ? 128 : 1024;
    const remote = () => new RemoteBucket({ bucket: BUCKET, prefix: 'ship/' }, { endpoint, credentials: KEYS });
    const remote2 = () => new RemoteBucket({ bucket: BUCKET, prefix: 'evict/' }, { endpoint, credentials: KEYS });
    const dir = await freshDir('ship');
    const store = await openStore(dir, { fsync: false, upstream: { remote: remote(), intervalMs: 3_600_000, log: () => undefined } });
    const piece = Buffer.alloc(MiB, 1);
    for (let i = 0; i < mb; i++) {
      piece.writeUInt32LE(i, 0);
      await store.put(`big/${i}`, piece);
    }
    let started = performance.now();
    await store.shipUpstream();
    const shipSeconds = (performance.now() - started) / 1000;
    const shippedBytes = store.stats().upstream!.shippedBytes;
    await store.close();
    log(`  shipped ${(shippedBytes / MiB).toFixed(0)} MiB to RGW in ${shipSeconds.toFixed(1)} s`);
    const restoreDir = path.join(await freshDir('restore'), 'store');
    const r = remote();
    started = performance.now();
    await restoreStore(r, restoreDir, { allBlocks: true });
    const restoreSeconds = (performance.now() - started) / 1000;
    r.close();
    log(`  restored it in ${restoreSeconds.toFixed(1)} s`);

    // Evicted reads: 4 KiB objects in 1 MiB blocks, all but one block evicted; reopened so no body is cached.
    const evictDir = await freshDir('evict');
    const small = Buffer.alloc(4 * KiB, 2);
    let s = await openStore(evictDir, { fsync: false, blockSize: MiB, upstream: { remote: remote2(), intervalMs: 3_600_000, cacheBytes: MiB, log: () => undefined } });
    for (let i = 0; i < 2000; i++) await s.put(`s/${i}`, small);
    await s.shipUpstream();
    await s.close();
    s = await openStore(evictDir, { fsync: false, blockSize: MiB, upstream: { remote: remote2(), intervalMs: 3_600_000, cacheBytes: MiB, log: () => undefined } });
    const times: number[] = [];
    for (let i = 0; i < 300; i++) {
      const info = s.head(`s/${(i * 7) % 1700}`)!;
      const t = performance.now();
      await s.read(info);
      times.push(performance.now() - t);
    }
    await s.close();
    times.sort((a, b) => a - b);
    return {
      putLocal: mean(putLocal),
      putShipping: mean(putShipping),
      viaZipkv: { put: mean(viaPut), get: mean(viaGet) },
      rgwDirect: { put: mean(directPut), get: mean(directGet) },
      shippedBytes,
      shipSeconds,
      restoreSeconds,
      evictedGetP50Ms: percentile(times, 50),
      evictedGetP99Ms: percentile(times, 99),
    };
  } finally {
    await promisify(execFile)('bash', [script, 'down', rgwDir]).catch(() => undefined);
  }
}

export function formatUpstream(r: UpstreamBenchResults | string | undefined): string {
  if (r === undefined) return '';
  if (typeof r === 'string') return `upstream tier: not measured (${r})`;
  const table = new Table({ head: ['4 KiB, 16 connections', 'ops/s', 'p99 ms', 'ratio'], colAligns: ['left', 'right', 'right', 'right'], style: { head: [], border: [] } });
  const row = (label: string, x: LoadResult, base?: LoadResult) =>
    table.push([label, x.opsPerSec.toFixed(0), x.p99Ms.toFixed(1), base ? `${(x.opsPerSec / base.opsPerSec).toFixed(2)}x` : '']);
  row('PUT zipkv (durable)', r.putLocal);
  row('PUT zipkv --upstream RGW', r.putShipping, r.putLocal);
  row('PUT RGW directly', r.rgwDirect.put);
  row('PUT zipkv on RGW', r.viaZipkv.put, r.rgwDirect.put);
  row('GET RGW directly', r.rgwDirect.get);
  row('GET zipkv on RGW', r.viaZipkv.get, r.rgwDirect.get);
  const mbps = r.shippedBytes / MiB / r.shipSeconds;
  return [
    'Upstream tier on a single-host Ceph radosgw (ratios: --upstream over without; zipkv on RGW over RGW directly)',
    table.toString(),
    `shipped ${(r.shippedBytes / MiB).toFixed(0)} MiB in ${r.shipSeconds.toFixed(1)} s (${mbps.toFixed(0)} MiB/s); restored in ${r.restoreSeconds.toFixed(1)} s ` +
      `(${(r.shippedBytes / MiB / r.restoreSeconds).toFixed(0)} MiB/s); GET of an evicted 4 KiB object p50 ${r.evictedGetP50Ms.toFixed(1)} ms, p99 ${r.evictedGetP99Ms.toFixed(1)} ms`,
  ].join('\n');
}
