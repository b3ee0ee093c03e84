/**
 * The cost of versions on a large store: the first ListObjectVersions (which builds the index of
 * versions from the history), later pages of 1000, and memory per live key before and after.
 *
 *   node --expose-gc dist/bench/versions.js DIR      DIR built by `engine-child.js build DIR N`
 *
 * Prints one JSON object.
 */
import { openStore } from '../src/lib/store/store.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node --expose-gc dist/bench/versions.js DIR\n');
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
const rss = () => {
  gc?.();
  return process.memoryUsage().rss;
};

const before = rss();
const t0 = performance.now();
const store = await openStore(dir, { fsync: false });
const openMs = performance.now() - t0;
const opened = rss();
const { liveObjects, revision } = store.stats();
const t1 = performance.now();
let page = await store.listVersions({ limit: 1000 });
const firstPageMs = performance.now() - t1;
const built = rss();
const pages: number[] = [];
for (let i = 0; i < 50 && page.truncated; i++) {
  const t = performance.now();
  page = await store.listVersions({ keyMarker: page.nextKeyMarker, versionIdMarker: page.nextVersionIdMarker, limit: 1000 });
  pages.push(performance.now() - t);
}
pages.sort((a, b) => a - b);
await store.close();
process.stdout.write(
  JSON.stringify({
    records: revision + 1,
    liveObjects,
    openMs: Math.round(openMs),
    rssPerLiveKeyBytes: Math.round((opened - before) / liveObjects),
    firstListMs: Math.round(firstPageMs),
    laterPageMedianMs: pages.length ? Number(pages[Math.floor(pages.length / 2)]!.toFixed(2)) : undefined,
    laterPageMaxMs: pages.length ? Number(pages[pages.length - 1]!.toFixed(2)) : undefined,
    versionIndexBytesPerRecord: Math.round((built - opened) / (revision + 1)),
  }) + '\n',
);
