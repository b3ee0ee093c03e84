import { Command, Flags } from '@oclif/core';
import { DEFAULT_BLOCK_SIZE, MAX_OBJECT_SIZE } from '../lib/store/files.js';
import { StoreError } from '../lib/store/errors.js';
import { parseDuration, parseKeepHistory } from '../lib/cli/durations.js';
import { parseSize } from '../lib/cli/sizes.js';
import { serve } from '../lib/cli/serve.js';
import { DEFAULT_MAX_UPLOADS } from '../lib/s3/uploads.js';

export default class Serve extends Command {
  static override description = `Serve a store directory over the S3 API.

Objects are packed into block files of at most the block size; every acknowledged write is on disk (fsync) before the reply. Go-style single-dash flags work too: zipkv serve -dir zipdir -addr 127.0.0.1:7711. SIGINT or SIGTERM finishes the requests in flight, writes the db and exits 0; the directory is then one the original zipkvserver reads.`;

  static override examples = [
    '<%= config.bin %> serve -dir zipdir',
    '<%= config.bin %> serve --dir zipdir --addr 0.0.0.0:7711 --access-key AK --secret-key SK',
    '<%= config.bin %> serve -dir zipdir -bs 1048576 -bucket data --quiet',
    '<%= config.bin %> serve -dir zipdir --keep-history 30d',
    '<%= config.bin %> serve -dir zipdir --upstream s3://backups/zipkv --upstream-endpoint http://127.0.0.1:7480',
    '<%= config.bin %> serve -dir zipdir --upstream s3://backups/zipkv --cache-size 20G',
  ];

  static override flags = {
    dir: Flags.string({ description: 'store directory (created if missing)', required: true }),
    addr: Flags.string({ description: 'address to listen on, host:port', default: '127.0.0.1:7711' }),
    bs: Flags.integer({ description: 'block size in bytes', default: DEFAULT_BLOCK_SIZE, min: 1, max: MAX_OBJECT_SIZE }),
    bucket: Flags.string({ description: 'name of the one bucket served', default: 'bucket' }),
    'access-key': Flags.string({ description: 'require requests signed with this access key (AWS Signature V2 or V4)', env: 'ZIPKV_ACCESS_KEY', dependsOn: ['secret-key'] }),
    'secret-key': Flags.string({ description: 'the secret key that goes with --access-key', env: 'ZIPKV_SECRET_KEY', dependsOn: ['access-key'] }),
    'no-fsync': Flags.boolean({ description: 'do not fsync before replying (fast, NOT durable: for benchmarks and throwaway data)', default: false }),
    'idle-timeout': Flags.integer({ description: 'seconds a connection may stay idle (no bytes either way) before it is closed', default: 60, min: 1 }),
    'max-connections': Flags.integer({ description: 'connections open at once; one more is answered 503 SlowDown and closed', default: 1024, min: 1 }),
    'upload-expiry': Flags.string({
      description: `how long a multipart upload may stay open: one neither completed nor aborted is then dropped and its parts deleted; seconds (3600) or a number with a unit s, m, h or d (45s, 30m, 12h, 7d). At most ${DEFAULT_MAX_UPLOADS} uploads may be open at once; one more is refused (503) until one ends`,
      default: '7d',
    }),
    'keep-history': Flags.string({
      description:
        'how far back operations can be rolled back to (history, rebase --to, S3 versions): "all" keeps every one; a duration (1s, 10m, 12h, 30d) lets older ones be forgotten, and a background compaction then gives back the space only they used',
      default: 'all',
    }),
    upstream: Flags.string({
      description:
        'keep a live copy in this S3 bucket prefix (s3://BUCKET/PREFIX): sealed blocks, the db and the committed journal are shipped in the background; a reply still waits only for the local fsync. A lost machine loses at most the writes of the last --upstream-interval (plus an upload in progress). Credentials and region come from the AWS environment variables or profile. Restore with zipkv restore',
      helpValue: 's3://BUCKET/PREFIX',
    }),
    'upstream-endpoint': Flags.string({ description: 'S3 endpoint of the upstream (Ceph RGW, MinIO...; path-style requests); default AWS', helpValue: 'URL', dependsOn: ['upstream'] }),
    'cache-size': Flags.string({
      description:
        'with --upstream: local disk kept for blocks (512M, 20G...); sealed blocks safely upstream beyond it are deleted locally, least recently read first, and read from upstream when needed (a GET then waits on upstream; 503 if it does not answer within 5 s). Blocks not yet upstream are never evicted. Default: keep every block locally',
      helpValue: 'SIZE',
      dependsOn: ['upstream'],
    }),
    'upstream-interval': Flags.string({ description: 'how often committed writes are shipped upstream: seconds (1) or a number with a unit s, m, h or d (1s, 5s, 1m); default 1s', dependsOn: ['upstream'] }),
    quiet: Flags.boolean({ char: 'q', description: 'no log line per request', default: false }),
    // For fault-injection tests only: checkpoints every few KB of journal instead of every 8 MiB,
    // so that a kill is likely to land in the middle of one. Not for production use.
    'checkpoint-bytes': Flags.integer({ description: 'testing only: journal size that triggers a db checkpoint', min: 1, hidden: true }),
    // For crash tests only: look for compaction work this often (ms) instead of every 10 s.
    'compaction-interval': Flags.integer({ description: 'testing only: milliseconds between looks for compaction work', min: 1, hidden: true }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const accessKey = flags['access-key'];
    const secretKey = flags['secret-key'];
    try {
      const uploadExpiryMs = parseDuration(flags['upload-expiry'], '--upload-expiry');
      const keepHistoryMs = parseKeepHistory(flags['keep-history']);
      await serve({
        dir: flags.dir,
        addr: flags.addr,
        blockSize: flags.bs,
        bucket: flags.bucket,
        fsync: !flags['no-fsync'],
        quiet: flags.quiet,
        credentials: accessKey && secretKey ? { accessKey, secretKey } : undefined,
        idleTimeoutMs: flags['idle-timeout'] * 1000,
        maxConnections: flags['max-connections'],
        uploadExpiryMs,
        keepHistoryMs,
        checkpointBytes: flags['checkpoint-bytes'],
        compactionIntervalMs: flags['compaction-interval'],
        upstream: flags.upstream,
        upstreamEndpoint: flags['upstream-endpoint'],
        cacheBytes: flags['cache-size'] === undefined ? undefined : parseSize(flags['cache-size'], '--cache-size'),
        upstreamIntervalMs: flags['upstream-interval'] === undefined ? undefined : parseDuration(flags['upstream-interval'], '--upstream-interval'),
        out: (line) => process.stdout.write(`${line}\n`),
        warn: (line) => process.stderr.write(`${line}\n`),
      });
    } catch (err) {
      if (err instanceof StoreError || (err as NodeJS.ErrnoException).code === 'EADDRINUSE' || err instanceof Error) {
        this.error((err as Error).message, { exit: 2 });
      }
      throw err;
    }
  }
}
