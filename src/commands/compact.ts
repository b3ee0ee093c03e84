import { Command, Flags } from '@oclif/core';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import { parseDuration } from '../lib/cli/durations.js';
import { chooseFormat, failOnUserError, formatBytes, progressBar } from '../lib/cli/output.js';
import { DEFAULT_BLOCK_SIZE, MAX_OBJECT_SIZE } from '../lib/store/files.js';
import { type CompactionResult, openStore } from '../lib/store/store.js';

export default class Compact extends Command {
  static override summary = 'Forget operations older than a retention window and give back the space only they used.';

  static override description = `Does offline what "serve --keep-history" does in the background: operations older than now minus DURATION are forgotten (history, rebase --to and S3 versions then reach back to the state just before the first operation kept), sealed blocks whose still-needed bytes fall below 70% have those bytes copied into new blocks, and block files no record refers to any more are deleted. Every step is crash-safe: a block is deleted only once the db and journal that no longer refer to it are on disk. Refused while another process (a running server) holds the directory; "stats --keep-history DURATION" shows what it would give back without writing anything.`;

  static override examples = ['<%= config.bin %> <%= command.id %> zipdir --keep-history 30d', '<%= config.bin %> <%= command.id %> -dir zipdir -keep-history 12h --json'];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    'keep-history': Flags.string({ description: 'keep the operations of this last stretch of time: 1s, 10m, 12h, 30d', required: true, helpValue: 'DURATION' }),
    bs: Flags.integer({ min: 1, max: MAX_OBJECT_SIZE, description: `largest new block written for the copied bytes (default ${DEFAULT_BLOCK_SIZE})` }),
    json: Flags.boolean({ description: 'the summary as one JSON object' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Compact);
    const dir = resolveDir(this, args.dir, flags.dir);
    const json = chooseFormat(flags.json) === 'json';
    let keepHistoryMs: number;
    try {
      keepHistoryMs = parseDuration(flags['keep-history'], '--keep-history');
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    let bar: ReturnType<typeof progressBar> | undefined;
    try {
      const store = await openStore(dir, { blockSize: flags.bs, warn: (m) => this.logToStderr(`warning: ${m}`) });
      let result: CompactionResult | undefined;
      let historyStart = store.stats().historyStart;
      try {
        result = await store.compact({
          keepHistoryMs,
          // Nothing else is using the disk: no throttle.
          bytesPerSecond: 0,
          onProgress: (p) => {
            if (p.phase !== 'copying') return;
            bar ??= progressBar('copying', p.total);
            bar.update(p.done);
          },
        });
        historyStart = result?.historyStart ?? historyStart;
      } finally {
        bar?.stop();
        await store.close();
      }
      if (json) this.log(JSON.stringify({ dir, compacted: result !== undefined, historyStart, ...result }));
      else this.log(describe(dir, flags['keep-history'], historyStart, result));
    } catch (err) {
      failOnUserError(this, err);
    }
  }
}

function describe(dir: string, keep: string, historyStart: number, r: CompactionResult | undefined): string {
  if (!r) {
    return `${dir}: nothing to do: no operation older than ${keep} to forget and no block space to give back (history begins at revision ${historyStart}).`;
  }
  return [
    `${dir}: history now begins at revision ${r.historyStart}: ${r.forgottenRecords} older operations forgotten, ` +
      `${r.keptRecords} objects live before it kept (their version ids unchanged).`,
    `Read ${formatBytes(r.bytesRead)}, wrote ${formatBytes(r.bytesWritten)}, freed ${formatBytes(r.bytesFreed)}: ` +
      `${r.blocksRewritten} block${r.blocksRewritten === 1 ? '' : 's'} rewritten, ${r.blocksDeleted} deleted, in ${(r.durationMs / 1000).toFixed(1)} s.`,
  ].join('\n');
}
