/**
 * s3rver (the npm package, file-system store) as a child process of the benchmark, with one
 * bucket named `bucket`.
 *
 * Usage: node dist/bench/s3rver-server.js PORT DIRECTORY [PREFILL]
 *
 * PREFILL > 0 stores that many 16-byte objects (list/00000000, list/00000001, ...) before the
 * server starts listening, through s3rver's own file-system store (the code its PUT handler
 * calls), without HTTP: filling 100k keys over HTTP would take minutes.
 */
import { createRequire } from 'node:module';

interface S3rverInstance {
  run(): Promise<unknown>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;
interface FilesystemStore {
  putObject(object: unknown): Promise<unknown>;
}

// s3rver is CommonJS and ships no type declarations.
const require = createRequire(import.meta.url);
const S3rver = require('s3rver') as S3rverClass;

const port = Number(process.argv[2]);
const directory = process.argv[3];
const prefill = Number(process.argv[4] ?? 0);
if (!Number.isInteger(port) || port <= 0 || !directory || !Number.isInteger(prefill)) {
  process.stderr.write('usage: s3rver-server PORT DIRECTORY [PREFILL]\n');
  process.exit(2);
}

if (prefill > 0) {
  const Store = require('s3rver/lib/stores/filesystem') as new (dir: string) => FilesystemStore;
  const S3Object = require('s3rver/lib/models/object') as new (bucket: string, key: string, content: Buffer, metadata: Record<string, string>) => unknown;
  const store = new Store(directory);
  const body = Buffer.alloc(16, 0x61);
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < prefill) {
        const key = `list/${String(next++).padStart(8, '0')}`;
        await store.putObject(new S3Object('bucket', key, body, { 'content-length': String(body.length) }));
      }
    }),
  );
}

const server = new S3rver({
  port,
  address: '127.0.0.1',
  directory,
  silent: true,
  configureBuckets: [{ name: 'bucket' }],
});
await server.run();

const stop = () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
