/**
 * Memory of `zipkv serve` under many slow uploads: N connections each send the headers of a PUT
 * and half of its body, then stall; the server's RSS is read from /proc before and while they
 * stall, then the bodies are finished and every PUT must succeed.
 *
 *   node dist/bench/slow-clients.js [connections] [body bytes]     (defaults 1000, 100 KiB)
 *
 * Prints one JSON object. Loopback only; the server is a child process on a fresh directory.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAll, startServer } from './servers.js';

const connections = Number(process.argv[2] ?? 1000);
const bodyBytes = Number(process.argv[3] ?? 100 * 1024);

async function rssOf(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

const server = await startServer('zipkv');
try {
  const idle = await rssOf(server.pid);
  const body = Buffer.alloc(bodyBytes, 0x61);
  const sockets: net.Socket[] = [];
  const replies: Array<Promise<string>> = [];
  for (let i = 0; i < connections; i++) {
    const socket = net.connect({ host: '127.0.0.1', port: server.port });
    sockets.push(socket);
    replies.push(
      new Promise((resolve) => {
        let text = '';
        socket.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.includes('\r\n\r\n')) resolve(text.slice(0, 12));
        });
        socket.on('error', () => resolve('error'));
        socket.on('close', () => resolve(text.slice(0, 12) || 'closed'));
      }),
    );
    socket.write(`PUT /bucket/slow/${i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${bodyBytes}\r\n\r\n`);
    socket.write(body.subarray(0, bodyBytes / 2));
  }
  await sleep(3000);
  const stalled = await rssOf(server.pid);
  for (const socket of sockets) socket.write(body.subarray(bodyBytes / 2));
  const statuses = await Promise.all(replies);
  for (const socket of sockets) socket.destroy();
  const ok = statuses.filter((s) => s.startsWith('HTTP/1.1 200')).length;
  const after = await rssOf(server.pid);
  const mib = (n: number) => Number((n / 2 ** 20).toFixed(1));
  process.stdout.write(
    JSON.stringify({
      connections,
      bodyBytes,
      rssIdleMiB: mib(idle),
      rssStalledMiB: mib(stalled),
      rssPerStalledUploadKiB: Number(((stalled - idle) / connections / 1024).toFixed(1)),
      halfBodiesMiB: mib((connections * bodyBytes) / 2),
      rssAfterMiB: mib(after),
      succeeded: ok,
      statuses: [...new Set(statuses)].slice(0, 5),
    }) + '\n',
  );
} finally {
  await server.stop();
  await cleanupAll();
}
