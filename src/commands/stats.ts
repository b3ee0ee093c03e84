import { Command, Flags } from '@oclif/core';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import { chooseFormat, colorsFor, failOnUserError, formatBytes, renderTable } from '../lib/cli/output.js';
import { parseDuration } from '../lib/cli/durations.js';
import { DEFAULT_REWRITE_BELOW, planCompaction } from '../lib/store/compaction.js';
import { upstreamSummary } from '../lib/store/upstream.js';
import { blockFileName } from '../lib/store/files.js';
import { type StoreSnapshot, closeSnapshot, readSnapshot } from '../lib/store/history.js';
import { type BlockUsage, storeUsage } from '../lib/store/stats.js';
import { LocalStorage } from '../lib/store/storage/local.js';

/** What a compaction with a retention window would do now. */
interface CompactionPreview {
  keepHistory: string;
  /** Where the history would begin. */
  historyStart: number;
  forgottenRecords: number;
  reclaimableBytes: number;
  blocksRewritten: number;
  blocksDeleted: number;
}

async function previewCompaction(dir: string, snapshot: StoreSnapshot, keepHistory: string, keepHistoryMs: number): Promise<CompactionPreview> {
  const plan = await planCompaction(
    new LocalStorage(dir),
    { dbName: snapshot.dbName, db: snapshot.db, tail: snapshot.journalPayloads, records: snapshot.total, historyStart: snapshot.historyStart },
    // A server may hold the directory: blocks from nextBlockId on may still be written.
    { cutoffMs: Date.now() - keepHistoryMs, rewriteBelow: DEFAULT_REWRITE_BELOW, sealedBelow: snapshot.nextBlockId, isLive: () => false },
  );
  return {
    keepHistory,
    historyStart: plan.horizon,
    forgottenRecords: plan.forgottenRecords,
    reclaimableBytes: plan.reclaimableBytes,
    blocksRewritten: plan.rewrite.size,
    // A rewritten block is deleted too, once its needed bytes are copied.
    blocksDeleted: plan.unneeded.length + plan.rewrite.size,
  };
}

export default class Stats extends Command {
  static override summary = 'Show live and dead bytes per block, to tell when compaction is worth it.';

  static override description = `Live bytes are those live objects still use (bytes shared by copies count once); dead bytes are overwritten or deleted bodies, which only old versions still use. They come back once the operations that used them are older than a retention window ("serve --keep-history", "compact"); with --keep-history DURATION, stats shows how much a compaction with that window would give back now, and where the history would then begin. Piped, the output is tab-separated (one line per block, then a "total" line); --json prints one object. The store is read without the lock and never written.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> zipdir',
    '<%= config.bin %> <%= command.id %> zipdir --keep-history 30d',
    '<%= config.bin %> <%= command.id %> -dir zipdir --json',
  ];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    json: Flags.boolean({ description: 'one JSON object' }),
    'keep-history': Flags.string({ description: 'also show what a compaction keeping this much history (1s, 10m, 12h, 30d) would give back', helpValue: 'DURATION' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Stats);
    const dir = resolveDir(this, args.dir, flags.dir);
    const format = chooseFormat(flags.json);
    const keep = flags['keep-history'];
    let keepMs: number | undefined;
    try {
      keepMs = keep === undefined ? undefined : parseDuration(keep, '--keep-history');
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    try {
      const snapshot = await readSnapshot(dir);
      for (const warning of snapshot.warnings) this.logToStderr(`warning: ${warning}`);
      let usage;
      let preview: CompactionPreview | undefined;
      try {
        usage = await storeUsage(snapshot);
        if (keep !== undefined) preview = await previewCompaction(dir, snapshot, keep, keepMs!);
      } finally {
        await closeSnapshot(snapshot);
      }
      const upstream = await upstreamSummary(new LocalStorage(dir), snapshot.total);
      if (format === 'json') {
        this.log(JSON.stringify({ ...usage, ...(preview ? { compaction: preview } : {}), ...(upstream ? { upstream } : {}) }));
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
      if (upstream) {
        this.log(
          `Upstream ${upstream.url ?? ''}: last shipped ${upstream.lastShipped}, ${upstream.recordsBehind} records behind this directory; ` +
            `${upstream.blocksUpstream} blocks upstream, ${upstream.blocksOnlyUpstream} of them only there (evicted by --cache-size).`,
        );
      }
      this.log(
        usage.historyStart > 0
          ? `History begins at revision ${usage.historyStart}: the oldest state one can go back to is revision ${usage.historyStart - 1} (older operations were forgotten by compaction).`
          : 'The whole history is kept: every revision from 0 can be gone back to.',
      );
      if (preview) {
        this.log(
          preview.reclaimableBytes > 0 || preview.forgottenRecords > 0
            ? `Keeping ${preview.keepHistory} of history, a compaction now would forget ${preview.forgottenRecords} operations (history would begin at revision ${preview.historyStart}) ` +
                `and give back about ${formatBytes(preview.reclaimableBytes)}: ${preview.blocksRewritten} blocks rewritten, ${preview.blocksDeleted} deleted.`
            : `Keeping ${preview.keepHistory} of history, a compaction now would have nothing to forget or give back.`,
        );
      } else if (usage.deadBytes > 0) {
        this.log(
          `${formatBytes(usage.deadBytes)} (${percent(usage.deadBytes, usage.blockBytes)} of the block bytes) hold no live object; ` +
            `a compaction gives them back once the operations that used them leave a retention window (${this.config.bin} stats ${dir} --keep-history DURATION shows how much).`,
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
