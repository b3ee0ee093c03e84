/**
 * The ceiling: the least an HTTP object server can do in Node on this machine. Bodies are kept
 * in a Map (as the chunks they arrived in, so that nothing is copied); PUT stores, GET returns,
 * HEAD answers, DELETE forgets, a PUT with x-amz-copy-source shares the source's chunks, and a
 * GET of the bucket answers with a tiny fixed XML document. No checksum, no disk, no durability.
 *
 * With a directory, the durable ceiling: the same, plus the least a durable server must do
 * before it replies to a write. Writes are group-committed: the bodies of every write waiting
 * are appended to one file with one writev, then one fdatasync, then every one of them is
 * answered. It shows what durability itself costs here, apart from the rest of a store's work.
 * Like a store, it only ever appends (its directory is removed when it stops): space a run
 * freed and wrote again would be faster to write on many virtual disks.
 *
 * Usage: node dist/bench/ceiling-server.js PORT [DIR]
 */
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';

const port = Number(process.argv[2]);
const dir = process.argv[3];
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: ceiling-server PORT [DIR]\n');
  process.exit(2);
}

interface Body {
  chunks: Buffer[];
  size: number;
}

/** A write waiting for its commit: its bytes, and what it does once they are durable. */
interface Waiting {
  chunks: Buffer[];
  then: () => void;
}

const file = dir === undefined ? undefined : await fs.open(path.join(dir, 'bodies'), 'w');
let position = 0;
let waiting: Waiting[] = [];
let committing = false;

/** Runs `then` at once, or (durable) once `chunks` are on disk with the writes around it. */
function commit(chunks: Buffer[], then: () => void): void {
  if (!file) return then();
  waiting.push({ chunks, then });
  if (!committing) void commitLoop(file);
}

async function commitLoop(out: fs.FileHandle): Promise<void> {
  committing = true;
  try {
    while (waiting.length > 0) {
      const batch = waiting;
      waiting = [];
      const buffers = batch.flatMap((w) => w.chunks);
      const bytes = buffers.reduce((n, b) => n + b.length, 0);
      if (bytes > 0) await out.writev(buffers, position);
      position += bytes;
      await out.datasync();
      for (const w of batch) w.then();
    }
  } catch (err) {
    process.stderr.write(`ceiling: ${(err as Error).message}\n`);
    process.exit(1);
  } finally {
    committing = false;
  }
}

const objects = new Map<string, Body>();
const LIST_XML = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>bucket</Name><IsTruncated>false</IsTruncated></ListBucketResult>',
);

function pathOf(url: string): { key: string | undefined } {
  const q = url.indexOf('?');
  const p = q >= 0 ? url.slice(0, q) : url;
  const slash = p.indexOf('/', 1);
  return { key: slash < 0 || slash === p.length - 1 ? undefined : p.slice(slash + 1) };
}

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const { key } = pathOf(req.url ?? '/');
  const method = req.method ?? 'GET';
  if (key === undefined) {
    if (method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': LIST_XML.length });
      res.end(LIST_XML);
    } else {
      res.writeHead(200, { 'Content-Length': 0 });
      res.end();
    }
    return;
  }
  switch (method) {
    case 'PUT': {
      const source = req.headers['x-amz-copy-source'];
      if (typeof source === 'string') {
        const from = objects.get(decodeURIComponent(source.replace(/^\/?[^/]+\//, '')));
        req.resume();
        if (!from) {
          res.writeHead(404, { 'Content-Length': 0 });
          res.end();
          return;
        }
        commit([], () => {
          objects.set(key, from);
          const xml = '<CopyObjectResult></CopyObjectResult>';
          res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': xml.length });
          res.end(xml);
        });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
      });
      req.on('end', () =>
        commit(chunks, () => {
          objects.set(key, { chunks, size });
          res.writeHead(200, { 'Content-Length': 0 });
          res.end();
        }),
      );
      return;
    }
    case 'GET':
    case 'HEAD': {
      const body = objects.get(key);
      if (!body) {
        res.writeHead(404, { 'Content-Length': 0 });
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Length': body.size });
      if (method === 'HEAD') return void res.end();
      for (let i = 0; i < body.chunks.length - 1; i++) res.write(body.chunks[i]);
      res.end(body.chunks[body.chunks.length - 1]);
      return;
    }
    case 'DELETE':
      commit([], () => {
        objects.delete(key);
        res.writeHead(204);
        res.end();
      });
      return;
    default:
      res.writeHead(405, { 'Content-Length': 0 });
      res.end();
  }
});

server.listen(port, '127.0.0.1');
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
