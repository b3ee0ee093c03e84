/** History as S3 versions, through the AWS SDK: version ids are the revisions `zipkv history` prints. */
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  type ListObjectVersionsCommandOutput,
  PutBucketVersioningCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { zipkv } from '../helpers/cli.js';
import { bodyBytes, s3Fails, startServer, type TestServer } from '../helpers/server.js';

type Entry = { key: string; id: string; latest: boolean; deleted: boolean };

/** Every version, page by page, in the order S3 gives them (each key's newest first). */
async function listAll(t: TestServer, opts: { MaxKeys?: number; Prefix?: string; Delimiter?: string } = {}): Promise<{ entries: Entry[]; prefixes: string[]; pages: number }> {
  const entries: Entry[] = [];
  const prefixes: string[] = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (let pages = 1; pages < 500; pages++) {
    const out: ListObjectVersionsCommandOutput = await t.client.send(new ListObjectVersionsCommand({ Bucket: 'bucket', KeyMarker, VersionIdMarker, ...opts }));
    // The SDK gives versions and delete markers apart: put them back in S3's order.
    const page = [
      ...(out.Versions ?? []).map((v) => ({ key: v.Key!, id: v.VersionId!, latest: v.IsLatest!, deleted: false })),
      ...(out.DeleteMarkers ?? []).map((v) => ({ key: v.Key!, id: v.VersionId!, latest: v.IsLatest!, deleted: true })),
    ].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : Number(b.id) - Number(a.id)));
    entries.push(...page);
    prefixes.push(...(out.CommonPrefixes ?? []).map((p) => p.Prefix!));
    if (!out.IsTruncated) return { entries, prefixes, pages };
    KeyMarker = out.NextKeyMarker;
    VersionIdMarker = out.NextVersionIdMarker;
  }
  throw new Error('listing never ended');
}

const text = async (p: Promise<{ Body?: unknown }>) => (await bodyBytes((await p).Body)).toString();

