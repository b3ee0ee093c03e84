import { Command, Flags } from '@oclif/core';
import type { ChalkInstance } from 'chalk';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import { chooseFormat, colorsFor, failOnUserError, formatBytes, progressBar } from '../lib/cli/output.js';
import { DEFAULT_BLOCK_SIZE, MAX_OBJECT_SIZE } from '../lib/store/files.js';
import { type KeyChanges, type RebaseIntoSummary, type RebaseSummary, rebaseInPlace, rebaseInto } from '../lib/store/rebase.js';

export default class Rebase extends Command {
  static override summary = 'Rewind a store to a revision, or copy its live objects into a new, compact store.';

  static override description = `With --to N, the store keeps history[0..N] (both ends included) and serves exactly the state after operation N. No block is deleted or overwritten and block ids are never reused. The db and journal it replaces are kept beside it under printed names, with the commands that undo the rebase. --dry-run shows what would change and writes nothing. Refused while another process (a running server) holds the directory.

With --into NEWDIR, the objects live at revision N (default: the latest) are copied, with their metadata and in key order, into a new store in NEWDIR (created if missing; refused if it holds a store with history), leaving dead bytes behind. The source is only read.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> zipdir --to 120 --dry-run',
    '<%= config.bin %> <%= command.id %> zipdir --to 120',
    '<%= config.bin %> <%= command.id %> zipdir --into compacted',
    '<%= config.bin %> <%= command.id %> -dir zipdir --into compacted --to 120 --bs 1048576',
  ];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    to: Flags.integer({ min: 0, description: 'the last revision kept (inclusive); with --into, the revision copied' }),
    'dry-run': Flags.boolean({ description: 'show what would change, write nothing', exclusive: ['into'] }),
    into: Flags.string({ description: 'copy the live objects into a new store in this directory', helpValue: 'NEWDIR' }),
    bs: Flags.integer({ min: 1, max: MAX_OBJECT_SIZE, description: `block size of the new store (default ${DEFAULT_BLOCK_SIZE})`, dependsOn: ['into'] }),
    json: Flags.boolean({ description: 'the summary as one JSON object' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Rebase);
    const dir = resolveDir(this, args.dir, flags.dir);
    const json = chooseFormat(flags.json) === 'json';
    if (flags.into === undefined && flags.to === undefined) {
      this.error('say which revision to keep (--to N), or where to copy the live objects (--into NEWDIR)', { exit: 2 });
    }
    try {
      if (flags.into !== undefined) {
        const summary = await this.copyInto(dir, flags.into, flags.to, flags.bs);
        this.log(json ? JSON.stringify(summary) : describeInto(summary));
      } else {
        const summary = await rebaseInPlace(dir, flags.to!, { dryRun: flags['dry-run'] });
        this.log(json ? JSON.stringify(summary) : describeInPlace(summary, colorsFor()));
      }
    } catch (err) {
      failOnUserError(this, err);
    }
  }

  private async copyInto(src: string, dst: string, revision: number | undefined, blockSize: number | undefined): Promise<RebaseIntoSummary> {
    let bar: ReturnType<typeof progressBar> | undefined;
    try {
      return await rebaseInto(src, dst, {
        revision,
        blockSize,
        onProgress: (p) => {
          bar ??= progressBar('copying', p.totalBytes);
          bar.update(p.bytes);
        },
      });
    } finally {
      bar?.stop();
    }
  }
}

function describeInPlace(s: RebaseSummary, colors: ChalkInstance): string {
  const lines: string[] = [];
  if (s.dryRun) lines.push(colors.yellow('Dry run: nothing was written.'));
  const verb = s.dryRun ? 'would keep' : 'kept';
  lines.push(
    `${s.dir}: ${verb} revisions 0..${s.to} of ${s.revisionsBefore}; ${s.dropped} later record${s.dropped === 1 ? '' : 's'} ${s.dryRun ? 'would be' : 'were'} dropped.`,
  );
  lines.push(...describeChanges(s.dryRun ? 'would reappear' : 'reappear', '(deleted after the revision)', s.reappear));
  lines.push(...describeChanges(s.dryRun ? 'would disappear' : 'disappear', '(created after the revision)', s.disappear));
  lines.push(...describeChanges(s.dryRun ? 'would change' : 'change', '(back to their version at the revision)', s.change));
  lines.push(
    `Live objects: ${s.liveObjectsBefore} (${formatBytes(s.liveBytesBefore)}) -> ${s.liveObjectsAfter} (${formatBytes(s.liveBytesAfter)}). ` +
      `next_backend_file: ${s.nextBlockId}.`,
  );
  if (s.done) {
    lines.push(`New db: ${s.done.newDb}`);
    if (s.done.backupDb) lines.push(`The db it replaces (${s.done.previousDb}) is kept as ${s.done.backupDb}`);
    if (s.done.backupJournal) lines.push(`The journal it replaces is kept as ${s.done.backupJournal}`);
    lines.push('To undo (with no server running on the directory; changes made after the rebase are lost):');
    for (const command of s.done.undo) lines.push(`  ${command}`);
  }
  return lines.join('\n');
}

function describeChanges(what: string, why: string, changes: KeyChanges): string[] {
  if (changes.count === 0) return [];
  const lines = [`${changes.count} object${changes.count === 1 ? '' : 's'} ${what} ${why}, ${formatBytes(changes.bytes)}:`];
  for (const key of changes.sample) lines.push(`  ${key}`);
  if (changes.count > changes.sample.length) lines.push(`  ... and ${changes.count - changes.sample.length} more`);
  return lines;
}

function describeInto(s: RebaseIntoSummary): string {
  const shared = s.sharedObjects > 0 ? `, ${s.sharedObjects} of them sharing bytes with another` : '';
  return [
    `Copied ${s.objects} objects (${formatBytes(s.bytes)}${shared}) live at revision ${s.revision} of ${s.src} into ${s.dst}.`,
    `${s.dst}: ${s.blocks} block${s.blocks === 1 ? '' : 's'}, ${formatBytes(s.blockBytes)}; ` +
      `${s.src}: ${s.sourceBlocks} block${s.sourceBlocks === 1 ? '' : 's'}, ${formatBytes(s.sourceBlockBytes)}.`,
  ].join('\n');
}
