/**
 * The journal: every acknowledged change since the last db checkpoint, so that a reply never
 * waits for a db rewrite. File layout:
 *
 *   header  "ZKVJ" | u32 version (1) | u64 base revision      (16 bytes, little-endian)
 *   record  u32 payload length | u32 CRC-32 of payload | payload (an encoded HistoryRecord)
 *
 * The base revision is the number of history records of the db the journal continues. After a
 * crash between writing a new db and resetting the journal, records below the db's length are
 * already in the db and are skipped. Recovery stops at the first torn or corrupt record.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { StoreCorruptError } from './errors.js';
import { JOURNAL_FILE, writeFileAtomic } from './files.js';

const MAGIC = 0x4a564b5a; // "ZKVJ" read as a little-endian u32
const VERSION = 1;
export const JOURNAL_HEADER_SIZE = 16;
const FRAME_HEADER_SIZE = 8;
/** A record larger than this is not one the engine writes: treat it as damage. */
const MAX_RECORD_SIZE = 16 * 1024 * 1024;

export interface JournalContents {
  baseRevision: number;
  records: Uint8Array[];
  /** Bytes after the last good record (a torn write or damage); 0 when the journal is clean. */
  ignoredBytes: number;
  /** File size up to the end of the last good record. */
  validSize: number;
}

function header(baseRevision: number): Buffer {
  const buf = Buffer.alloc(JOURNAL_HEADER_SIZE);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  buf.writeBigUInt64LE(BigInt(baseRevision), 8);
  return buf;
}

export function frameRecords(payloads: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const p of payloads) total += FRAME_HEADER_SIZE + p.length;
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  for (const p of payloads) {
    out.writeUInt32LE(p.length, pos);
    out.writeUInt32LE(zlib.crc32(p), pos + 4);
    out.set(p, pos + FRAME_HEADER_SIZE);
    pos += FRAME_HEADER_SIZE + p.length;
  }
  return out;
}

/** Reads the journal of `dir`; undefined when there is none. */
export async function readJournal(dir: string): Promise<JournalContents | undefined> {
  const file = path.join(dir, JOURNAL_FILE);
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return parseJournal(buf, file);
}

export function parseJournal(buf: Buffer, file: string): JournalContents {
  if (buf.length < JOURNAL_HEADER_SIZE) {
    // Only a crash while creating the journal leaves it this short: it held no record.
    return { baseRevision: -1, records: [], ignoredBytes: buf.length, validSize: 0 };
  }
  if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) {
    throw new StoreCorruptError(`${file}: not a zipkv journal (bad magic or version)`);
  }
  const baseRevision = Number(buf.readBigUInt64LE(8));
  const records: Uint8Array[] = [];
  let pos = JOURNAL_HEADER_SIZE;
  while (pos + FRAME_HEADER_SIZE <= buf.length) {
    const len = buf.readUInt32LE(pos);
    const crc = buf.readUInt32LE(pos + 4);
    const end = pos + FRAME_HEADER_SIZE + len;
    if (len > MAX_RECORD_SIZE || end > buf.length) break;
    const payload = buf.subarray(pos + FRAME_HEADER_SIZE, end);
    if (zlib.crc32(payload) !== crc) break;
    records.push(payload);
    pos = end;
  }
  return { baseRevision, records, ignoredBytes: buf.length - pos, validSize: pos };
}

/** Appends framed records; one writer per store, and callers serialise appends. */
export class JournalWriter {
  private constructor(
    private readonly handle: fs.FileHandle,
    private position: number,
    readonly baseRevision: number,
  ) {}

  /** Starts a new, empty journal after `baseRevision` records, replacing any previous one. */
  static async create(dir: string, baseRevision: number, durable: boolean): Promise<JournalWriter> {
    await writeFileAtomic(dir, JOURNAL_FILE, header(baseRevision), durable);
    const handle = await fs.open(path.join(dir, JOURNAL_FILE), 'r+');
    return new JournalWriter(handle, JOURNAL_HEADER_SIZE, baseRevision);
  }

  /** Bytes of records since the header. */
  get recordBytes(): number {
    return this.position - JOURNAL_HEADER_SIZE;
  }

  /**
   * Appends records and, when durable, fsyncs them. On failure the journal is cut back to its
   * previous end, so a partly written frame never hides the records appended after it.
   */
  async append(payloads: readonly Uint8Array[], durable: boolean): Promise<void> {
    const frames = frameRecords(payloads);
    const start = this.position;
    try {
      let written = 0;
      while (written < frames.length) {
        const { bytesWritten } = await this.handle.write(frames, written, frames.length - written, start + written);
        written += bytesWritten;
      }
      if (durable) await this.handle.datasync();
    } catch (err) {
      await this.handle.truncate(start);
      throw err;
    }
    this.position = start + frames.length;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
