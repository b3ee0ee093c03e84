import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { expect } from 'chai';
import { SCRATCH_DIR } from '../../src/lib/store/files.js';
import { FaultyStorage } from '../../src/lib/store/storage/faults.js';
import { LocalStorage } from '../../src/lib/store/storage/local.js';
import { xmlField } from '../helpers/http.js';
import { tempDir } from '../helpers/paths.js';
import { bodyBytes, startServer, type TestServer, s3Fails, md5 } from '../helpers/server.js';

const MiB = 1024 * 1024;

/** S3's multipart ETag, computed here from the part boundaries: md5 of the parts' md5s, "-N". */
function multipartEtag(body: Buffer, partSizes: number[]): string {
  const outer = createHash('md5');
  let at = 0;
  for (const size of partSizes) {
    outer.update(createHash('md5').update(body.subarray(at, at + size)).digest());
    at += size;
  }
  expect(at).to.equal(body.length);
  return `"${outer.digest('hex')}-${partSizes.length}"`;
}

/** Files (at any depth) in a store's scratch area, where parts are kept until completion. */
async function scratchFiles(dir: string): Promise<string[]> {
  try {
    const entries = await fs.readdir(path.join(dir, SCRATCH_DIR), { recursive: true, withFileTypes: true });
    return entries.filter((e) => e.isFile()).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Polls `condition` until it holds; fails after `timeoutMs`. */
async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * An UploadPart whose body the test sends bit by bit (unsigned: the test servers take any
 * request), so that something can happen to the upload while the part is in flight.
 */
function partInFlight(port: number, key: string, id: string, n: number, size: number) {
  let resolveReply!: (reply: { status: number; body: string }) => void;
  const reply = new Promise<{ status: number; body: string }>((resolve) => (resolveReply = resolve));
  const req = http.request(
    { host: '127.0.0.1', port, method: 'PUT', path: `/bucket/${key}?partNumber=${n}&uploadId=${id}`, headers: { 'Content-Length': size }, agent: false },
    (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolveReply({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    },
  );
  const failed = new Promise<never>((_, reject) => req.on('error', reject));
  failed.catch(() => undefined); // reported through `finish`, or ignored after `cancel`
  return {
    send: (chunk: Buffer) => void req.write(chunk),
    /** Drops the connection (so that a test that failed midway can still stop its server). */
    cancel: () => void req.destroy(),
    /** Sends the last bytes and waits for the reply. */
    finish: (chunk: Buffer) => {
      req.end(chunk);
      return Promise.race([reply, failed]);
    },
  };
}


describe('s3: multipart uploads (AWS SDK)', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
  });
  after(async () => {
    await t.stop();
  });

  const create = async (key: string) => (await t.client.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: key }))).UploadId!;
  const part = async (key: string, id: string, n: number, body: Buffer): Promise<CompletedPart> => {
    const out = await t.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: n, Body: body }));
    return { PartNumber: n, ETag: out.ETag };
  };
  const complete = (key: string, id: string, parts: CompletedPart[]) =>
    t.client.send(new CompleteMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id, MultipartUpload: { Parts: parts } }));

  it('lib-storage Upload of 17 MiB in 5 MiB parts: multipart ETag, same bytes', async () => {
    const body = randomBytes(17 * MiB + 12345);
    const upload = new Upload({
      client: t.client,
      params: { Bucket: 'bucket', Key: 'big/upload.bin', Body: body, ContentType: 'application/x-big', Metadata: { origin: 'lib-storage' } },
      partSize: 5 * MiB,
      queueSize: 4,
    });
    const done = await upload.done();
    const expected = multipartEtag(body, [5 * MiB, 5 * MiB, 5 * MiB, 2 * MiB + 12345]);
    expect(done.ETag).to.equal(expected);
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'big/upload.bin' }));
    expect(get.ETag).to.equal(expected);
    expect(get.ContentLength).to.equal(body.length);
    expect(get.ContentType).to.equal('application/x-big');
    expect(get.Metadata).to.deep.equal({ origin: 'lib-storage' });
    expect(md5(await bodyBytes(get.Body))).to.equal(md5(body));
    const range = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'big/upload.bin', Range: `bytes=${5 * MiB - 3}-${5 * MiB + 2}` }));
    expect((await bodyBytes(range.Body)).equals(body.subarray(5 * MiB - 3, 5 * MiB + 3))).to.equal(true);
    // Nothing is left in the scratch area once the upload completed.
    const list = await t.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket' }));
    expect(list.Uploads ?? []).to.have.length(0);
  });

  it('by hand: Create, UploadPart (a part replaced), ListParts, ListMultipartUploads, Complete', async () => {
    const key = 'hand/made';
    const id = await create(key);
    const p1 = randomBytes(5 * MiB);
    const p2 = randomBytes(1000);
    const first = await part(key, id, 1, randomBytes(5 * MiB)); // replaced below
    const one = await part(key, id, 1, p1);
    expect(one.ETag).to.equal(`"${md5(p1)}"`);
    expect(one.ETag).to.not.equal(first.ETag);
    const two = await part(key, id, 2, p2);

    const parts = await t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
    expect(parts.Parts!.map((p) => [p.PartNumber, p.ETag, p.Size])).to.deep.equal([
      [1, `"${md5(p1)}"`, p1.length],
      [2, `"${md5(p2)}"`, p2.length],
    ]);
    expect(parts.IsTruncated).to.equal(false);
    const page = await t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id, MaxParts: 1 }));
    expect(page.Parts!.map((p) => p.PartNumber)).to.deep.equal([1]);
    expect(page.IsTruncated).to.equal(true);
    const rest = await t.client.send(
      new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumberMarker: page.NextPartNumberMarker }),
    );
    expect(rest.Parts!.map((p) => p.PartNumber)).to.deep.equal([2]);

    const other = await create('hand/other');
    const uploads = await t.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket', Prefix: 'hand/' }));
    expect(uploads.Uploads!.map((u) => [u.Key, u.UploadId])).to.deep.equal([
      ['hand/made', id],
      ['hand/other', other],
    ]);
    expect(uploads.Uploads![0]!.Initiated).to.be.instanceOf(Date);
    await t.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: 'hand/other', UploadId: other }));

    const done = await complete(key, id, [one, two]);
    expect(done.ETag).to.equal(multipartEtag(Buffer.concat([p1, p2]), [p1.length, p2.length]));
    expect(done.Key).to.equal(key);
    expect(done.Bucket).to.equal('bucket');
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key }));
    expect(md5(await bodyBytes(get.Body))).to.equal(md5(Buffer.concat([p1, p2])));
    // The upload is over: its id no longer works.
    expect((await s3Fails(t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id })))).name).to.equal('NoSuchUpload');
  });

  it('Complete with only some of the parts uploaded uses just those', async () => {
    const key = 'hand/subset';
    const id = await create(key);
    const a = randomBytes(5 * MiB);
    const c = randomBytes(77);
    const pa = await part(key, id, 1, a);
    await part(key, id, 2, randomBytes(10));
    const pc = await part(key, id, 3, c);
    const done = await complete(key, id, [pa, pc]);
    expect(done.ETag).to.equal(multipartEtag(Buffer.concat([a, c]), [a.length, c.length]));
    const head = await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: key }));
    expect(head.ContentLength).to.equal(a.length + c.length);
    // The part left out (2) is freed with the others.
    expect(await scratchFiles(t.dir)).to.deep.equal([]);
  });

  it('Abort: the upload is gone (NoSuchUpload) and no object appears', async () => {
    const key = 'aborted';
    const id = await create(key);
    await part(key, id, 1, randomBytes(100));
    const abort = await t.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
    expect(abort.$metadata.httpStatusCode).to.equal(204);
    for (const request of [
      () => t.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: 2, Body: 'x' })),
      () => t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id })),
      () => complete(key, id, [{ PartNumber: 1, ETag: '"00"' }]),
      () => t.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id })),
    ]) {
      const err = await s3Fails(request());
      expect(err.name).to.equal('NoSuchUpload');
      expect(err.$metadata.httpStatusCode).to.equal(404);
    }
    expect(t.store.head(key)).to.equal(undefined);
    expect(await scratchFiles(t.dir)).to.deep.equal([]);
    // An id that never existed, and a real id used with another key.
    const real = await create('real');
    expect((await s3Fails(t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: 'real', UploadId: 'nope' })))).name).to.equal('NoSuchUpload');
    expect((await s3Fails(t.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: 'other', UploadId: real })))).name).to.equal('NoSuchUpload');
  });

  it('Complete errors: wrong ETag (InvalidPart), missing part, out of order (InvalidPartOrder), small part (EntityTooSmall)', async () => {
    const key = 'bad-complete';
    const id = await create(key);
    const p1 = await part(key, id, 1, randomBytes(5 * MiB));
    const p2 = await part(key, id, 2, randomBytes(100));
    const p3 = await part(key, id, 3, randomBytes(100));

    const wrong = await s3Fails(complete(key, id, [p1, { PartNumber: 2, ETag: `"${'0'.repeat(32)}"` }]));
    expect(wrong.name).to.equal('InvalidPart');
    expect(wrong.$metadata.httpStatusCode).to.equal(400);
    expect((await s3Fails(complete(key, id, [p1, { PartNumber: 9, ETag: p2.ETag }]))).name).to.equal('InvalidPart');
    expect((await s3Fails(complete(key, id, [p2, p1]))).name).to.equal('InvalidPartOrder');
    expect((await s3Fails(complete(key, id, [p1, p1]))).name).to.equal('InvalidPartOrder');
    const small = await s3Fails(complete(key, id, [p1, p2, p3]));
    expect(small.name).to.equal('EntityTooSmall');
    expect(t.store.head(key)).to.equal(undefined);

    // None of the failures ended the upload: a correct list still completes it.
    const ok = await complete(key, id, [p1, p3]);
    expect(ok.ETag).to.match(/-2"$/);
    expect(t.store.head(key)?.size).to.equal(5 * MiB + 100);
  });

  it('a part number outside 1..10000 is InvalidArgument', async () => {
    const id = await create('numbers');
    for (const n of [0, 10001]) {
      const err = await s3Fails(t.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: 'numbers', UploadId: id, PartNumber: n, Body: 'x' })));
      expect(err.name, String(n)).to.equal('InvalidArgument');
    }
    await t.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: 'numbers', UploadId: id }));
  });

  it('UploadPartCopy, whole and with a range', async () => {
    const source = randomBytes(6 * MiB);
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'copy/source', Body: source }));
    const key = 'copy/target';
    const id = await create(key);
    const whole = await t.client.send(
      new UploadPartCopyCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: 1, CopySource: 'bucket/copy/source' }),
    );
    expect(whole.CopyPartResult?.ETag).to.equal(`"${md5(source)}"`);
    expect(whole.CopyPartResult?.LastModified).to.be.instanceOf(Date);
    const ranged = await t.client.send(
      new UploadPartCopyCommand({
        Bucket: 'bucket',
        Key: key,
        UploadId: id,
        PartNumber: 2,
        CopySource: '/bucket/copy/source',
        CopySourceRange: 'bytes=100-1099',
      }),
    );
    const slice = source.subarray(100, 1100);
    expect(ranged.CopyPartResult?.ETag).to.equal(`"${md5(slice)}"`);
    const badRange = await s3Fails(
      t.client.send(
        new UploadPartCopyCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: 3, CopySource: 'bucket/copy/source', CopySourceRange: `bytes=0-${6 * MiB}` }),
      ),
    );
    expect(badRange.name).to.equal('InvalidArgument');
    const missing = await s3Fails(
      t.client.send(new UploadPartCopyCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: 3, CopySource: 'bucket/copy/nothing' })),
    );
    expect(missing.name).to.equal('NoSuchKey');
    const done = await complete(key, id, [
      { PartNumber: 1, ETag: whole.CopyPartResult!.ETag },
      { PartNumber: 2, ETag: ranged.CopyPartResult!.ETag },
    ]);
    const expected = Buffer.concat([source, slice]);
    expect(done.ETag).to.equal(multipartEtag(expected, [source.length, slice.length]));
    const get = await t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key }));
    expect(md5(await bodyBytes(get.Body))).to.equal(md5(expected));
  });

  it('ListMultipartUploads pages with key-marker/upload-id-marker and rolls up with a delimiter', async () => {
    const ids: Array<[string, string]> = [];
    for (const key of ['page/a', 'page/b', 'page/b', 'page/c/1', 'page/c/2', 'page/d']) ids.push([key, await create(key)]);
    try {
      const walked: Array<[string, string]> = [];
      let keyMarker: string | undefined;
      let idMarker: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await t.client.send(
          new ListMultipartUploadsCommand({ Bucket: 'bucket', Prefix: 'page/', MaxUploads: 2, KeyMarker: keyMarker, UploadIdMarker: idMarker }),
        );
        pages++;
        walked.push(...page.Uploads!.map((u): [string, string] => [u.Key!, u.UploadId!]));
        expect(page.Uploads!.length).to.be.at.most(2);
        if (!page.IsTruncated) break;
        const last = page.Uploads![page.Uploads!.length - 1]!;
        expect([page.NextKeyMarker, page.NextUploadIdMarker]).to.deep.equal([last.Key, last.UploadId]);
        keyMarker = page.NextKeyMarker;
        idMarker = page.NextUploadIdMarker;
      }
      expect(pages).to.equal(3);
      expect(walked).to.deep.equal(ids); // two uploads of page/b, in the order they began

      const rolled = await t.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket', Prefix: 'page/', Delimiter: '/' }));
      expect(rolled.Uploads!.map((u) => u.Key)).to.deep.equal(['page/a', 'page/b', 'page/b', 'page/d']);
      expect(rolled.CommonPrefixes!.map((p) => p.Prefix)).to.deep.equal(['page/c/']);
      const afterB = await t.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket', Prefix: 'page/', KeyMarker: 'page/b' }));
      expect(afterB.Uploads!.map((u) => u.Key)).to.deep.equal(['page/c/1', 'page/c/2', 'page/d']);
      const bad = await s3Fails(t.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket', MaxUploads: -1 })));
      expect(bad.name).to.equal('InvalidArgument');
    } finally {
      for (const [key, id] of ids) await t.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
    }
  });

  it('an upload interrupted by a restart leaves nothing behind', async () => {
    const first = await startServer();
    const id = (await first.client.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: 'interrupted' }))).UploadId!;
    await first.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: 'interrupted', UploadId: id, PartNumber: 1, Body: randomBytes(1000) }));
    expect(await scratchFiles(first.dir)).to.have.length(1);
    await first.stop();

    const second = await startServer({ dir: first.dir });
    try {
      expect(await scratchFiles(second.dir)).to.deep.equal([]);
      const err = await s3Fails(second.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: 'interrupted', UploadId: id })));
      expect(err.name).to.equal('NoSuchUpload');
      const uploads = await second.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket' }));
      expect(uploads.Uploads ?? []).to.have.length(0);
      expect(second.store.head('interrupted')).to.equal(undefined);
    } finally {
      await second.stop();
    }
  });
});

