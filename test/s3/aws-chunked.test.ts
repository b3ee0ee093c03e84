import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { PutObjectCommand, S3Client, type ChecksumAlgorithm } from '@aws-sdk/client-s3';
import type { StreamingSignatureContext } from '../../src/lib/s3/auth/authenticate.js';
import { authenticateUrl as authenticate } from './auth-input.js';
import { chunkStringToSign, deriveSigningKey, signHex, trailerStringToSign } from '../../src/lib/s3/auth/signature-v4.js';
import {
  AwsChunkedDecoder,
  MAX_CHUNKED_LINE,
  MAX_TRAILER_BYTES,
  awsChunkedOptions,
  createChecksumVerifier,
  crc32c,
  type AwsChunkedDecoderOptions,
} from '../../src/lib/s3/aws-chunked.js';
import { S3Error } from '../../src/lib/s3/errors.js';

/** Feeds `body` to a decoder in pieces of `pieceSize` bytes (respecting backpressure) and collects the output. */
async function decode(body: Buffer, options: AwsChunkedDecoderOptions, pieceSize = 1 << 16): Promise<{ data: Buffer; decoder: AwsChunkedDecoder }> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < body.length; i += pieceSize) pieces.push(body.subarray(i, i + pieceSize));
  const decoder = new AwsChunkedDecoder(options);
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      out.push(chunk);
      cb();
    },
  });
  await pipeline(Readable.from(pieces), decoder, sink);
  return { data: Buffer.concat(out), decoder };
}

async function expectDecodeError(body: Buffer, options: AwsChunkedDecoderOptions, code: string, pieceSize?: number): Promise<S3Error> {
  try {
    await decode(body, options, pieceSize);
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(S3Error);
    expect((err as S3Error).code, (err as Error).message).to.equal(code);
    return err as S3Error;
  }
  expect.fail(`expected ${code}, but the body decoded`);
}

function base64Crc32(data: Uint8Array): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32(data));
  return b.toString('base64');
}

