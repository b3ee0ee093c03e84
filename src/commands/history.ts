import { Command, Flags } from '@oclif/core';
import type { ChalkInstance } from 'chalk';
import { dirArg, dirFlag, resolveDir } from '../lib/cli/dir-arg.js';
import {
  type Column,
  LineSink,
  type OutputFormat,
  PagedTable,
  chooseFormat,
  colorsFor,
  failOnUserError,
  formatBytes,
  isoTime,
  renderPairs,
} from '../lib/cli/output.js';
import type { Location } from '../lib/store/schema.js';
import { type HistoryEntry, type HistoryOptions, type StoreSnapshot, closeSnapshot, describeRevision, historyEntries, readSnapshot } from '../lib/store/history.js';
import { storeUsage } from '../lib/store/stats.js';

const FILTERS = ['key', 'prefix', 'from', 'to', 'tail', 'op'];

export default class History extends Command {
  static override summary = 'List the operations recorded in a store (puts, copies, deletes), oldest first.';

  static override description = `Piped, the output is the original zipkvhistory's: a "rev<TAB>operation<TAB>filename" header, then one line per record, copies shown as "put". --long adds size, block, offset, time and live, with copies shown as "copy". On a terminal the same columns come as a table; --json prints one object per line.

A copy is a put whose location (block, offset, size) is that of an earlier put's bytes: the format has no copy flag. A copy of a 0-byte object cannot be told from a new one and shows as a put.

The store is read without the lock and never written, so this works on a directory a running server holds. A missing directory is an error (exit status 2); an empty one prints only the header.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> zipdir',
    '<%= config.bin %> <%= command.id %> -dir zipdir',
    '<%= config.bin %> <%= command.id %> zipdir --prefix photos/ --op delete',
    '<%= config.bin %> <%= command.id %> zipdir --from 100 --to 120 --long',
    '<%= config.bin %> <%= command.id %> zipdir --tail 20 --json',
    '<%= config.bin %> <%= command.id %> zipdir --rev 42',
    '<%= config.bin %> <%= command.id %> zipdir --stats',
  ];

  static override args = { dir: dirArg };

  static override flags = {
    dir: dirFlag,
    json: Flags.boolean({ description: 'one JSON object per line' }),
    long: Flags.boolean({ char: 'l', description: 'piped: add size, block, offset, time and live columns' }),
    key: Flags.string({ description: 'only records of this key' }),
    prefix: Flags.string({ description: 'only records of keys starting with this' }),
    from: Flags.integer({ min: 0, description: 'first revision shown (inclusive)' }),
    to: Flags.integer({ min: 0, description: 'last revision shown (inclusive)' }),
    tail: Flags.integer({ min: 0, description: 'only the last N records (after the other filters)' }),
    op: Flags.option({ options: ['put', 'copy', 'delete'] as const, description: 'only this kind of operation' })(),
    rev: Flags.integer({ min: 0, description: 'one revision in detail: record, metadata, location', exclusive: [...FILTERS, 'stats', 'long'] }),
    stats: Flags.boolean({ description: 'record counts by kind, live and dead bytes, blocks', exclusive: [...FILTERS, 'long'] }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(History);
    const dir = resolveDir(this, args.dir, flags.dir);
    const format = chooseFormat(flags.json);
    try {
      const snapshot = await readSnapshot(dir);
      for (const warning of snapshot.warnings) this.logToStderr(`warning: ${warning}`);
      if (snapshot.total === 0) this.logToStderr(`${dir}: no history yet (an empty store)`);
      if (snapshot.historyStart > 0) {
        this.logToStderr(
          `${dir}: history begins at revision ${snapshot.historyStart} (compaction forgot older operations); ` +
            'the records shown before it are the objects live then, each under the revision that wrote it',
        );
      }
      try {
        if (flags.rev !== undefined) return await this.printRevision(snapshot, flags.rev, format);
        if (flags.stats) return await this.printStats(snapshot, format);
        const filter = { key: flags.key, prefix: flags.prefix, from: flags.from, to: flags.to, tail: flags.tail, op: flags.op };
        await printHistory(snapshot, filter, format, flags.long === true);
      } finally {
        await closeSnapshot(snapshot);
      }
    } catch (err) {
      failOnUserError(this, err);
    }
  }

  private async printRevision(snapshot: StoreSnapshot, rev: number, format: OutputFormat): Promise<void> {
    const detail = await describeRevision(snapshot, rev);
    if (format === 'json') {
      const extra = { etag: detail.etag ?? null, copyOf: detail.copyOf ?? null, lastRevOfKey: detail.lastRevOfKey, metadata: detail.metadata };
      this.log(JSON.stringify({ ...JSON.parse(entryJson(detail)), ...extra }));
      return;
    }
    const loc = detail.location;
    const pairs: Array<[string, string | number]> = [
      ['rev', detail.rev],
      ['operation', detail.op],
      ['key', detail.key],
    ];
    if (loc) {
      pairs.push(['size', loc.size], ['block', loc.block], ['offset', loc.offset], ['time', detail.modified?.toISOString() ?? ''], ['md5', detail.md5 ?? '']);
      if (detail.etag) pairs.push(['etag', detail.etag]);
      if (detail.copyOf !== undefined) pairs.push(['copy_of', detail.copyOf]);
    }
    pairs.push(['live', detail.live ? 'yes' : 'no'], ['last_rev_of_key', detail.lastRevOfKey]);
    for (const [name, value] of Object.entries(detail.metadata).sort()) pairs.push([`metadata.${name}`, value]);
    if (format === 'tsv') this.log(pairs.map(([name, value]) => `${name}\t${value}`).join('\n'));
    else this.log(renderPairs(pairs, colorsFor()));
  }

  private async printStats(snapshot: StoreSnapshot, format: OutputFormat): Promise<void> {
    const usage = await storeUsage(snapshot);
    const pairs: Array<[string, number]> = [
      ['revisions', usage.revisions],
      ['history_start', usage.historyStart],
      ['puts', usage.records.put],
      ['copies', usage.records.copy],
      ['deletes', usage.records.delete],
      ['live_objects', usage.liveObjects],
      ['live_bytes', usage.liveBytes],
      ['stored_live_bytes', usage.storedLiveBytes],
      ['dead_bytes', usage.deadBytes],
      ['blocks', usage.blocks.length],
      ['block_bytes', usage.blockBytes],
    ];
    if (format === 'json') this.log(JSON.stringify(Object.fromEntries(pairs)));
    else if (format === 'tsv') this.log(pairs.map(([name, value]) => `${name}\t${value}`).join('\n'));
    else this.log(renderPairs(pairs.map(([name, value]) => [name, name.endsWith('bytes') ? `${value} (${formatBytes(value)})` : value]), colorsFor()));
  }
}

async function printHistory(snapshot: StoreSnapshot, filter: HistoryOptions, format: OutputFormat, long: boolean): Promise<void> {
  const sink = new LineSink(process.stdout);
  const entries = historyEntries(snapshot, { ...filter, live: format !== 'tsv' || long, locations: format !== 'tsv' || long });
  let line: (e: HistoryEntry) => Promise<void> | undefined;
  let end = () => sink.flush();
  if (format === 'json') {
    line = (e) => sink.line(entryJson(e));
  } else if (format === 'tsv' && !long) {
    // Exactly the original zipkvhistory's output.
    await sink.line('rev\toperation\tfilename');
    line = (e) => sink.line(`${e.rev}\t${e.kind}\t${e.key}`);
  } else if (format === 'tsv') {
    await sink.line('rev\toperation\tfilename\tsize\tblock\toffset\ttime\tlive');
    line = (e) => {
      const loc = e.location;
      const where = loc ? `${loc.size}\t${loc.block}\t${loc.offset}\t${loc.modifiedMs ? isoTime(loc.modifiedMs) : ''}` : '\t\t\t';
      return sink.line(`${e.rev}\t${e.op}\t${e.key}\t${where}\t${e.live ? 'yes' : 'no'}`);
    };
  } else {
    const colors = colorsFor();
    const table = new PagedTable(sink, historyColumns(snapshot.total), colors);
    line = (e) => table.row(tableRow(e, colors));
    end = () => table.end();
  }
  for await (const entry of entries) {
    if (sink.closed) break;
    const wait = line(entry);
    if (wait) await wait;
  }
  await end();
}

/** One JSON line, written out by hand: JSON.stringify of an object per record is the slow part of a long history. */
function entryJson(e: HistoryEntry): string {
  const loc = e.location;
  const where = loc
    ? `,"size":${loc.size},"block":${loc.block},"offset":${loc.offset},"time":${loc.modifiedMs ? `"${isoTime(loc.modifiedMs)}"` : 'null'},"md5":${md5Hex(loc) ?? 'null'}`
    : '';
  return `{"rev":${e.rev},"op":"${e.op}","key":${JSON.stringify(e.key)}${where},"live":${e.live === true}}`;
}

function md5Hex(loc: Location): string | undefined {
  return loc.md5 && loc.md5.length === 16 ? `"${Buffer.from(loc.md5).toString('hex')}"` : undefined;
}

function historyColumns(total: number): Column[] {
  const columns: Column[] = [
    { head: 'rev', width: Math.max(3, String(Math.max(0, total - 1)).length) + 1, align: 'right' },
    { head: 'op', width: 7 },
    { head: 'key', width: 0 },
    { head: 'size', width: 11, align: 'right' },
    { head: 'block', width: 7, align: 'right' },
    { head: 'offset', width: 11, align: 'right' },
    { head: 'time (UTC)', width: 20 },
    { head: 'live', width: 5 },
  ];
  const others = columns.reduce((sum, c) => sum + c.width, 0) + columns.length - 1;
  columns[2]!.width = Math.max(16, (process.stdout.columns || 120) - others - 1);
  return columns;
}

function tableRow(e: HistoryEntry, colors: ChalkInstance): string[] {
  const op = e.op === 'put' ? colors.green(e.op) : e.op === 'copy' ? colors.cyan(e.op) : colors.red(e.op);
  const loc = e.location;
  const live = e.kind === 'delete' ? colors.dim('-') : e.live ? colors.green('yes') : colors.dim('no');
  if (!loc) return [String(e.rev), op, e.key, '', '', '', '', live];
  const time = loc.modifiedMs ? isoTime(loc.modifiedMs).slice(0, 19).replace('T', ' ') : colors.dim('-');
  return [String(e.rev), op, e.key, String(loc.size), String(loc.block), String(loc.offset), time, live];
}
