/**
 * Where a store's bytes are: per block, how much is still referenced by a live object and how
 * much is dead (overwritten or deleted bodies, which only old versions still use; compaction
 * gives them back once those versions leave the retention window).
 */
import { CopyDetector, type StoreSnapshot, snapshotRecords } from './history.js';
import type { Location } from './schema.js';

export interface BlockUsage {
  id: number;
  /** File size; undefined when a live object points into a block that is missing. */
  fileSize: number | undefined;
  /** Bytes referenced by live objects, each byte counted once (copies share bytes). */
  liveBytes: number;
  deadBytes: number;
  liveObjects: number;
}

export interface StoreUsage {
  revisions: number;
  /** The first revision whose whole history is kept (0 unless compaction forgot older ones). */
  historyStart: number;
  records: { put: number; copy: number; delete: number };
  liveObjects: number;
  /** Sum of the live objects' sizes, as a listing shows them (a copy counts again). */
  liveBytes: number;
  /** Bytes of the blocks that live objects use, each byte once. */
  storedLiveBytes: number;
  deadBytes: number;
  blockBytes: number;
  blocks: BlockUsage[];
  nextBlockId: number;
}

export async function storeUsage(snapshot: StoreSnapshot): Promise<StoreUsage> {
  const records = { put: 0, copy: 0, delete: 0 };
  const live = new Map<string, Location>();
  const copies = new CopyDetector();
  for await (const { rev, record } of snapshotRecords(snapshot)) {
    if (record.kind === 'delete') {
      records.delete++;
      live.delete(record.rawKey);
      continue;
    }
    if (copies.observe(record.location, rev) !== undefined) records.copy++;
    else records.put++;
    live.set(record.rawKey, record.location);
  }

  const rangesByBlock = new Map<number, Array<[number, number]>>();
  const objectsByBlock = new Map<number, number>();
  let liveBytes = 0;
  for (const loc of live.values()) {
    liveBytes += loc.size;
    if (loc.size <= 0) continue;
    let ranges = rangesByBlock.get(loc.block);
    if (!ranges) rangesByBlock.set(loc.block, (ranges = []));
    ranges.push([loc.offset, loc.offset + loc.size]);
    objectsByBlock.set(loc.block, (objectsByBlock.get(loc.block) ?? 0) + 1);
  }

  const ids = new Set([...snapshot.blocks.keys(), ...rangesByBlock.keys()]);
  const blocks: BlockUsage[] = [...ids]
    .sort((a, b) => a - b)
    .map((id) => {
      const fileSize = snapshot.blocks.get(id)?.size;
      const used = coveredBytes(rangesByBlock.get(id) ?? []);
      return {
        id,
        fileSize,
        liveBytes: used,
        deadBytes: fileSize === undefined ? 0 : Math.max(0, fileSize - used),
        liveObjects: objectsByBlock.get(id) ?? 0,
      };
    });
  const sum = (pick: (b: BlockUsage) => number) => blocks.reduce((total, b) => total + pick(b), 0);
  return {
    revisions: snapshot.total,
    historyStart: snapshot.historyStart,
    records,
    liveObjects: live.size,
    liveBytes,
    storedLiveBytes: sum((b) => b.liveBytes),
    deadBytes: sum((b) => b.deadBytes),
    blockBytes: sum((b) => b.fileSize ?? 0),
    blocks,
    nextBlockId: snapshot.nextBlockId,
  };
}

/** Bytes covered by the union of [start, end) ranges. */
function coveredBytes(ranges: Array<[number, number]>): number {
  ranges.sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -1;
  for (const [s, e] of ranges) {
    if (e <= end) continue;
    total += e - Math.max(s, end);
    end = e;
  }
  return total;
}