function unsignedBody(chunks: Buffer[], trailers: string[] = []): Buffer {
  const parts: Buffer[] = [];
  for (const c of chunks) parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  parts.push(Buffer.from('0\r\n'));
  for (const t of trailers) parts.push(Buffer.from(`${t}\r\n`));
  parts.push(Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

/** A signed aws-chunked body, chained from the context's seed signature. */
function signedBody(ctx: StreamingSignatureContext, chunks: Buffer[], trailers?: string[]): Buffer {
  const parts: Buffer[] = [];
  let previous = ctx.seedSignature;
  for (const c of [...chunks, Buffer.alloc(0)]) {
    const sig = signHex(ctx.signingKey, chunkStringToSign(ctx, previous, createHash('sha256').update(c).digest('hex')));
    parts.push(Buffer.from(`${c.length.toString(16)};chunk-signature=${sig}\r\n`), c);
    if (c.length > 0) parts.push(Buffer.from('\r\n'));
    previous = sig;
  }
  if (trailers) {
    const canonical = trailers.map((t) => t + '\n').join('');
    const sig = signHex(ctx.signingKey, trailerStringToSign(ctx, previous, canonical));
    for (const t of trailers) parts.push(Buffer.from(`${t}\r\n`));
    parts.push(Buffer.from(`x-amz-trailer-signature:${sig}\r\n`));
  }
  parts.push(Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

// The chunked-upload examples of the AWS documentation ("Signature Calculations for the
// Authorization Header: Transferring Payload in Multiple Chunks", and "... Including Trailing
// Headers"): 65,536 + 1,024 bytes of 'a', seed and chunk signatures as published there.
const DOC_CREDS = { accessKey: 'AKIAIOSFODNN7EXAMPLE', secretKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };

function docRequest(trailer: boolean): { method: string; url: string; headers: IncomingHttpHeaders; body: Buffer } {
  const sigs = trailer
    ? ['b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2', '1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7', '2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992']
    : ['ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648', '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497', 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'];
  const parts = [
    Buffer.from(`10000;chunk-signature=${sigs[0]}\r\n`),
    Buffer.alloc(65536, 'a'),
    Buffer.from(`\r\n400;chunk-signature=${sigs[1]}\r\n`),
    Buffer.alloc(1024, 'a'),
    Buffer.from(`\r\n0;chunk-signature=${sigs[2]}\r\n`),
  ];
  if (trailer) parts.push(Buffer.from('x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n'));
  parts.push(Buffer.from('\r\n'));
  const body = Buffer.concat(parts);
  const headers: IncomingHttpHeaders = {
    host: 's3.amazonaws.com',
    'x-amz-date': '20130524T000000Z',
    'x-amz-storage-class': 'REDUCED_REDUNDANCY',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': '66560',
  };
  let signedHeaders: string;
  let seed: string;
  if (trailer) {
    headers['x-amz-content-sha256'] = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
    headers['x-amz-trailer'] = 'x-amz-checksum-crc32c';
    signedHeaders = 'content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer';
    seed = '106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e';
  } else {
    headers['x-amz-content-sha256'] = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
    headers['content-length'] = '66824';
    signedHeaders = 'content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class';
    seed = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
  }
  headers['authorization'] = `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=${signedHeaders},Signature=${seed}`;
  return { method: 'PUT', url: '/examplebucket/chunkObject.txt', headers, body };
}

function docContext(trailer: boolean): { options: AwsChunkedDecoderOptions; body: Buffer } {
  const req = docRequest(trailer);
  const result = authenticate(req, DOC_CREDS, { skipClockCheck: true });
  expect(result.kind).to.equal('v4');
  if (result.kind !== 'v4') throw new Error('unreachable');
  expect(result.streaming).to.not.equal(undefined);
  return { options: awsChunkedOptions(req.headers, result.streaming), body: req.body };
}

function withByte(body: Buffer, at: number, value: number): Buffer {
  const copy = Buffer.from(body);
  copy[at] = value;
  return copy;
}

describe('aws-chunked: checksums', () => {
  it('computes CRC-32C (check value of "123456789" is 0xE3069283)', () => {
    expect(crc32c(Buffer.from('123456789'))).to.equal(0xe3069283);
    const data = randomBytes(1000);
    expect(crc32c(data.subarray(300), crc32c(data.subarray(0, 300)))).to.equal(crc32c(data));
    expect(Buffer.from([0xb0, 0xe3, 0xbc, 0xfd]).toString('base64')).to.equal('sOO8/Q=='); // crc32c of the AWS example
    expect(crc32c(Buffer.alloc(66560, 'a'))).to.equal(0xb0e3bcfd);
  });

  it('verifies each header checksum and reports a mismatch as BadDigest', () => {
    const body = Buffer.from('The quick brown fox');
    const crcc = Buffer.alloc(4);
    crcc.writeUInt32BE(crc32c(body));
    const values: Record<string, string> = {
      'x-amz-checksum-crc32': base64Crc32(body),
      'x-amz-checksum-crc32c': crcc.toString('base64'),
      'x-amz-checksum-sha1': createHash('sha1').update(body).digest('base64'),
      'x-amz-checksum-sha256': createHash('sha256').update(body).digest('base64'),
    };
    for (const [name, value] of Object.entries(values)) {
      const ok = createChecksumVerifier({ [name]: value })!;
      expect(ok.header).to.equal(name);
      ok.update(body.subarray(0, 5));
      ok.update(body.subarray(5));
      expect(ok.verify()).to.equal(value);
      const bad = createChecksumVerifier({ [name]: value })!;
      bad.update(Buffer.from('The quick brown fix'));
      expect(() => bad.verify()).to.throw(S3Error).with.property('code', 'BadDigest');
    }
    // CRC-64/NVME is not computed: accepted when well-formed.
    const nvme = createChecksumVerifier({ 'x-amz-checksum-crc64nvme': 'AAAAAAAAAAA=' })!;
    nvme.update(body);
    expect(nvme.verify()).to.equal('AAAAAAAAAAA=');
  });

  it('rejects malformed and multiple checksum headers', () => {
    expect(createChecksumVerifier({ 'content-type': 'x' })).to.equal(undefined);
    expect(() => createChecksumVerifier({ 'x-amz-checksum-crc32': 'AAAA' })).to.throw(S3Error).with.property('code', 'InvalidRequest');
    expect(() => createChecksumVerifier({ 'x-amz-checksum-sha256': 'not base64!' })).to.throw(S3Error).with.property('code', 'InvalidRequest');
    expect(() => createChecksumVerifier({ 'x-amz-checksum-crc32': 'AAAAAA==', 'x-amz-checksum-sha1': createHash('sha1').digest('base64') }))
      .to.throw(S3Error)
      .with.property('code', 'InvalidRequest');
  });
});

describe('aws-chunked: the AWS documentation examples', () => {
  for (const trailer of [false, true]) {
    const name = trailer ? 'signed with a crc32c trailer' : 'signed';
    it(`decodes the ${name} example, whole and one byte at a time`, async () => {
      const { options, body } = docContext(trailer);
      for (const pieceSize of [body.length, 65536, 7, 1]) {
        const { data, decoder } = await decode(body, options, pieceSize);
        expect(data.equals(Buffer.alloc(66560, 'a'))).to.equal(true);
        expect(decoder.decodedLength).to.equal(66560);
        expect(decoder.trailers).to.deep.equal(trailer ? { 'x-amz-checksum-crc32c': 'sOO8/Q==' } : {});
      }
    });

    it(`rejects the ${name} example when a data byte, a signature or the order changes`, async () => {
      const { options, body } = docContext(trailer);
      const firstData = body.indexOf('\r\n') + 2;
      await expectDecodeError(withByte(body, firstData + 1000, 0x62), options, 'SignatureDoesNotMatch');
      const secondHeader = body.indexOf('400;chunk-signature=');
      await expectDecodeError(withByte(body, secondHeader + 30, body[secondHeader + 30] === 0x30 ? 0x31 : 0x30), options, 'SignatureDoesNotMatch');
      // The same chunks under another seed.
      const other = { ...options, signature: { ...options.signature!, seedSignature: '0'.repeat(64) } };
      await expectDecodeError(body, other, 'SignatureDoesNotMatch');
      // A chunk without its signature.
      const stripped = Buffer.concat([body.subarray(0, secondHeader + 3), body.subarray(secondHeader + 3 + 1 + 'chunk-signature='.length + 64)]);
      await expectDecodeError(stripped, options, 'SignatureDoesNotMatch');
      if (trailer) {
        const at = body.indexOf('x-amz-trailer-signature:') + 'x-amz-trailer-signature:'.length;
        await expectDecodeError(withByte(body, at, body[at] === 0x30 ? 0x31 : 0x30), options, 'SignatureDoesNotMatch');
      }
    });
  }

  it('checks the trailing checksum of the signed example', async () => {
    const { options } = docContext(true);
    const ctx = options.signature!;
    const data = Buffer.alloc(66560, 'a');
    // A correctly signed trailer with a wrong checksum.
    await expectDecodeError(signedBody(ctx, [data], ['x-amz-checksum-crc32c:AAAAAA==']), options, 'BadDigest');
    // The right checksum, re-signed by the test's encoder: decodes.
    const good = signedBody(ctx, [data.subarray(0, 30000), data.subarray(30000)], ['x-amz-checksum-crc32c:sOO8/Q==']);
    expect((await decode(good, options, 1000)).data.equals(data)).to.equal(true);
  });
});

describe('aws-chunked: hand-made bodies', () => {
  const ctx: StreamingSignatureContext = {
    signingKey: deriveSigningKey('secret', '20261124', 'eu-west-1', 's3'),
    seedSignature: 'f'.repeat(64),
    timestamp: '20261124T101010Z',
    scope: '20261124/eu-west-1/s3/aws4_request',
  };
  const chunks = [randomBytes(8192), randomBytes(100), randomBytes(3)];
  const data = Buffer.concat(chunks);

  it('decodes signed bodies fed in every piece size up to 40 bytes', async () => {
    const body = signedBody(ctx, chunks);
    for (let size = 1; size <= 40; size++) {
      const { data: out } = await decode(body, { signature: ctx, decodedContentLength: data.length }, size);
      expect(out.equals(data), `piece size ${size}`).to.equal(true);
    }
  });

  it('reports every truncation as IncompleteBody', async () => {
    const small = [Buffer.from('hello '), Buffer.from('world')];
    const cases: Array<[Buffer, AwsChunkedDecoderOptions]> = [
      [signedBody(ctx, small), { signature: ctx }],
      [signedBody(ctx, small, ['x-amz-checksum-crc32:' + base64Crc32(Buffer.from('hello world'))]), { signature: ctx, trailers: true, declaredTrailer: 'x-amz-checksum-crc32' }],
      [unsignedBody(small, ['x-amz-checksum-crc32:' + base64Crc32(Buffer.from('hello world'))]), { trailers: true, declaredTrailer: 'x-amz-checksum-crc32' }],
    ];
    for (const [body, options] of cases) {
      expect((await decode(body, options)).data.toString()).to.equal('hello world');
      const lastChunkEnd = body.lastIndexOf('0;chunk-signature=') >= 0 ? body.indexOf('\r\n', body.lastIndexOf('0;chunk-signature=')) + 2 : -1;
      for (let n = 0; n < body.length; n++) {
        const prefix = body.subarray(0, n);
        if (!options.trailers && n === lastChunkEnd) {
          // `...0;chunk-signature=..\r\n` without the closing CRLF is tolerated.
          expect((await decode(prefix, options)).data.toString()).to.equal('hello world');
          continue;
        }
        await expectDecodeError(prefix, options, 'IncompleteBody', 3);
      }
    }
  });

  it('checks the decoded length against x-amz-decoded-content-length', async () => {
    const body = signedBody(ctx, chunks);
    await expectDecodeError(body, { signature: ctx, decodedContentLength: data.length + 1 }, 'IncompleteBody');
    await expectDecodeError(body, { signature: ctx, decodedContentLength: data.length - 1 }, 'IncompleteBody');
  });

  it('rejects malformed framing and undeclared or bad trailers', async () => {
    await expectDecodeError(Buffer.from('zz\r\nab\r\n0\r\n\r\n'), {}, 'InvalidArgument');
    await expectDecodeError(Buffer.from('2\r\nabc\r\n0\r\n\r\n'), {}, 'InvalidArgument');
    await expectDecodeError(Buffer.from('2\nab\r\n0\r\n\r\n'), {}, 'InvalidArgument');
    await expectDecodeError(Buffer.from('2\r\nab\r\n0\r\n\r\nextra'), {}, 'InvalidArgument');
    const crc = base64Crc32(Buffer.from('ab'));
    const opts = { trailers: true, declaredTrailer: 'x-amz-checksum-crc32' };
    expect((await decode(Buffer.from(`2\r\nab\r\n0\r\nx-amz-checksum-crc32:${crc}\r\n\r\n`), opts, 1)).data.toString()).to.equal('ab');
    await expectDecodeError(Buffer.from(`2\r\nab\r\n0\r\nx-amz-checksum-crc32:${base64Crc32(Buffer.from('ac'))}\r\n\r\n`), opts, 'BadDigest', 1);
    await expectDecodeError(Buffer.from('2\r\nab\r\n0\r\nx-amz-checksum-crc32:xyz\r\n\r\n'), opts, 'InvalidRequest');
    await expectDecodeError(Buffer.from('2\r\nab\r\n0\r\n\r\n'), opts, 'IncompleteBody');
    await expectDecodeError(Buffer.from(`2\r\nab\r\n0\r\nx-amz-checksum-sha1:${createHash('sha1').update('ab').digest('base64')}\r\n\r\n`), opts, 'InvalidRequest');
    expect(() => new AwsChunkedDecoder({ trailers: true, declaredTrailer: 'x-amz-checksum-md5' })).to.throw(S3Error);
  });

  it('bounds chunk lines (with extensions) and trailers: a body that never ends them is refused', async () => {
    const longExtension = `2;${'x'.repeat(5000)}\r\nab\r\n0\r\n\r\n`;
    await expectDecodeError(Buffer.from(longExtension), {}, 'InvalidArgument');
    const manyTrailers = Array.from({ length: 10_000 }, (_, i) => `x-amz-meta-t${i}:v`).join('\r\n');
    await expectDecodeError(Buffer.from(`2\r\nab\r\n0\r\n${manyTrailers}\r\n\r\n`), { trailers: true, declaredTrailer: 'x-amz-checksum-crc32' }, 'InvalidArgument');
    await expectDecodeError(Buffer.from(`2\r\nab\r\n0\r\n${'y'.repeat(5000)}:v\r\n\r\n`), { trailers: true, declaredTrailer: 'x-amz-checksum-crc32' }, 'InvalidArgument');
  });

  it('a chunk size line is at most 4 KiB with its extensions and CRLF: one byte more is refused', async () => {
    // `2;e=<pad>\r\n` of exactly MAX_CHUNKED_LINE bytes, then of one more.
    const line = (bytes: number) => `2;e=${'p'.repeat(bytes - '2;e=\r\n'.length)}\r\n`;
    expect(line(MAX_CHUNKED_LINE)).to.have.length(MAX_CHUNKED_LINE);
    for (const pieceSize of [1, 7, 1 << 16]) {
      const ok = await decode(Buffer.from(`${line(MAX_CHUNKED_LINE)}ab\r\n0\r\n\r\n`), {}, pieceSize);
      expect(ok.data.toString()).to.equal('ab');
      const err = await expectDecodeError(Buffer.from(`${line(MAX_CHUNKED_LINE + 1)}ab\r\n0\r\n\r\n`), {}, 'InvalidArgument', pieceSize);
      expect(err.message).to.match(/chunk size line longer than 4096 bytes/);
    }
  });

  it('a chunk size line that never ends is refused once it passes the bound, not buffered', async () => {
    const decoder = new AwsChunkedDecoder({});
    decoder.resume();
    decoder.on('error', () => {});
    let written = 0;
    let error: Error | null | undefined;
    // Hex digits (a plausible size) then extension bytes, 1 KiB at a time (1 MiB in all), never a line feed.
    for (let i = 0; i < 1024 && !error; i++) {
      const piece = Buffer.from(i === 0 ? `1000;${'z'.repeat(1019)}` : 'z'.repeat(1024));
      written += piece.length;
      await new Promise<void>((resolve) =>
        decoder.write(piece, (err) => {
          error = err;
          resolve();
        }),
      );
    }
    expect(error).to.be.instanceOf(S3Error);
    expect((error as S3Error).code).to.equal('InvalidArgument');
    expect(written).to.be.at.most(MAX_CHUNKED_LINE + 1024);
  });

  it('trailers: each line at most 4 KiB, at most 16 lines, at most 16 KiB in all; within the bounds they are read', async () => {
    const opts = { trailers: true, declaredTrailer: 'x-amz-checksum-crc32' };
    const checksum = `x-amz-checksum-crc32:${base64Crc32(Buffer.from('ab'))}`;
    const body = (trailers: string[]) => Buffer.from(`2\r\nab\r\n0\r\n${trailers.map((t) => `${t}\r\n`).join('')}\r\n`);
    const meta = (i: number, bytes: number) => `x-amz-meta-t${String(i).padStart(2, '0')}:${'v'.repeat(bytes - 'x-amz-meta-t00:\r\n'.length)}`;
    // 16 lines, one of them a 4 KiB line: accepted.
    const sixteen = [checksum, meta(0, MAX_CHUNKED_LINE), ...Array.from({ length: 14 }, (_, i) => meta(i + 1, 40))];
    const ok = await decode(body(sixteen), opts, 5);
    expect(ok.data.toString()).to.equal('ab');
    expect(ok.decoder.trailers['x-amz-meta-t00']).to.have.length(MAX_CHUNKED_LINE - 'x-amz-meta-t00:\r\n'.length);
    // A trailer line one byte too long; a 17th line; 5 lines of 4000 bytes (each within its bound, 20 KB in all).
    expect((await expectDecodeError(body([checksum, meta(0, MAX_CHUNKED_LINE + 1)]), opts, 'InvalidArgument')).message).to.match(/trailer line longer/);
    expect((await expectDecodeError(body([...sixteen, meta(99, 40)]), opts, 'InvalidArgument')).message).to.match(/more than 16 trailer lines/);
    const big = [checksum, ...Array.from({ length: 5 }, (_, i) => meta(i, 4000))];
    expect((await expectDecodeError(body(big), opts, 'InvalidArgument', 100)).message).to.match(new RegExp(`trailers longer than ${MAX_TRAILER_BYTES} bytes`));
  });

  it('keeps backpressure: a slow consumer holds back the producer', async () => {
    const piece = 64 * 1024;
    const total = 4 * 1024 * 1024;
    const payload = randomBytes(total);
    const body = unsignedBody([payload]);
    let produced = 0;
    let consumed = 0;
    let maxLag = 0;
    async function* source() {
      for (let i = 0; i < body.length; i += piece) {
        produced += Math.min(piece, body.length - i);
        yield body.subarray(i, i + piece);
      }
    }
    const sink = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _e, cb) {
        consumed += chunk.length;
        maxLag = Math.max(maxLag, produced - consumed);
        setImmediate(cb);
      },
    });
    await pipeline(Readable.from(source(), { highWaterMark: 1 }), new AwsChunkedDecoder({ decodedContentLength: total }), sink);
    expect(consumed).to.equal(total);
    expect(maxLag).to.be.lessThan(512 * 1024);
  });
});

describe('aws-chunked: streaming uploads sent by the AWS SDK', function () {
  this.timeout(20_000);
  const creds = { accessKey: 'AKIDEXAMPLE', secretKey: 'chunky-secret' };
  const captured: Array<{ method: string; url: string; headers: IncomingHttpHeaders; body: Buffer }> = [];
  let server: http.Server;
  let client: S3Client;
  const payload = randomBytes(100_000);
  const algorithms: ChecksumAlgorithm[] = ['CRC32', 'CRC32C', 'SHA1', 'SHA256'];

  before(async () => {
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        captured.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { etag: '"x"', 'content-length': '0' });
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    client = new S3Client({
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: creds.accessKey, secretAccessKey: creds.secretKey },
      maxAttempts: 1,
    });
    for (const ChecksumAlgorithm of algorithms) {
      // A stream body: sent aws-chunked with the checksum as a trailer.
      const pieces = [payload.subarray(0, 1), payload.subarray(1, 70_000), payload.subarray(70_000)];
      await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: `stream ${ChecksumAlgorithm} ü`, Body: Readable.from(pieces), ContentLength: payload.length, ChecksumAlgorithm }));
      // A buffer body: the checksum comes as a header.
      await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: `buffer ${ChecksumAlgorithm}`, Body: payload, ChecksumAlgorithm }));
    }
  });

  after(async () => {
    client?.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('decodes the streamed uploads and verifies their trailing checksums', async () => {
    const streamed = captured.filter((c) => c.headers['content-encoding'] === 'aws-chunked');
    expect(streamed.length).to.equal(algorithms.length);
    for (const c of streamed) {
      const result = authenticate(c, creds);
      expect(result).to.deep.equal({ kind: 'v4', payloadHash: 'STREAMING-UNSIGNED-PAYLOAD-TRAILER' });
      const options = awsChunkedOptions(c.headers);
      expect(options.trailers).to.equal(true);
      expect(options.decodedContentLength).to.equal(payload.length);
      for (const pieceSize of [c.body.length, 4096, 1]) {
        const { data, decoder } = await decode(c.body, options, pieceSize);
        expect(data.equals(payload), `${c.url} in pieces of ${pieceSize}`).to.equal(true);
        expect(Object.keys(decoder.trailers)).to.deep.equal([options.declaredTrailer]);
      }
      // A flipped data byte: the checksum no longer matches.
      const at = c.body.indexOf('\r\n') + 2 + 10;
      await expectDecodeError(withByte(c.body, at, c.body[at]! ^ 1), options, 'BadDigest');
      // A corrupted trailer value.
      const t = c.body.indexOf(`${options.declaredTrailer}:`) + options.declaredTrailer!.length + 1;
      await expectDecodeError(withByte(c.body, t, c.body[t] === 0x41 ? 0x42 : 0x41), options, 'BadDigest');
      // Cut short.
      await expectDecodeError(c.body.subarray(0, c.body.length - 40), options, 'IncompleteBody');
    }
  });

  it('verifies the checksums the SDK sent as headers', () => {
    const buffered = captured.filter((c) => c.url.includes('/buffer%20'));
    expect(buffered.length).to.equal(algorithms.length);
    for (const c of buffered) {
      const result = authenticate(c, creds);
      expect(result.kind).to.equal('v4');
      const verifier = createChecksumVerifier(c.headers)!;
      expect(verifier, c.url).to.not.equal(undefined);
      verifier.update(c.body.subarray(0, 1000));
      verifier.update(c.body.subarray(1000));
      verifier.verify();
      const bad = createChecksumVerifier(c.headers)!;
      bad.update(withByte(c.body, 5, c.body[5]! ^ 1));
      expect(() => bad.verify()).to.throw(S3Error).with.property('code', 'BadDigest');
    }
  });
});
