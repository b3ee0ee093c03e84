/**
 * Output shared by the commands: a table for a person at a terminal, tab-separated text for a
 * pipe, JSON when asked; colours and progress bars only on a terminal; streamed writes that
 * respect backpressure; and the one way a command reports an error the user can act on.
 */
import { once } from 'node:events';
import type { Command } from '@oclif/core';
import chalk, { Chalk, type ChalkInstance, chalkStderr } from 'chalk';
import cliProgress from 'cli-progress';
import Table from 'cli-table3';
import { StoreError } from '../store/errors.js';

export type OutputFormat = 'table' | 'tsv' | 'json';

/** JSON when asked for; otherwise a table on a terminal and tab-separated text in a pipe. */
export function chooseFormat(json: boolean | undefined, stream: NodeJS.WriteStream = process.stdout): OutputFormat {
  if (json) return 'json';
  return stream.isTTY ? 'table' : 'tsv';
}

/** A chalk that colours only when `stream` is a terminal (and colour is not turned off). */
export function colorsFor(stream: NodeJS.WriteStream = process.stdout): ChalkInstance {
  const level = stream === process.stderr ? chalkStderr.level : chalk.level;
  return new Chalk({ level: stream.isTTY ? level : 0 });
}

/**
 * Writes lines in batches and waits for 'drain' whenever the stream's buffer is full, so any
 * amount of output goes out in constant memory. A reader that goes away (EPIPE, `| head`)
 * ends the output quietly: `closed` turns true and further lines are dropped.
 */
export class LineSink {
  closed = false;
  private lines: string[] = [];
  private bytes = 0;
  private failure: Error | undefined;

  constructor(
    private readonly stream: NodeJS.WritableStream = process.stdout,
    private readonly batchBytes = 64 * 1024,
  ) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      this.closed = true;
      if (err.code !== 'EPIPE') this.failure = err;
    });
  }

  /** Queues a line; returns a promise only when the caller has to wait for the stream. */
  line(text: string): Promise<void> | undefined {
    if (this.closed) return undefined;
    this.lines.push(text);
    this.bytes += text.length + 1;
    return this.bytes >= this.batchBytes ? this.flush() : undefined;
  }

  async flush(): Promise<void> {
    if (this.lines.length > 0 && !this.closed) {
      const text = this.lines.join('\n') + '\n';
      this.lines = [];
      this.bytes = 0;
      if (!this.stream.write(text)) {
        try {
          await once(this.stream, 'drain');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
        }
      }
    }
    if (this.failure) throw this.failure;
  }
}

export interface Column {
  head: string;
  width: number;
  align?: 'left' | 'right';
}

/**
 * A long listing for a terminal: rows are rendered a page at a time with cli-table3, with fixed
 * column widths and no borders, so the first rows appear at once and columns line up across
 * pages. Cells wider than their column are cut with an ellipsis.
 */
export class PagedTable {
  private page: string[][] = [];
  private first = true;

  constructor(
    private readonly sink: LineSink,
    private readonly columns: Column[],
    private readonly colors: ChalkInstance,
    private readonly pageRows = 200,
  ) {}

  row(cells: string[]): Promise<void> | undefined {
    this.page.push(cells);
    return this.page.length >= this.pageRows ? this.flushPage() : undefined;
  }

  async end(): Promise<void> {
    if (this.page.length > 0 || this.first) await this.flushPage();
    await this.sink.flush();
  }

  private async flushPage(): Promise<void> {
    const table = new Table({
      head: this.first ? this.columns.map((c) => this.colors.bold(c.head)) : [],
      colWidths: this.columns.map((c) => c.width),
      colAligns: this.columns.map((c) => c.align ?? 'left'),
      chars: BORDERLESS,
      style: { head: [], border: [], 'padding-left': 0, 'padding-right': 1 },
    });
    table.push(...this.page);
    this.page = [];
    this.first = false;
    for (const line of table.toString().split('\n')) await this.sink.line(line.trimEnd());
  }
}

const BORDERLESS = {
  top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
  bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
  left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: ' ',
};

/** A bordered table, for short outputs (a summary, one record, per-block usage). */
export function renderTable(head: string[], rows: Array<Array<string | number>>, colors: ChalkInstance, align?: Array<'left' | 'right'>): string {
  const table = new Table({
    head: head.map((h) => colors.bold(h)),
    colAligns: align,
    style: { head: [], border: colors.level > 0 ? ['grey'] : [], compact: true },
  });
  table.push(...rows.map((r) => r.map(String)));
  return table.toString();
}

/** A two-column name/value table. */
export function renderPairs(pairs: Array<[string, string | number]>, colors: ChalkInstance): string {
  const table = new Table({ style: { head: [], border: colors.level > 0 ? ['grey'] : [], compact: true } });
  table.push(...pairs.map(([name, value]) => ({ [colors.bold(name)]: String(value) })));
  return table.toString();
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

let isoSecond = NaN;
let isoPrefix = '';

/** `new Date(ms).toISOString()`, formatting each second once: a long history repeats seconds. */
export function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  return `${isoPrefix}${String(ms - second * 1000).padStart(3, '0')}Z`;
}

export interface Progress {
  update(done: number): void;
  stop(): void;
}

/** A progress bar over bytes on stderr when it is a terminal; nothing at all otherwise. */
export function progressBar(label: string, totalBytes: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY || totalBytes <= 0) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${label} [{bar}] {percentage}% | {done} / {all} | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const all = formatBytes(totalBytes);
  bar.start(totalBytes, 0, { done: formatBytes(0), all });
  return {
    update: (done) => bar.update(done, { done: formatBytes(done), all }),
    stop: () => bar.stop(),
  };
}

/**
 * Ends a command on an error the user can act on (a store error, a file-system error) with a
 * clear message and exit status 2, no stack trace; anything else is a bug and is rethrown.
 */
export function failOnUserError(command: Command, err: unknown): never {
  if (err instanceof StoreError) command.error(err.message, { exit: 2 });
  const errno = err as NodeJS.ErrnoException;
  if (err instanceof Error && typeof errno.code === 'string' && errno.syscall !== undefined) command.error(err.message, { exit: 2 });
  throw err;
}
