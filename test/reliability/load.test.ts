/**
 * Concurrent mixed load on the real `zipkv serve` for a bounded time: PUTs (0 bytes to 1 MB,
 * some larger than the block size), overwrites, copies, deletes, DeleteObjects, multipart
 * completions, GETs and LISTs (during the PUTs and DELETEs) from 8 clients. No request fails,
 * the server's RSS does not grow after a warm-up, and the final state is exactly what the
 * acknowledged operations say, over HTTP and in the db the original reads after SIGTERM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { startZipkvServe } from '../helpers/cli.js';
import { tempDir } from '../helpers/paths.js';
import { formatSummary, internalErrors, makeKeys, newRunState, startWorkload, verifyAgainstModel } from './crash-cycles.js';
import { Prng, md5hex, readAsOriginal, readFromBlock, seedFromEnv, sleep } from './util.js';

const DURATION_MS = Number(process.env['ZIPKV_LOAD_MS'] ?? 20_000);

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

describe('reliability: mixed load on zipkv serve', function () {
  this.timeout(DURATION_MS + 60_000);

  it(`${DURATION_MS / 1000} s of mixed load from 8 clients: no errors, no RSS growth after warm-up, final state as acknowledged`, async () => {
    const seed = seedFromEnv();
    const rng = new Prng(seed);
    const dir = path.join(await tempDir('load'), 'store');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet', '-bs', '1048576', '--checkpoint-bytes', '262144']);
    const pid = server.child.pid!;
    const run = newRunState(seed);
    const workload = startWorkload(server.url, run, { blockSize: 1_048_576, maxBodySize: 1_000_000, bigBodyChance: 0, keys: makeKeys(64), clients: 8, cycle: 0 }, rng);
    const samples: Array<{ t: number; rss: number }> = [];
    const started = Date.now();
    while (Date.now() - started < DURATION_MS) {
      await sleep(250);
      samples.push({ t: Date.now() - started, rss: rssOf(pid) });
    }
    await workload.stop();
    const s = run.summary;
    const detail = `seed ${seed}\n${formatSummary(s)}`;
    expect(s.problems, detail).to.deep.equal([]);
    expect(s.unexpected + s.wrongReads, detail).to.equal(0);
    expect(run.pending, 'every request got its reply').to.have.length(0);

    // RSS: the median of the last quarter against the median of the second quarter.
    const quarter = (q: number) => samples.filter((x) => x.t >= (q * DURATION_MS) / 4 && x.t < ((q + 1) * DURATION_MS) / 4).map((x) => x.rss);
    const warm = median(quarter(1));
    const end = median(quarter(3));
    const peak = Math.max(...samples.map((x) => x.rss));
    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

    // The final state, over HTTP, is exactly the model.
    await verifyAgainstModel(run, server.url, 'after the load');
    expect(s.problems, formatSummary(s)).to.deep.equal([]);
    expect(s.lost + s.corrupted, formatSummary(s)).to.equal(0);
    const stopped = await server.stop('SIGTERM');
    expect(stopped.code, stopped.stderr).to.equal(0);
    expect(internalErrors(stopped.stdout + stopped.stderr)).to.deep.equal([]);
    // And in the db, as the original reads it.
    const view = await readAsOriginal(dir);
    expect(view.problems).to.deep.equal([]);
    const live = [...run.model].filter(([, st]) => st !== undefined);
    expect([...view.live.keys()].sort()).to.deep.equal(live.map(([k]) => k).sort());
    for (const [key, st] of live) expect(md5hex(await readFromBlock(dir, view.live.get(key)!)), key).to.equal(st!.md5);

    const kinds = Object.entries(s.acknowledgedByKind).map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(
      `      seed ${seed}: ${s.acknowledged} acknowledged writes (${kinds}) in ${(DURATION_MS / 1000).toFixed(0)} s; ` +
        `server RSS ${mb(warm)} after warm-up, ${mb(end)} at the end, peak ${mb(peak)}; ${view.blockFiles.length} blocks, revision ${view.records}`,
    );
    expect(end - warm, `RSS grew from ${mb(warm)} to ${mb(end)}`).to.be.lessThan(Math.max(48 * 1024 * 1024, warm * 0.5));
  });
});