describe('s3: multipart uploads end, expire, race and stay within limits', () => {
  const create = async (s: TestServer, key: string) => (await s.client.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: key }))).UploadId!;
  const part = async (s: TestServer, key: string, id: string, n: number, body: Buffer): Promise<CompletedPart> => {
    const out = await s.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: n, Body: body }));
    return { PartNumber: n, ETag: out.ETag };
  };
  const complete = (s: TestServer, key: string, id: string, parts: CompletedPart[]) =>
    s.client.send(new CompleteMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id, MultipartUpload: { Parts: parts } }));
  const listed = async (s: TestServer) => ((await s.client.send(new ListMultipartUploadsCommand({ Bucket: 'bucket' }))).Uploads ?? []).map((u) => u.UploadId);
  /** Every request on upload `id` of `key` answers NoSuchUpload. */
  const gone = async (s: TestServer, key: string, id: string) => {
    for (const request of [
      () => s.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: key, UploadId: id, PartNumber: 1, Body: 'x' })),
      () => s.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id })),
      () => complete(s, key, id, [{ PartNumber: 1, ETag: `"${md5('x')}"` }]),
      () => s.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id })),
    ]) {
      const err = await s3Fails(request());
      expect(err.name).to.equal('NoSuchUpload');
      expect(err.$metadata.httpStatusCode).to.equal(404);
    }
  };

  it('Abort frees the disk at once; a part in flight is discarded when it ends, and gets NoSuchUpload', async () => {
    const s = await startServer();
    let cancel = () => {};
    try {
      const key = 'abort/in-flight';
      const id = await create(s, key);
      await part(s, key, id, 1, randomBytes(5 * MiB));
      await part(s, key, id, 2, randomBytes(1000));
      expect(await scratchFiles(s.dir)).to.have.length(2);
      const third = partInFlight(s.port, key, id, 3, 2 * MiB);
      cancel = third.cancel;
      third.send(randomBytes(MiB));
      await waitFor('the third part to be staged', async () => (await scratchFiles(s.dir)).length === 3);

      const abort = await s.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
      expect(abort.$metadata.httpStatusCode).to.equal(204);
      // Parts 1 and 2 are gone when the abort is answered; only the body still arriving is left.
      expect((await scratchFiles(s.dir)).length).to.be.at.most(1);
      expect(await listed(s)).to.not.include(id);

      const reply = await third.finish(randomBytes(MiB));
      expect(reply.status).to.equal(404);
      expect(xmlField(reply.body, 'Code')).to.equal('NoSuchUpload');
      // Nothing is left in the scratch area, not even a directory.
      expect(await fs.readdir(path.join(s.dir, SCRATCH_DIR))).to.deep.equal([]);
      expect(s.store.head(key)).to.equal(undefined);
      await gone(s, key, id);
    } finally {
      cancel();
      await s.stop();
    }
  });

  it('an upload expires: its parts are deleted without any request, then it is NoSuchUpload, and a part in flight is discarded', async () => {
    const s = await startServer({ uploadExpiryMs: 1000 });
    let cancel = () => {};
    try {
      const key = 'expiring';
      const id = await create(s, key);
      await part(s, key, id, 1, randomBytes(1000));
      const second = partInFlight(s.port, key, id, 2, 2000);
      cancel = second.cancel;
      second.send(randomBytes(1000));
      await waitFor('the second part to be staged', async () => (await scratchFiles(s.dir)).length === 2);
      expect(await listed(s)).to.include(id);

      // The periodic sweep drops the upload and deletes part 1; the body still arriving stays.
      await waitFor('the expired part to be deleted', async () => (await scratchFiles(s.dir)).length === 1, 5000);
      expect(await listed(s)).to.not.include(id);
      const reply = await second.finish(randomBytes(1000));
      expect(reply.status).to.equal(404);
      expect(xmlField(reply.body, 'Code')).to.equal('NoSuchUpload');
      expect(await scratchFiles(s.dir)).to.deep.equal([]);
      await gone(s, key, id);

      // A new upload has its own time.
      const fresh = await create(s, key);
      const p = await part(s, key, fresh, 1, Buffer.from('fresh'));
      expect((await complete(s, key, fresh, [p])).ETag).to.match(/-1"$/);
      expect(await scratchFiles(s.dir)).to.deep.equal([]);
    } finally {
      cancel();
      await s.stop();
    }
  });

  it('concurrent uploads of one part number leave exactly one of the bodies, and the object is that body', async () => {
    const s = await startServer();
    try {
      for (let round = 0; round < 5; round++) {
        const key = `race/${round}`;
        const id = await create(s, key);
        const bodies = [0, 1, 2, 3].map(() => randomBytes(2 * MiB + round));
        const sent = await Promise.all(bodies.map((body) => part(s, key, id, 1, body)));
        const parts = await s.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
        expect(parts.Parts).to.have.length(1);
        const etag = parts.Parts![0]!.ETag!;
        const winner = bodies.find((b) => `"${md5(b)}"` === etag);
        expect(winner, `round ${round}: the listed ETag is one of the bodies sent`).to.not.equal(undefined);
        expect(sent.map((p) => p.ETag)).to.include(etag);
        expect(parts.Parts![0]!.Size).to.equal(winner!.length);
        // The replaced bodies were discarded: one staged body is left.
        expect(await scratchFiles(s.dir)).to.have.length(1);

        const done = await complete(s, key, id, [{ PartNumber: 1, ETag: etag }]);
        expect(done.ETag).to.equal(multipartEtag(winner!, [winner!.length]));
        const object = await bodyBytes((await s.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key }))).Body);
        expect(md5(object), `round ${round}: the object is the body the listed ETag names`).to.equal(md5(winner!));
        expect(await scratchFiles(s.dir)).to.deep.equal([]);
      }
    } finally {
      await s.stop();
    }
  });

  it('at most maxUploads are open at once: one more is 503 ServiceUnavailable, until one ends', async () => {
    const s = await startServer({ maxUploads: 3 });
    try {
      const ids = [await create(s, 'cap/a'), await create(s, 'cap/b'), await create(s, 'cap/c')];
      const refused = await s3Fails(create(s, 'cap/d'));
      expect(refused.name).to.equal('ServiceUnavailable');
      expect(refused.$metadata.httpStatusCode).to.equal(503);
      expect(refused.message).to.match(/Too many multipart uploads in progress \(at most 3\)/);
      expect(await listed(s)).to.deep.equal(ids);
      await s.client.send(new AbortMultipartUploadCommand({ Bucket: 'bucket', Key: 'cap/a', UploadId: ids[0] }));
      const d = await create(s, 'cap/d');
      const p = await part(s, 'cap/d', d, 1, Buffer.from('d'));
      await complete(s, 'cap/d', d, [p]);
      await create(s, 'cap/e');
      expect((await s3Fails(create(s, 'cap/f'))).name).to.equal('ServiceUnavailable');
    } finally {
      await s.stop();
    }
  });

  it('a failed completion leaves the upload as it was; the retry completes it and frees the parts', async () => {
    const dir = await tempDir('s3');
    const storage = new FaultyStorage(new LocalStorage(dir));
    const s = await startServer({ dir, storage });
    try {
      const key = 'retry/complete';
      const id = await create(s, key);
      const a = randomBytes(5 * MiB);
      const b = randomBytes(100);
      const parts = [await part(s, key, id, 1, a), await part(s, key, id, 2, b)];
      // Reading a staged part back fails once, as a full disk would.
      storage.fail({ op: 'readStream', name: new RegExp(`^${SCRATCH_DIR}/`), times: 1, code: 'ENOSPC' });
      const failed = await s3Fails(complete(s, key, id, parts));
      expect(failed.$metadata.httpStatusCode).to.equal(503);
      expect(storage.failures).to.have.length(1);
      expect(s.store.head(key)).to.equal(undefined);
      const kept = await s.client.send(new ListPartsCommand({ Bucket: 'bucket', Key: key, UploadId: id }));
      expect(kept.Parts!.map((p) => p.ETag)).to.deep.equal(parts.map((p) => p.ETag));
      expect(await scratchFiles(dir)).to.have.length(2);

      const done = await complete(s, key, id, parts);
      expect(done.ETag).to.equal(multipartEtag(Buffer.concat([a, b]), [a.length, b.length]));
      const object = await bodyBytes((await s.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key }))).Body);
      expect(md5(object)).to.equal(md5(Buffer.concat([a, b])));
      expect(await scratchFiles(dir)).to.deep.equal([]);
      await gone(s, key, id);
    } finally {
      await s.stop();
    }
  });
});
