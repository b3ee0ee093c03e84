import { Args, Command, Flags } from '@oclif/core';
import { chooseFormat, failOnUserError, formatBytes } from '../lib/cli/output.js';
import { restoreStore } from '../lib/store/restore.js';
import { RemoteBucket, parseUpstreamUrl } from '../lib/store/storage/remote.js';

export default class Restore extends Command {
  static override summary = 'Build a store directory from its upstream copy (zipkv serve --upstream).';

  static override description = `Reads the manifest a server serving with --upstream s3://BUCKET/PREFIX keeps there, and fetches the db, the journal and the blocks still being written into NEWDIR (created; refused unless empty). Sealed blocks stay upstream, read from there by zipkv serve with the same --upstream (a directory opened without it is refused while blocks are only upstream); --all-blocks fetches them all, for a directory that needs no upstream. The result is the store as last shipped: at most one --upstream-interval behind the server that shipped it. With --to N it is then rebased to revision N (any revision the history still holds). Serving NEWDIR with the same --upstream carries on where the old server stopped; a server still writing the prefix makes that refuse to start.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> s3://backups/zipkv -dir zipdir',
    '<%= config.bin %> <%= command.id %> s3://backups/zipkv --dir zipdir --upstream-endpoint http://127.0.0.1:7480 --to 1234 --all-blocks',
  ];

  static override args = { upstream: Args.string({ description: 'the upstream copy, s3://BUCKET/PREFIX', required: true }) };

  static override flags = {
    dir: Flags.string({ description: 'the new store directory (created; must be empty)', required: true, helpValue: 'NEWDIR' }),
    'upstream-endpoint': Flags.string({ description: 'S3 endpoint of the upstream (Ceph RGW, MinIO...); default AWS', helpValue: 'URL' }),
    'all-blocks': Flags.boolean({ description: 'fetch every block now, for a directory that needs no upstream (default: sealed blocks stay upstream and are read from there by zipkv serve --upstream)' }),
    to: Flags.integer({ min: 0, description: 'rebase the restored store to this revision (inclusive)' }),
    json: Flags.boolean({ description: 'the summary as one JSON object' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Restore);
    let remote: RemoteBucket | undefined;
    try {
      remote = new RemoteBucket(parseUpstreamUrl(args.upstream), { endpoint: flags['upstream-endpoint'] });
      const started = Date.now();
      const summary = await restoreStore(remote, flags.dir, { to: flags.to, allBlocks: flags['all-blocks'] });
      const seconds = (Date.now() - started) / 1000;
      if (chooseFormat(flags.json) === 'json') this.log(JSON.stringify({ ...summary, seconds }));
      else {
        this.log(
          `restored ${summary.dir} from ${remote.url}: ${summary.files} files, ${formatBytes(summary.bytes)} in ${seconds.toFixed(1)} s; ` +
            `${summary.records} records as shipped at ${summary.shippedAt}` +
            (summary.rebasedTo === undefined ? '' : `, rebased to revision ${summary.rebasedTo}`) +
            (summary.blocksLeftUpstream > 0 ? `; ${summary.blocksLeftUpstream} sealed blocks left upstream: serve it with --upstream ${remote.url}` : ''),
        );
      }
    } catch (err) {
      if (err instanceof RangeError) this.error(err.message, { exit: 2 });
      failOnUserError(this, err);
    } finally {
      remote?.close();
    }
  }
}
