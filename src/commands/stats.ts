import { Command, Flags } from '@oclif/core';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import { chooseFormat, colorsFor, failOnUserError, formatBytes, renderTable } from '../lib/cli/output.js';
import { blockFileName } from '../lib/store/files.js';
import { closeSnapshot, readSnapshot } from '../lib/store/history.js';
import { type BlockUsage, storeUsage } from '../lib/store/stats.js';

export default class Stats extends Command {
  static override summary = 'Show live and dead bytes per block, to tell when compaction is worth it.';

  static override description = `Live bytes are those live objects still use (bytes shared by copies count once); dead bytes are overwritten or deleted bodies, which blocks never give back. "rebase --into" copies only the live objects into a new store. Piped, the output is tab-separated (one line per block, then a "total" line); --json prints one object. The store is read without the lock and never written.`;

  static override examples = ['<%= config.bin %> <%= command.id %> zipdir', '<%= config.bin %> <%= command.id %> -dir zipdir --json'];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    json: Flags.boolean({ description: 'one JSON object' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Stats);
    const dir = resolveDir(this, args.dir, flags.dir);
    const format = chooseFormat(flags.json);
    try {
      const snapshot = await readSnapshot(dir);
      for (const warning of snapshot.warnings) this.logToStderr(`warning: ${warning}`);
      let usage;
      try {
        usage = await storeUsage(snapshot);
      } finally {
        await closeSnapshot(snapshot);
      }
      if (format === 'json') {
        this.log(JSON.stringify(usage));
        return;
      }
      const total: BlockUsage = { id: -1, fileSize: usage.blockBytes, liveBytes: usage.storedLiveBytes, deadBytes: usage.deadBytes, liveObjects: usage.liveObjects };
      if (format === 'tsv') {
        this.log(['block\tsize\tlive\tdead\tlive_objects', ...usage.blocks.map((b) => tsvRow(String(b.id), b)), tsvRow('total', total)].join('\n'));
        return;
      }
      const colors = colorsFor();
      const rows = usage.blocks.map((b) => tableRow(blockFileName(b.id), b));
      rows.push(tableRow(colors.bold('total'), total));
      this.log(renderTable(['block', 'size', 'live', 'dead', 'dead %', 'live objects'], rows, colors, ['left', 'right', 'right', 'right', 'right', 'right']));
      this.log(
        `${usage.revisions} revisions (${usage.records.put} puts, ${usage.records.copy} copies, ${usage.records.delete} deletes); ` +
          `${usage.liveObjects} live objects of ${formatBytes(usage.liveBytes)}.`,
      );
      if (usage.deadBytes > 0) {
        this.log(
          `Compaction (${this.config.bin} rebase ${dir} --into NEWDIR) would reclaim about ${formatBytes(usage.deadBytes)}: ` +
            `${percent(usage.deadBytes, usage.blockBytes)} of the block bytes.`,
        );
      }
    } catch (err) {
      failOnUserError(this, err);
    }
  }
}

function tsvRow(name: string, b: BlockUsage): string {
  return `${name}\t${b.fileSize ?? 'missing'}\t${b.liveBytes}\t${b.deadBytes}\t${b.liveObjects}`;
}

function tableRow(name: string, b: BlockUsage): string[] {
  const size = b.fileSize === undefined ? 'missing' : formatBytes(b.fileSize);
  return [name, size, formatBytes(b.liveBytes), formatBytes(b.deadBytes), percent(b.deadBytes, b.fileSize ?? 0), String(b.liveObjects)];
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '-';
}
