import {
  GetBucketLocationCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { rawRequest, xmlField } from '../helpers/http.js';
import { startServer, type TestServer, s3Fails } from '../helpers/server.js';


const MANY = 2500;
const manyKey = (i: number) => `many/k${String(i).padStart(5, '0')}`;
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Keys whose UTF-16 order differs from their UTF-8 byte order, and XML's special characters. */
const ODD_KEYS = [
  'odd/a&b',
  'odd/<tag>',
  'odd/"quoted"',
  "odd/it's",
  'odd/all &<>"\' five',
  'odd/sp ace+plus%25percent',
  'odd/~!@#$^*()=[]{}|\\;:,?`',
  'odd/z',
  'odd/\u00e9',
  'odd/\ue000private',
  'odd/\ufffdreplacement',
  'odd/\u{1f600}emoji',
  'odd/\u{10000}linear-b',
];

describe('s3: listing (AWS SDK and raw)', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
    const puts: Array<Promise<unknown>> = [];
    for (let i = 0; i < MANY; i++) puts.push(t.store.put(manyKey(i), Buffer.from(String(i))));
    for (const key of ['d/a/1', 'd/a/2', 'd/b/1', 'd/c', 'd/d/x/y', 'd/e']) puts.push(t.store.put(key, Buffer.from(key)));
    await Promise.all(puts);
    for (const key of ODD_KEYS) await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: key, Body: key }));
  });
  after(async () => {
    await t.stop();
  });

  it('v1 pages 2,500 keys by 1000 with marker and NextMarker', async () => {
    const seen: string[] = [];
    const sizes: number[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'many/', Marker: marker }));
      const keys = (page.Contents ?? []).map((c) => c.Key!);
      sizes.push(keys.length);
      seen.push(...keys);
      expect(page.MaxKeys).to.equal(1000);
      if (!page.IsTruncated) break;
      expect(page.NextMarker).to.equal(keys[keys.length - 1]);
      marker = page.NextMarker;
    }
    expect(sizes).to.deep.equal([1000, 1000, 500]);
    expect(seen).to.deep.equal(Array.from({ length: MANY }, (_, i) => manyKey(i)));
  });

  it('v1 caps max-keys at 1000 and honours small values', async () => {
    const big = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'many/', MaxKeys: 5000 }));
    expect(big.Contents).to.have.length(1000);
    expect(big.IsTruncated).to.equal(true);
    const three = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'many/', MaxKeys: 3, Marker: manyKey(10) }));
    expect(three.Contents!.map((c) => c.Key)).to.deep.equal([manyKey(11), manyKey(12), manyKey(13)]);
    expect(three.IsTruncated).to.equal(true);
    expect(three.Marker).to.equal(manyKey(10));
    const entry = three.Contents![0]!;
    expect(entry.Size).to.equal(2);
    expect(entry.ETag).to.match(/^"[0-9a-f]{32}"$/);
    expect(entry.LastModified).to.be.instanceOf(Date);
    expect(entry.Owner?.ID).to.be.a('string'); // v1 always has an owner
  });

  it('max-keys=0 returns nothing and is not truncated (v1 and v2)', async () => {
    const v1 = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'many/', MaxKeys: 0 }));
    expect(v1.Contents ?? []).to.have.length(0);
    expect(v1.IsTruncated).to.equal(false);
    expect(v1.MaxKeys).to.equal(0);
    const v2 = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'many/', MaxKeys: 0 }));
    expect(v2.KeyCount).to.equal(0);
    expect(v2.IsTruncated).to.equal(false);
    expect(v2.NextContinuationToken).to.equal(undefined);
  });

  it('a negative or non-numeric max-keys is InvalidArgument', async () => {
    for (const value of ['-1', 'ten']) {
      const res = await rawRequest(t.port, { path: `/bucket?max-keys=${value}` });
      expect(res.status, value).to.equal(400);
      expect(xmlField(res.body, 'Code'), value).to.equal('InvalidArgument');
    }
  });

  it('v2 pages with continuation tokens, KeyCount and start-after', async () => {
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    for (;;) {
      const page = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'many/', ContinuationToken: token }));
      pages++;
      expect(page.KeyCount).to.equal(page.Contents!.length);
      expect(page.ContinuationToken).to.equal(token);
      seen.push(...page.Contents!.map((c) => c.Key!));
      if (!page.IsTruncated) {
        expect(page.NextContinuationToken).to.equal(undefined);
        break;
      }
      expect(page.NextContinuationToken).to.be.a('string').and.not.equal('');
      token = page.NextContinuationToken;
    }
    expect(pages).to.equal(3);
    expect(seen).to.deep.equal(Array.from({ length: MANY }, (_, i) => manyKey(i)));

    const after = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'many/', StartAfter: manyKey(2497) }));
    expect(after.Contents!.map((c) => c.Key)).to.deep.equal([manyKey(2498), manyKey(2499)]);
    expect(after.StartAfter).to.equal(manyKey(2497));
    expect(after.IsTruncated).to.equal(false);
  });

  it('v2 sends Owner only with fetch-owner', async () => {
    const without = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'd/', MaxKeys: 1 }));
    expect(without.Contents![0]!.Owner).to.equal(undefined);
    const withOwner = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'd/', MaxKeys: 1, FetchOwner: true }));
    expect(withOwner.Contents![0]!.Owner?.ID).to.be.a('string').and.not.equal('');
  });

  it('the SDK paginator walks every key once', async () => {
    const seen: string[] = [];
    let pages = 0;
    for await (const page of paginateListObjectsV2({ client: t.client, pageSize: 1000 }, { Bucket: 'bucket', Prefix: 'many/' })) {
      pages++;
      expect(page.Contents!.length).to.be.at.most(1000);
      seen.push(...page.Contents!.map((c) => c.Key!));
    }
    expect(pages).to.equal(3);
    expect(new Set(seen).size).to.equal(MANY);
    const small: string[] = [];
    for await (const page of paginateListObjectsV2({ client: t.client, pageSize: 2 }, { Bucket: 'bucket', Prefix: 'd/' })) {
      small.push(...(page.Contents ?? []).map((c) => c.Key!));
    }
    expect(small).to.deep.equal(['d/a/1', 'd/a/2', 'd/b/1', 'd/c', 'd/d/x/y', 'd/e']);
  });

  it('delimiter rolls keys up into CommonPrefixes, counted against max-keys', async () => {
    const all = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'd/', Delimiter: '/' }));
    expect(all.CommonPrefixes!.map((p) => p.Prefix)).to.deep.equal(['d/a/', 'd/b/', 'd/d/']);
    expect(all.Contents!.map((c) => c.Key)).to.deep.equal(['d/c', 'd/e']);
    expect(all.Delimiter).to.equal('/');
    expect(all.IsTruncated).to.equal(false);

    // Pages of two: prefixes and keys share the count, and NextMarker may be a prefix.
    const walked: string[] = [];
    let marker: string | undefined;
    const pageSizes: number[] = [];
    for (;;) {
      const page = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'd/', Delimiter: '/', MaxKeys: 2, Marker: marker }));
      const items = [...(page.CommonPrefixes ?? []).map((p) => p.Prefix!), ...(page.Contents ?? []).map((c) => c.Key!)].sort(byteOrder);
      pageSizes.push(items.length);
      walked.push(...items);
      if (!page.IsTruncated) break;
      expect(page.NextMarker).to.equal(items[items.length - 1]);
      marker = page.NextMarker;
    }
    expect(pageSizes).to.deep.equal([2, 2, 1]);
    expect(walked).to.deep.equal(['d/a/', 'd/b/', 'd/c', 'd/d/', 'd/e']);

    // A marker equal to a common prefix skips the whole prefix.
    const skip = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'd/', Delimiter: '/', Marker: 'd/a/' }));
    expect(skip.CommonPrefixes!.map((p) => p.Prefix)).to.deep.equal(['d/b/', 'd/d/']);

    // v2: KeyCount counts prefixes too, and the token resumes after a prefix.
    const first = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'd/', Delimiter: '/', MaxKeys: 1 }));
    expect(first.KeyCount).to.equal(1);
    expect(first.CommonPrefixes!.map((p) => p.Prefix)).to.deep.equal(['d/a/']);
    const second = await t.client.send(
      new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'd/', Delimiter: '/', MaxKeys: 1, ContinuationToken: first.NextContinuationToken }),
    );
    expect(second.CommonPrefixes!.map((p) => p.Prefix)).to.deep.equal(['d/b/']);

    // No prefix: top-level roll-up.
    const top = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Delimiter: '/' }));
    expect(top.CommonPrefixes!.map((p) => p.Prefix)).to.include.members(['d/', 'many/', 'odd/']);
    expect(top.Contents ?? []).to.have.length(0);
    expect(top.KeyCount).to.equal(top.CommonPrefixes!.length);
  });

  it('keys come back intact (XML-escaped) in UTF-8 byte order', async () => {
    const res = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'odd/' }));
    const keys = res.Contents!.map((c) => c.Key!);
    expect(keys).to.deep.equal([...ODD_KEYS].sort(byteOrder));
    // The byte order is not JavaScript's UTF-16 order for these keys.
    expect([...ODD_KEYS].sort(byteOrder)).to.not.deep.equal([...ODD_KEYS].sort());
    const v1 = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'odd/' }));
    expect(v1.Contents!.map((c) => c.Key!)).to.deep.equal(keys);
    // Paging one key at a time crosses every boundary between them.
    const one: string[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await t.client.send(new ListObjectsCommand({ Bucket: 'bucket', Prefix: 'odd/', MaxKeys: 1, Marker: marker }));
      one.push(...page.Contents!.map((c) => c.Key!));
      if (!page.IsTruncated) break;
      marker = page.NextMarker;
    }
    expect(one).to.deep.equal(keys);
  });

  it('keys with CR, LF and TAB survive the XML (a CR is sent as a reference)', async () => {
    const keys = ['ws/cr\rx', 'ws/crlf\r\nx', 'ws/lf\nx', 'ws/tab\tx'];
    for (const key of keys) await t.client.send(new PutObjectCommand({ Bucket: 'bucket', Key: key, Body: 'x' }));
    const res = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'ws/' }));
    expect(res.Contents!.map((c) => c.Key)).to.deep.equal([...keys].sort(byteOrder));
    const raw = await rawRequest(t.port, { path: '/bucket?prefix=ws/' });
    expect(raw.body.toString()).to.not.contain('\r');
  });

  it('the raw listing of odd keys is well-formed XML with the keys escaped', async () => {
    const res = await rawRequest(t.port, { path: '/bucket/?prefix=odd%2F' });
    expect(res.status).to.equal(200);
    expect(res.headers['content-type']).to.equal('application/xml');
    const text = res.body.toString('utf8');
    expect(XMLValidator.validate(text)).to.equal(true);
    expect(text).to.contain('<Key>odd/a&amp;b</Key>');
    expect(text).to.contain('<Key>odd/&lt;tag&gt;</Key>');
    const parsed = new XMLParser({ isArray: (n) => n === 'Contents', processEntities: true }).parse(text) as {
      ListBucketResult: { Contents: Array<{ Key: string }> };
    };
    expect(parsed.ListBucketResult.Contents.map((c) => String(c.Key))).to.deep.equal([...ODD_KEYS].sort(byteOrder));
  });

  it('encoding-type=url: the SDK gets the keys, the raw reply is percent-encoded', async () => {
    const raw = await rawRequest(t.port, { path: '/bucket?list-type=2&prefix=odd%2F&delimiter=%2F&encoding-type=url' });
    const text = raw.body.toString('utf8');
    expect(xmlField(text, 'EncodingType')).to.equal('url');
    expect(text).to.contain('<Key>odd/a%26b</Key>');
    expect(text).to.contain('<Key>odd/sp%20ace%2Bplus%2525percent</Key>');
    expect(text).to.contain('<Key>odd/%F0%9F%98%80emoji</Key>');
    expect(text).to.contain('<Prefix>odd/</Prefix>');
    const keys = [...text.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => decodeURIComponent(m[1]!));
    expect(keys).to.deep.equal([...ODD_KEYS].sort(byteOrder));

    // The JavaScript SDK hands the keys over still encoded (boto3 decodes them itself).
    const sdk = await t.client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'odd/', EncodingType: 'url' }));
    expect(sdk.EncodingType).to.equal('url');
    expect(sdk.Contents!.map((c) => decodeURIComponent(c.Key!))).to.deep.equal([...ODD_KEYS].sort(byteOrder));

    const bad = await rawRequest(t.port, { path: '/bucket?encoding-type=base64' });
    expect(bad.status).to.equal(400);
    expect(xmlField(bad.body, 'Code')).to.equal('InvalidArgument');
  });

  it("a '+' in the query is a plus, not a space (raw)", async () => {
    await Promise.all(['plus/a+b', 'plus/a b'].map((k) => t.store.put(k, Buffer.from(k))));
    const plus = await rawRequest(t.port, { path: '/bucket?prefix=plus/a+' });
    expect([...plus.body.toString().matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1])).to.deep.equal(['plus/a+b']);
    const space = await rawRequest(t.port, { path: '/bucket?prefix=plus/a%20' });
    expect([...space.body.toString().matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1])).to.deep.equal(['plus/a b']);
    const marker = await rawRequest(t.port, { path: '/bucket?prefix=plus/&marker=plus/a+b' });
    expect(marker.body.toString()).to.not.contain('<Key>');
  });

  it('both /bucket and /bucket/ list (raw)', async () => {
    for (const path of ['/bucket?prefix=d%2F', '/bucket/?prefix=d%2F', '/bucket?list-type=2&prefix=d/', '/bucket/?list-type=2&prefix=d/']) {
      const res = await rawRequest(t.port, { path });
      expect(res.status, path).to.equal(200);
      const text = res.body.toString();
      expect(XMLValidator.validate(text), path).to.equal(true);
      expect(xmlField(text, 'Name'), path).to.equal('bucket');
      expect(xmlField(text, 'Prefix'), path).to.equal('d/');
      expect([...text.matchAll(/<Key>/g)].length, path).to.equal(6);
    }
  });

  it("S3QL's probe GET /bucket/?prefix=P&max-keys=1 answers truncated XML", async () => {
    const res = await rawRequest(t.port, {
      path: '/bucket/?prefix=many%2F&max-keys=1',
      headers: { 'Content-Length': '0', 'Accept-Encoding': 'identity', Connection: 'keep-alive' },
    });
    expect(res.status).to.equal(200);
    expect(res.headers['content-type']).to.match(/^(application|text)\/xml/);
    const text = res.body.toString();
    expect(XMLValidator.validate(text)).to.equal(true);
    expect(text).to.match(/<ListBucketResult xmlns="http:\/\/s3\.amazonaws\.com\/doc\/2006-03-01\/">/);
    expect(xmlField(text, 'IsTruncated')).to.equal('true');
    expect(xmlField(text, 'Key')).to.equal(manyKey(0));
    expect(xmlField(text, 'NextMarker')).to.equal(manyKey(0));

    const empty = await rawRequest(t.port, { path: '/bucket/?prefix=s3ql_nothing&max-keys=1' });
    expect(xmlField(empty.body, 'IsTruncated')).to.equal('false');
    expect(empty.body.toString()).to.not.contain('<Contents>');
  });

  it('ListBuckets, HeadBucket and GetBucketLocation', async () => {
    const buckets = await t.client.send(new ListBucketsCommand({}));
    expect(buckets.Buckets!.map((b) => b.Name)).to.deep.equal(['bucket']);
    expect(buckets.Buckets![0]!.CreationDate).to.be.instanceOf(Date);
    expect(buckets.Owner?.ID).to.be.a('string');
    const head = await t.client.send(new HeadBucketCommand({ Bucket: 'bucket' }));
    expect(head.$metadata.httpStatusCode).to.equal(200);
    expect(head.BucketRegion).to.equal('us-east-1');
    const location = await t.client.send(new GetBucketLocationCommand({ Bucket: 'bucket' }));
    expect(location.LocationConstraint ?? '').to.equal('');
    const raw = await rawRequest(t.port, { path: '/bucket?location' });
    expect(XMLValidator.validate(raw.body.toString())).to.equal(true);
    expect(raw.body.toString()).to.contain('LocationConstraint');
  });

  it('an unknown bucket is NoSuchBucket for listing, HeadBucket and location', async () => {
    const list = await s3Fails(t.client.send(new ListObjectsV2Command({ Bucket: 'nosuch' })));
    expect(list.name).to.equal('NoSuchBucket');
    expect(list.$metadata.httpStatusCode).to.equal(404);
    const v1 = await s3Fails(t.client.send(new ListObjectsCommand({ Bucket: 'nosuch' })));
    expect(v1.name).to.equal('NoSuchBucket');
    const head = await s3Fails(t.client.send(new HeadBucketCommand({ Bucket: 'nosuch' })));
    expect(head.$metadata.httpStatusCode).to.equal(404);
    const location = await s3Fails(t.client.send(new GetBucketLocationCommand({ Bucket: 'nosuch' })));
    expect(location.name).to.equal('NoSuchBucket');
    const raw = await rawRequest(t.port, { path: '/nosuch/' });
    expect(raw.status).to.equal(404);
    expect(xmlField(raw.body, 'Code')).to.equal('NoSuchBucket');
    expect(xmlField(raw.body, 'BucketName')).to.equal('nosuch');
  });
});