describe('s3: versions (AWS SDK)', () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startServer();
  });
  afterEach(async () => {
    await t.stop();
  });

  it('versioning is Enabled; Enabled is accepted, Suspended refused', async () => {
    expect((await t.client.send(new GetBucketVersioningCommand({ Bucket: 'bucket' }))).Status).to.equal('Enabled');
    await t.client.send(new PutBucketVersioningCommand({ Bucket: 'bucket', VersioningConfiguration: { Status: 'Enabled' } }));
    const err = await s3Fails(t.client.send(new PutBucketVersioningCommand({ Bucket: 'bucket', VersioningConfiguration: { Status: 'Suspended' } })));
    expect(err.name).to.equal('InvalidArgument');
    expect(err.message).to.match(/always keeps the history/);
  });

  it('every write reply carries its revision as version id, the one zipkv history prints', async () => {
    const a1 = await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'a', Body: 'one' }));
    const a2 = await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'a', Body: 'two' }));
    const copy = await t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'b', CopySource: `bucket/a?versionId=${a1.VersionId}` }));
    const del = await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'a' }));
    const none = await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'never-there' }));
    const upload = await t.client.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: 'mpu' }));
    const part = await t.client.send(new UploadPartCommand({ Bucket: 'bucket', Key: 'mpu', UploadId: upload.UploadId, PartNumber: 1, Body: 'parts' }));
    const done = await t.client.send(
      new CompleteMultipartUploadCommand({ Bucket: 'bucket', Key: 'mpu', UploadId: upload.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } }),
    );
    expect([a1.VersionId, a2.VersionId, copy.VersionId, del.VersionId, done.VersionId]).to.deep.equal(['0', '1', '2', '3', '4']);
    expect(copy.CopySourceVersionId).to.equal('0');
    expect(del.DeleteMarker).to.equal(true);
    expect(none.VersionId, 'no record, no version').to.equal(undefined);
    expect(none.DeleteMarker).to.not.equal(true);
    // The copy of an old version is how one object is rolled back.
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'b' })))).to.equal('one');
    await t.store.checkpoint();
    const history = await zipkv('history', t.dir, '--json');
    const revs = history.stdout.trim().split('\n').map((l) => JSON.parse(l) as { rev: number; key: string; op: string });
    expect(revs.map((r) => `${r.rev} ${r.op} ${r.key}`)).to.deep.equal(['0 put a', '1 put a', '2 copy b', '3 delete a', '4 put mpu']);
  });

  it('GET and HEAD of a version, with Range and conditionals; delete markers and unknown ids as S3 answers', async () => {
    const v0 = await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'first version' }));
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'second' }));
    const marker = await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'k' }));
    const get = t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: v0.VersionId, Range: 'bytes=6-12' }));
    expect(await text(get)).to.equal('version');
    const head = await t.client.send(new HeadObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '1' }));
    expect(head.ContentLength).to.equal(6);
    expect(head.VersionId).to.equal('1');
    const notModified = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '1', IfNoneMatch: head.ETag })));
    expect(notModified.$metadata.httpStatusCode).to.equal(304);
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k' })))).name).to.equal('NoSuchKey');
    const onMarker = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: marker.VersionId })));
    expect(onMarker.$metadata.httpStatusCode).to.equal(405);
    expect(onMarker.$response?.headers['x-amz-delete-marker']).to.equal('true');
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'other', Body: 'x' }));
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '3' })))).name).to.equal('NoSuchVersion');
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '999' })))).name).to.equal('NoSuchVersion');
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: 'abc' })))).name).to.equal('InvalidArgument');
  });

  it('DELETE of a version is refused and changes nothing', async () => {
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'keep me' }));
    const err = await s3Fails(t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '0' })));
    expect(err.$metadata.httpStatusCode).to.equal(400);
    expect(err.message).to.match(/keeps every version/);
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k' })))).to.equal('keep me');
    expect(t.store.revision).to.equal(0);
  });

  it('ListObjectVersions pages across markers that land between two versions of one key, with prefix and delimiter', async () => {
    for (let round = 0; round < 3; round++) {
      for (const key of ['a', 'dir/x', 'dir/y', 'z']) await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: key, Body: `${key}${round}` }));
    }
    const before = Date.now() - 1000;
    await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'z' }));
    const markers = (await t.client.send(new ListObjectVersionsCommand({ Bucket: 'bucket', Prefix: 'z' }))).DeleteMarkers!;
    expect(markers[0]!.LastModified!.getTime(), 'a delete marker has the time of its delete').to.be.within(before, Date.now() + 1000);
    const whole = await listAll(t);
    expect(whole.entries.map((e) => `${e.key}@${e.id}${e.deleted ? 'D' : ''}${e.latest ? '*' : ''}`)).to.deep.equal([
      'a@8*', 'a@4', 'a@0',
      'dir/x@9*', 'dir/x@5', 'dir/x@1',
      'dir/y@10*', 'dir/y@6', 'dir/y@2',
      'z@12D*', 'z@11', 'z@7', 'z@3',
    ]);
    for (const MaxKeys of [1, 2, 4, 5]) {
      const paged = await listAll(t, { MaxKeys });
      expect(paged.entries, `pages of ${MaxKeys}`).to.deep.equal(whole.entries);
      expect(paged.pages).to.equal(Math.ceil(13 / MaxKeys));
    }
    const rolled = await listAll(t, { Delimiter: '/', MaxKeys: 2 });
    expect(rolled.prefixes).to.deep.equal(['dir/']);
    expect(rolled.entries.map((e) => e.key)).to.not.include('dir/x');
    expect((await listAll(t, { Prefix: 'dir/', MaxKeys: 4 })).entries).to.have.length(6);
  });

  it('versions survive a restart, and a rebase that keeps them', async () => {
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'v0' }));
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'v1' }));
    await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k', Body: 'v2' }));
    const dir = t.dir;
    await t.stop();
    const rebase = await zipkv('rebase', dir, '--to', '1');
    expect(rebase.code, rebase.stderr).to.equal(0);
    t = await startServer({ dir });
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '0' })))).to.equal('v0');
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k' })))).to.equal('v1');
    expect((await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'k', VersionId: '2' })))).name).to.equal('NoSuchVersion');
    expect((await listAll(t)).entries.map((e) => e.id)).to.deep.equal(['1', '0']);
  });

  it('after a compaction: the versions inside the window and the kept ones, under their ids; a forgotten one is NoSuchVersion, saying where the history begins', async () => {
    const put = async (key: string, body: string) => (await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: key, Body: body }))).VersionId!;
    const a0 = await put('a', 'a0');
    const a1 = await put('a', 'a1');
    const b0 = await put('b', 'b0');
    await t.client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'b' }));
    const c0 = await put('c', 'c0');
    await new Promise((resolve) => setTimeout(resolve, 30));
    const mid = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 30));
    const a2 = await put('a', 'a2');
    const result = await t.store.compact({ keepHistoryMs: Date.now() - mid, bytesPerSecond: 0 });
    expect(result!.historyStart).to.equal(Number(a2));
    // a1 and c0 were live before the horizon: kept under their ids; a0, b0 and b's delete are gone.
    expect((await listAll(t)).entries.map((e) => `${e.key}@${e.id}${e.deleted ? ' x' : ''}${e.latest ? ' latest' : ''}`)).to.deep.equal([
      `a@${a2} latest`,
      `a@${a1}`,
      `c@${c0} latest`,
    ]);
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'a', VersionId: a1 })))).to.equal('a1');
    for (const [key, id] of [['a', a0], ['b', b0]] as const) {
      const err = await s3Fails(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: key, VersionId: id })));
      expect(err.name).to.equal('NoSuchVersion');
      expect(err.message).to.contain(`the history kept begins at version ${a2}`);
    }
    const copy = await s3Fails(t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'restore', CopySource: `bucket/a?versionId=${a0}` })));
    expect(copy.name).to.equal('NoSuchVersion');
    // Rolling back to a kept version still works.
    await t.client.send(new CopyObjectCommand({ Bucket: 'bucket', Key: 'a', CopySource: `bucket/a?versionId=${a1}` }));
    expect(await text(t.client.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'a' })))).to.equal('a1');
  });
});
