import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand, DeleteObjectCommand, CopyObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { openStore } from '../../src/lib/store/store.js';
import { decodeDbReflect } from '../helpers/reference-db.js';
import { parseDuration, parseKeepHistory } from '../../src/lib/cli/durations.js';
import { runZipkv, startZipkvServe, unwrap } from '../helpers/cli.js';
import { rawExchange, statusOf } from '../helpers/http.js';
import { tempDir } from '../helpers/paths.js';
import { bodyBytes, clientFor } from '../helpers/server.js';
import { gunzipSync } from 'node:zlib';

describe('cli: zipkv serve', () => {
  it('`zipkv serve -dir zipdir` starts on 127.0.0.1:7711, serves, and SIGTERM exits 0 leaving a directory the original reads', async () => {
    const cwd = await tempDir('serve');
    const server = await startZipkvServe(['-dir', 'zipdir'], { cwd });
    expect(server.url).to.equal('http://127.0.0.1:7711');
    expect(server.output()).to.match(/bucket "bucket"/);
    expect(server.output()).to.match(/block size 40 MiB/);
    const client = clientFor(server.url);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'hello', Metadata: { m: 'v' } }));
      await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'gone', Body: 'x' }));
      await client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'gone' }));
      await client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'copy', CopySource: 'bucket/k' }));
      const got = await client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k' }));
      expect((await bodyBytes(got.Body)).toString()).to.equal('hello');
    } finally {
      client.destroy();
    }
    const result = await server.stop('SIGTERM');
    expect(result.code).to.equal(0);
    expect(result.stdout).to.match(/stopped cleanly/);
    expect(result.stdout).to.match(/PUT \/bucket\/k 200/); // one log line per request

    const dir = path.join(cwd, 'zipdir');
    const files = (await fs.readdir(dir)).sort();
    expect(files.filter((f) => /^db\d{10}$/.test(f))).to.deep.equal(['db0000000000']);
    expect(files).to.not.include('zipkv.lock');
    // The original's rules: next_backend_file past every block, every record complete.
    const db = decodeDbReflect(gunzipSync(await fs.readFile(path.join(dir, 'db0000000000')))) as {
      nextBackendFile: number;
      history: Array<{ put?: { filename: string; location?: object }; delete?: { filename: string } }>;
    };
    expect(db.nextBackendFile).to.equal(files.filter((f) => f.startsWith('block')).length);
    expect(db.history.map((r) => (r.put ? `put ${r.put.filename}` : `delete ${r.delete!.filename}`))).to.deep.equal([
      'put k', 'put gone', 'delete gone', 'put copy',
    ]);
    for (const r of db.history) if (r.put) expect(r.put.location).to.not.equal(undefined);
    const store = await openStore(dir, { readOnly: true });
    expect((await store.read(store.head('copy')!)).toString()).to.equal('hello');
    expect(store.head('k')!.metadata).to.deep.equal({ 'x-amz-meta-m': 'v', 'Content-Type': 'application/octet-stream' });
    await store.close();
  });

  it('-addr, -bs and -bucket work Go-style, and --quiet drops request lines', async () => {
    const dir = path.join(await tempDir('serve'), 'd');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '-bs', '1024', '-bucket', 'data', '--quiet']);
    expect(server.output()).to.match(/bucket "data"/).and.match(/block size 1024 bytes/);
    const client = clientFor(server.url);
    await client.send(new PutObjectCommand({ Bucket: 'data', Key: 'a', Body: Buffer.alloc(800) }));
    await client.send(new PutObjectCommand({ Bucket: 'data', Key: 'b', Body: Buffer.alloc(800) }));
    client.destroy();
    const result = await server.stop('SIGINT');
    expect(result.code).to.equal(0);
    expect(result.stdout).to.not.match(/PUT \/data/);
    // Two 800-byte bodies do not fit one 1024-byte block.
    expect((await fs.readdir(dir)).filter((f) => f.startsWith('block'))).to.have.length(2);
  });

  it('a second server on the same directory is refused with a clear message', async () => {
    const dir = path.join(await tempDir('serve'), 'd');
    const first = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--quiet']);
    try {
      const second = await runZipkv(['serve', '-dir', dir, '-addr', '127.0.0.1:0']);
      expect(second.code).to.not.equal(0);
      expect(second.stderr).to.match(new RegExp(`in use by process ${first.child.pid}`));
    } finally {
      expect((await first.stop()).code).to.equal(0);
    }
  });

  it('--help lists every option', async () => {
    const help = await runZipkv(['serve', '--help']);
    expect(help.code).to.equal(0);
    for (const flag of ['--dir', '--addr', '--bs', '--bucket', '--access-key', '--secret-key', '--no-fsync', '--idle-timeout', '--max-connections', '--upload-expiry', '--quiet']) {
      expect(help.stdout).to.include(flag);
    }
  });

  it('--upload-expiry takes seconds or 45s, 30m, 12h, 7d, and refuses anything else with a clear message', async () => {
    const s = 1000;
    expect(parseDuration('3600', '--upload-expiry')).to.equal(3600 * s);
    expect(parseDuration('45s', '--upload-expiry')).to.equal(45 * s);
    expect(parseDuration('30m', '--upload-expiry')).to.equal(30 * 60 * s);
    expect(parseDuration('12h', '--upload-expiry')).to.equal(12 * 3600 * s);
    expect(parseDuration('7d', '--upload-expiry')).to.equal(7 * 86400 * s);
    for (const bad of ['', '0', '0d', '-5', '1.5h', '7w', '7 d', 'd', 'soon', '99999999999999999d']) {
      expect(() => parseDuration(bad, '--upload-expiry'), JSON.stringify(bad)).to.throw(/^--upload-expiry must be a duration/);
    }

    const dir = path.join(await tempDir('serve'), 'd');
    const refused = await runZipkv(['serve', '-dir', dir, '-addr', '127.0.0.1:0', '-upload-expiry', '7w']);
    expect(refused.code).to.equal(2);
    expect(unwrap(refused.stderr)).to.include('--upload-expiry must be a duration of at least one second').and.include('not "7w"');
    expect(await fs.stat(dir).then(() => true, () => false)).to.equal(false); // refused before the store is opened

    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--upload-expiry', '12h', '--quiet']);
    expect((await server.stop()).code).to.equal(0);
  });

  it('--keep-history takes all or a duration (1s, 10m, 12h, 30d); 5x and the like are refused before the store is opened', async () => {
    expect(parseKeepHistory('all')).to.equal(undefined);
    expect(parseKeepHistory('30d')).to.equal(30 * 86_400_000);
    expect(parseKeepHistory('12h')).to.equal(12 * 3_600_000);
    expect(parseKeepHistory('10m')).to.equal(600_000);
    expect(parseKeepHistory('1s')).to.equal(1000);
    for (const bad of ['5x', '', '0s', '-1d', '1.5h', 'd', 'All', 'forever', '99999999999999999d']) {
      expect(() => parseKeepHistory(bad), JSON.stringify(bad)).to.throw(/^--keep-history takes "all" .* not /);
    }
    const dir = path.join(await tempDir('serve'), 'd');
    const refused = await runZipkv(['serve', '-dir', dir, '-addr', '127.0.0.1:0', '-keep-history', '5x']);
    expect(refused.code).to.equal(2);
    expect(unwrap(refused.stderr)).to.include('--keep-history takes "all"').and.include('not "5x"');
    expect(await fs.stat(dir).then(() => true, () => false)).to.equal(false);
  });

  it('--max-connections N: one connection more is answered 503 SlowDown at once and closed; a freed slot serves again', async () => {
    const dir = path.join(await tempDir('serve'), 'd');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0', '--max-connections', '2', '--quiet']);
    const port = Number(new URL(server.url).port);
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const socket = net.connect(port, '127.0.0.1');
        await once(socket, 'connect');
        held.push(socket);
      }
      const started = Date.now();
      const over = await rawExchange(port, 'GET /bucket/k HTTP/1.1\r\nHost: x\r\n\r\n', { idleMs: 5000 });
      expect(Date.now() - started, 'closed by the server, not by the idle wait').to.be.below(2000);
      expect(statusOf(over)).to.equal(503);
      expect(over).to.include('<Code>SlowDown</Code>').and.include('Connection: close');
    } finally {
      for (const s of held) s.destroy();
    }
    for (let i = 0; ; i++) {
      const reply = await rawExchange(port, 'GET /bucket/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      if (statusOf(reply) === 404) break; // NoSuchKey: served
      expect(i, 'a slot frees once the held connections close').to.be.below(20);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await server.stop()).code).to.equal(0);
  });

  it('request lines are written while serving, in batches a few times a second', async () => {
    const dir = path.join(await tempDir('serve'), 'd');
    const server = await startZipkvServe(['-dir', dir, '-addr', '127.0.0.1:0']);
    const client = clientFor(server.url);
    try {
      for (let i = 0; i < 5; i++) await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: `log${i}`, Body: 'x' }));
    } finally {
      client.destroy();
    }
    const deadline = Date.now() + 3000;
    while (!/PUT \/bucket\/log4 200/.test(server.output()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    for (let i = 0; i < 5; i++) expect(server.output()).to.match(new RegExp(`PUT /bucket/log${i} 200 1B [\\d.]+ms\n`));
    const result = await server.stop();
    expect(result.code).to.equal(0);
    expect(result.stdout.match(/PUT \/bucket\/log\d 200/g)).to.have.length(5);
  });

  it('warns loudly when bound beyond loopback without credentials', async () => {
    const dir = path.join(await tempDir('serve'), 'd');
    const server = await startZipkvServe(['-dir', dir, '-addr', '0.0.0.0:0', '--quiet']);
    const result = await server.stop();
    expect(result.stderr).to.match(/WARNING: .*not a loopback address, without credentials/);
  });
});
