/**
 * The ceiling: the least an HTTP object server can do in Node on this machine. Bodies are kept
 * in a Map (as the chunks they arrived in, so that nothing is copied); PUT stores, GET returns,
 * HEAD answers, DELETE forgets, a PUT with x-amz-copy-source shares the source's chunks, and a
 * GET of the bucket answers with a tiny fixed XML document. No checksum, no disk, no durability.
 *
 * Usage: node dist/bench/ceiling-server.js PORT
 */
import http from 'node:http';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: ceiling-server PORT\n');
  process.exit(2);
}

interface Body {
  chunks: Buffer[];
  size: number;
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
        objects.set(key, from);
        const xml = '<CopyObjectResult></CopyObjectResult>';
        res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': xml.length });
        res.end(xml);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
      });
      req.on('end', () => {
        objects.set(key, { chunks, size });
        res.writeHead(200, { 'Content-Length': 0 });
        res.end();
      });
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
      objects.delete(key);
      res.writeHead(204);
      res.end();
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
