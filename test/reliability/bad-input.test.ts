/**
 * Bad input over raw sockets, as a table: malformed request lines and headers, Content-Length
 * lies both ways, bodies over the limits, clients that stop midway, invalid and hostile XML,
 * bad ranges, invalid keys, bad and replayed signatures, bad copy sources. Each case expects
 * the reply S3 gives (status and error code), or no reply where the client gave up first.
 *
 * The whole table is run over and over, about 10,000 requests in all, against one in-process
 * server (and one with credentials, for the signature cases): no case may change the store
 * (the history revision and every object stay as they were), the servers keep answering, and
 * memory (heapUsed after full collections) and open handles do not grow after a warm-up.
 */
import { createHash, createHmac } from 'node:crypto';
import net from 'node:net';
import { expect } from 'chai';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SourceData } from '@smithy/types';
import { TEST_CREDENTIALS, startServer, type TestServer } from '../helpers/server.js';
import { getGc, md5base64, md5hex, settledHeap, sleep, xmlOne } from './util.js';

const TOTAL_REQUESTS = Number(process.env['ZIPKV_BAD_INPUT_REQUESTS'] ?? 10_000);
const PARALLEL = 8;
const IDLE_MS = 600;

interface Reply {
  /** 0 when the server sent nothing before closing (or the client gave up first). */
  status: number;
  code: string | undefined;
  body: string;
}

type Ending = 'wait' | 'destroy' | 'half-close';

interface Case {
  name: string;
  server: 'anon' | 'auth';
  /** The bytes sent, in order; a pause of IDLE_MS * 2 between parts where `stallAfter` says. */
  data: Buffer;
  ending?: Ending;
  /** Slow cases (the server's idle timeout decides) run in the first rounds only. */
  slow?: boolean;
  /** Expected status and code; a list means any of them. */
  expect: Array<{ status: number; code?: string }>;
  /** Extra check of the reply (the body of a 206, say). */
  check?: (reply: Reply) => string | undefined;
}

function http(method: string, path: string, headers: Record<string, string | number> = {}, body: Buffer | string = '', extra = ''): Buffer {
  const names = Object.keys(headers).map((h) => h.toLowerCase());
  const lines = [`${method} ${path} HTTP/1.1`, ...(names.includes('host') ? [] : ['Host: 127.0.0.1'])];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (!names.includes('content-length') && !names.includes('transfer-encoding') && (body.length > 0 || method === 'PUT' || method === 'POST')) {
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  }
  if (!names.includes('connection')) lines.push('Connection: close');
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n${extra}\r\n`, 'latin1'), Buffer.from(body)]);
}

/** Sends `data`, reads one reply (or nothing until the server closes), never longer than 10 s. */
function exchange(port: number, data: Buffer, ending: Ending = 'wait'): Promise<Reply> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseReply(Buffer.concat(chunks)));
    };
    const timer = setTimeout(() => {
      chunks.length = 0;
      chunks.push(Buffer.from('TIMEOUT'));
      finish();
    }, 10_000);
    socket.on('connect', () => {
      socket.write(data);
      if (ending === 'destroy') setImmediate(finish);
      if (ending === 'half-close') socket.end();
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (complete(Buffer.concat(chunks))) finish();
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

function complete(buf: Buffer): boolean {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const head = buf.subarray(0, end).toString('latin1');
  if (/^HTTP\/1\.1 1\d\d /.test(head)) return false; // 100 Continue: the real reply follows
  const m = /\r\ncontent-length: *(\d+)/i.exec(head);
  return m !== null && buf.length >= end + 4 + Number(m[1]);
}

function parseReply(buf: Buffer): Reply {
  let text = buf.toString('latin1');
  while (/^HTTP\/1\.1 1\d\d /.test(text)) text = text.slice(text.indexOf('\r\n\r\n') + 4);
  if (text === 'TIMEOUT') return { status: -1, code: undefined, body: '' };
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  return { status: m ? Number(m[1]) : 0, code: xmlOne(body, 'Code'), body };
}

// ------------------------------------------------------------------ signing (the SDK's own signer)

const raw = (d: SourceData): string | Uint8Array =>
  typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
class Sha256 {
  private readonly h;
  constructor(secret?: SourceData) {
    this.h = secret ? createHmac('sha256', raw(secret)) : createHash('sha256');
  }
  update(data: SourceData): void {
    this.h.update(raw(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {}
}

function signer(secret = TEST_CREDENTIALS.secretKey, accessKey = TEST_CREDENTIALS.accessKey): SignatureV4 {
  return new SignatureV4({
    credentials: { accessKeyId: accessKey, secretAccessKey: secret },
    region: 'us-east-1',
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: true,
  });
}

async function signed(
  port: number,
  method: string,
  path: string,
  body: string,
  opts: { secret?: string; accessKey?: string; date?: Date; headers?: Record<string, string> } = {},
): Promise<Record<string, string>> {
  const request = await signer(opts.secret, opts.accessKey).sign(
    { method, protocol: 'http:', hostname: '127.0.0.1', port, path, query: {}, headers: { host: `127.0.0.1:${port}`, ...opts.headers }, body },
    { signingDate: opts.date },
  );
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(request.headers)) headers[k] = String(v);
  return headers;
}

async function presigned(port: number, path: string, date: Date, expiresIn: number): Promise<string> {
  const request = await signer().presign(
    { method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port, path, query: {}, headers: { host: `127.0.0.1:${port}` } },
    { signingDate: date, expiresIn },
  );
  const qs = Object.entries(request.query ?? {})
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  return `${path}?${qs}`;
}

function v2Header(method: string, resource: string, date: string, secret: string): string {
  const signature = createHmac('sha1', secret).update(`${method}\n\n\n${date}\n${resource}`).digest('base64');
  return `AWS ${TEST_CREDENTIALS.accessKey}:${signature}`;
}

// ------------------------------------------------------------------ the table

const OBJ = Buffer.from('0123456789'.repeat(100)); // 'obj', 1000 bytes
const E = (status: number, code?: string) => ({ status, code });

async function buildCases(auth: TestServer, uploadId: string, partEtags: string[]): Promise<Case[]> {
  const A = (c: Omit<Case, 'server'>): Case => ({ ...c, server: 'anon' });
  const S = (c: Omit<Case, 'server'>): Case => ({ ...c, server: 'auth' });
  const billion =
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><Delete><Object><Key>&lol3;</Key></Object></Delete>';
  const external = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>';
  const deep = `<Delete>${'<Object>'.repeat(2000)}${'</Object>'.repeat(2000)}</Delete>`;
  const del = (xml: string | Buffer, headers: Record<string, string> = {}) => http('POST', '/bucket?delete', { 'Content-MD5': md5base64(Buffer.from(xml)), ...headers }, xml);
  const complete = (xml: string) => http('POST', `/bucket/mpu?uploadId=${uploadId}`, {}, xml);
  const parts = (list: Array<[number, string]>) =>
    `<CompleteMultipartUpload>${list.map(([n, e]) => `<Part><PartNumber>${n}</PartNumber><ETag>"${e}"</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
  const longKey = 'k'.repeat(1025);
  const now = new Date();
  const ap = auth.port;
  const goodGet = await signed(ap, 'GET', '/bucket/obj', '');
  const putA = await signed(ap, 'PUT', '/bucket/replayed', 'AAAA');
  const full = (s: number) => (r: Reply) => (r.body.length === s ? undefined : `expected the whole ${s}-byte object, got ${r.body.length} bytes`);
  const date = new Date().toUTCString();

  return [
    // --- request lines and headers
    A({ name: 'garbage request line', data: Buffer.from('GARBAGE\r\n\r\n'), expect: [E(400, 'BadRequest')] }),
    // node:http takes a request line without a version for HTTP/0.9-style and serves it: a read.
    A({ name: 'no HTTP version', data: Buffer.from('GET /bucket/obj\r\n\r\n'), expect: [E(400, 'BadRequest'), E(200)] }),
    A({ name: 'HTTP/9.9', data: Buffer.from('GET /bucket/obj HTTP/9.9\r\nHost: x\r\n\r\n'), expect: [E(400, 'BadRequest'), E(505)] }),
    A({ name: 'unknown method', data: Buffer.from('FROB /bucket/obj HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), expect: [E(400, 'BadRequest'), E(405, 'MethodNotAllowed')] }),
    A({ name: 'header line without a colon', data: http('GET', '/bucket/obj', {}, '', 'NoColonHere\r\n'), expect: [E(400, 'BadRequest')] }),
    A({ name: 'header name with a space', data: http('GET', '/bucket/obj', {}, '', 'Bad Name: v\r\n'), expect: [E(400, 'BadRequest')] }),
    A({ name: 'header value with a NUL byte', data: http('GET', '/bucket/obj', {}, '', 'X-Nul: a\u0000b\r\n'), expect: [E(400, 'BadRequest')] }),
    A({ name: 'a bare LF line ending in the headers', data: Buffer.from('GET /bucket/obj HTTP/1.1\r\nHost: x\nX-A: b\r\nConnection: close\r\n\r\n'), expect: [E(400, 'BadRequest'), E(200)] }),
    A({ name: 'header section over 16 KiB', data: http('GET', '/bucket/obj', { 'X-Big': 'a'.repeat(20_000) }), expect: [E(400, 'RequestHeaderSectionTooLarge')] }),
    A({ name: 'request target over 16 KiB', data: http('GET', `/bucket/${'a'.repeat(20_000)}`), expect: [E(400, 'RequestHeaderSectionTooLarge')] }),
    A({ name: 'Content-Length and chunked together (smuggling)', data: http('PUT', '/bucket/smuggle', { 'Content-Length': 5, 'Transfer-Encoding': 'chunked' }, '0\r\n\r\n'), expect: [E(400, 'BadRequest')] }),
    A({ name: 'two different Content-Lengths', data: http('PUT', '/bucket/smuggle', { 'Content-Length': 5 }, 'hello', 'Content-Length: 6\r\n'), expect: [E(400, 'BadRequest')] }),
    A({ name: 'negative Content-Length', data: http('PUT', '/bucket/neg', { 'Content-Length': -1 }), expect: [E(400, 'BadRequest')] }),
    A({ name: 'Content-Length not a number', data: http('PUT', '/bucket/nan', { 'Content-Length': 'abc' }), expect: [E(400, 'BadRequest')] }),
    A({ name: 'chunk size not hex', data: http('PUT', '/bucket/chunky', { 'Transfer-Encoding': 'chunked' }, 'zz\r\nhello\r\n0\r\n\r\n'), expect: [E(400, 'BadRequest'), E(400, 'IncompleteBody'), E(0)] }),
    A({ name: 'unknown bucket', data: http('GET', '/nobucket/obj'), expect: [E(404, 'NoSuchBucket')] }),

    // --- Content-Length lies and bodies over the limits
    A({ name: 'Content-Length 2 GiB (over the object limit)', data: http('PUT', '/bucket/huge', { 'Content-Length': 2 ** 31 }, 'x'), expect: [E(400, 'EntityTooLarge')] }),
    A({ name: 'Content-Length 10^15 with Expect: 100-continue', data: http('PUT', '/bucket/huge', { 'Content-Length': 10 ** 15, Expect: '100-continue' }), expect: [E(400, 'EntityTooLarge')] }),
    A({ name: 'PUT with neither Content-Length nor chunked', data: Buffer.from('PUT /bucket/nolen HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), expect: [E(411, 'MissingContentLength')] }),
    // The bytes after the announced length are parsed as the next request; node:http answers
    // that garbage (400 BadRequest) at once, ahead of the reply to the PUT, and closes.
    A({ name: 'Content-Length shorter than the body, Content-MD5 of the whole body', data: http('PUT', '/bucket/short', { 'Content-Length': 5, 'Content-MD5': md5base64(Buffer.from('helloworld')) }, 'helloworld'), expect: [E(400, 'BadDigest'), E(400, 'BadRequest')] }),
    A({ name: 'Content-Length shorter than the body, x-amz-content-sha256 of the whole body', data: http('PUT', '/bucket/short', { 'Content-Length': 5, 'x-amz-content-sha256': createHash('sha256').update('helloworld').digest('hex') }, 'helloworld'), expect: [E(400, 'XAmzContentSHA256Mismatch'), E(400, 'BadRequest')] }),
    A({ name: 'Content-Length longer than the body, then a half-close', data: http('PUT', '/bucket/long', { 'Content-Length': 100 }, 'only ten b'), ending: 'half-close', expect: [E(400, 'IncompleteBody'), E(400, 'BadRequest'), E(0)] }),
    A({ name: 'Content-Length longer than the body, then silence (idle timeout)', data: http('PUT', '/bucket/long', { 'Content-Length': 100 }, 'only ten b'), slow: true, expect: [E(400, 'RequestTimeout'), E(0)] }),
    A({ name: 'body stops midway, connection reset', data: http('PUT', '/bucket/reset', { 'Content-Length': 200_000 }, Buffer.alloc(50_000, 1)), ending: 'destroy', expect: [E(0)] }),
    A({ name: 'headers stop midway, connection reset', data: Buffer.from('PUT /bucket/reset HTTP/1.1\r\nHost: x\r\nContent-Le'), ending: 'destroy', expect: [E(0)] }),
    A({ name: 'headers stop midway, then silence (idle timeout)', data: Buffer.from('PUT /bucket/slow HTTP/1.1\r\nHost: x\r\nContent-Le'), slow: true, expect: [E(0), E(400, 'RequestTimeout'), E(408)] }),
    A({ name: 'metadata over the limit', data: http('PUT', '/bucket/meta', { 'x-amz-meta-big': 'v'.repeat(9000) }, 'x'), expect: [E(400, 'MetadataTooLarge')] }),
    A({ name: 'Content-MD5 not base64 of 16 bytes', data: http('PUT', '/bucket/md5', { 'Content-MD5': 'not-an-md5' }, 'x'), expect: [E(400, 'InvalidDigest')] }),
    A({ name: 'Content-MD5 of another body', data: http('PUT', '/bucket/md5', { 'Content-MD5': md5base64(Buffer.from('y')) }, 'x'), expect: [E(400, 'BadDigest')] }),
    A({ name: 'x-amz-content-sha256 of another body', data: http('PUT', '/bucket/sha', { 'x-amz-content-sha256': createHash('sha256').update('y').digest('hex') }, 'x'), expect: [E(400, 'XAmzContentSHA256Mismatch')] }),
    A({ name: 'aws-chunked body that is not aws-chunked', data: http('PUT', '/bucket/awsc', { 'Content-Encoding': 'aws-chunked', 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'x-amz-decoded-content-length': 5 }, 'hello world, not chunks'), expect: [E(400, 'IncompleteBody'), E(400, 'InvalidRequest'), E(400, 'InvalidArgument')] }),
    A({ name: 'DeleteObjects body announced over 2 MiB', data: http('POST', '/bucket?delete', { 'Content-Length': 3 * 1024 * 1024 }, '<Delete>'), expect: [E(400, 'InvalidRequest'), E(400, 'MalformedXML')] }),
    A({ name: 'CompleteMultipartUpload body announced over 2 MiB', data: http('POST', `/bucket/mpu?uploadId=${uploadId}`, { 'Content-Length': 3 * 1024 * 1024 }, '<Complete'), expect: [E(400, 'InvalidRequest'), E(400, 'MalformedXML')] }),

    // --- hostile XML: DeleteObjects
    A({ name: 'DeleteObjects: not XML', data: del('hello'), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: unclosed elements', data: del('<Delete><Object><Key>obj</Key>'), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: wrong root element', data: del('<Remove><Object><Key>obj</Key></Object></Remove>'), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: entity expansion (billion laughs)', data: del(billion), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: external entity', data: del(external), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: 2,000 nested elements', data: del(deep), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: 1001 keys', data: del(`<Delete>${'<Object><Key>obj</Key></Object>'.repeat(1001)}</Delete>`), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'DeleteObjects: invalid UTF-8', data: del(Buffer.concat([Buffer.from('<Delete><Object><Key>'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('</Key></Object></Delete>')])), expect: [E(400, 'MalformedXML'), E(200)] }),
    A({ name: 'DeleteObjects: Content-MD5 of another body', data: del('<Delete><Object><Key>obj</Key></Object></Delete>', { 'Content-MD5': md5base64(Buffer.from('x')) }), expect: [E(400, 'BadDigest')] }),

    // --- hostile XML and bad lists: CompleteMultipartUpload (the upload exists and survives)
    A({ name: 'Complete: not XML', data: complete('}{'), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'Complete: entity expansion', data: complete(billion.replace(/Delete/g, 'CompleteMultipartUpload')), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'Complete: 2,000 nested elements', data: complete(deep.replace(/Delete/g, 'CompleteMultipartUpload')), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'Complete: PartNumber not a number', data: complete('<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>'), expect: [E(400, 'MalformedXML')] }),
    A({ name: 'Complete: no parts', data: complete('<CompleteMultipartUpload></CompleteMultipartUpload>'), expect: [E(400, 'MalformedXML'), E(400, 'InvalidPart')] }),
    A({ name: 'Complete: parts out of order', data: complete(parts([[2, partEtags[1]!], [1, partEtags[0]!]])), expect: [E(400, 'InvalidPartOrder')] }),
    A({ name: 'Complete: a part with the wrong ETag', data: complete(parts([[1, md5hex(Buffer.from('nope'))]])), expect: [E(400, 'InvalidPart')] }),
    A({ name: 'Complete: a part never uploaded', data: complete(parts([[1, partEtags[0]!], [7, partEtags[0]!]])), expect: [E(400, 'InvalidPart')] }),
    A({ name: 'Complete: a first part under 5 MiB', data: complete(parts([[1, partEtags[0]!], [2, partEtags[1]!]])), expect: [E(400, 'EntityTooSmall')] }),
    A({ name: 'Complete: an unknown upload id', data: http('POST', '/bucket/mpu?uploadId=nope', {}, parts([[1, partEtags[0]!]])), expect: [E(404, 'NoSuchUpload')] }),
    A({ name: 'UploadPart: part number 0', data: http('PUT', `/bucket/mpu?partNumber=0&uploadId=${uploadId}`, {}, 'x'), expect: [E(400, 'InvalidArgument')] }),

    // --- ranges
    A({ name: 'range past the end', data: http('GET', '/bucket/obj', { Range: 'bytes=5000-6000' }), expect: [E(416, 'InvalidRange')] }),
    A({ name: 'suffix range of 0 bytes', data: http('GET', '/bucket/obj', { Range: 'bytes=-0' }), expect: [E(416, 'InvalidRange')] }),
    A({ name: 'any range of an empty object', data: http('GET', '/bucket/empty', { Range: 'bytes=0-0' }), expect: [E(416, 'InvalidRange')] }),
    A({ name: 'malformed range (ignored, as S3 does)', data: http('GET', '/bucket/obj', { Range: 'bytes=abc' }), expect: [E(200)], check: full(1000) }),
    A({ name: 'overlapping ranges (ignored, as S3 does)', data: http('GET', '/bucket/obj', { Range: 'bytes=0-10,5-20' }), expect: [E(200)], check: full(1000) }),
    A({ name: 'range with end before start (ignored)', data: http('GET', '/bucket/obj', { Range: 'bytes=10-5' }), expect: [E(200)], check: full(1000) }),
    A({
      name: 'range with a 20-digit end (clamped)',
      data: http('GET', '/bucket/obj', { Range: 'bytes=990-99999999999999999999' }),
      expect: [E(206)],
      check: (r) => (r.body === OBJ.subarray(990).toString('latin1') ? undefined : `wrong bytes: ${JSON.stringify(r.body)}`),
    }),

    // --- keys
    A({ name: 'PUT of a key over 1024 bytes', data: http('PUT', `/bucket/${longKey}`, {}, 'x'), expect: [E(400, 'KeyTooLongError')] }),
    A({ name: 'DELETE of a key over 1024 bytes', data: http('DELETE', `/bucket/${longKey}`), expect: [E(400, 'KeyTooLongError')] }),
    A({ name: 'percent-encoding cut short', data: http('PUT', '/bucket/a%E0%A4%A', {}, 'x'), expect: [E(400, 'InvalidURI'), E(400, 'InvalidArgument')] }),
    A({ name: 'percent-encoded invalid UTF-8', data: http('PUT', '/bucket/a%FF%FE', {}, 'x'), expect: [E(400, 'InvalidURI'), E(400, 'InvalidArgument')] }),
    A({ name: 'percent-encoded overlong UTF-8 (/ as C0 AF)', data: http('GET', '/bucket/..%C0%AF..%C0%AFetc'), expect: [E(400, 'InvalidURI'), E(400, 'InvalidArgument')] }),
    A({ name: 'dot segments are a key, not a path', data: http('GET', '/bucket/../../../etc/passwd'), expect: [E(404, 'NoSuchKey')] }),

    // --- copy sources
    A({ name: 'copy from a key that does not exist', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': '/bucket/nothing-here' }), expect: [E(404, 'NoSuchKey')] }),
    A({ name: 'copy from another bucket', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': '/otherbucket/obj' }), expect: [E(404, 'NoSuchBucket'), E(403, 'AccessDenied')] }),
    A({ name: 'copy source without a key', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': 'bucket' }), expect: [E(400, 'InvalidArgument')] }),
    A({ name: 'copy source with bad percent-encoding', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': '/bucket/%E0%A4%A' }), expect: [E(400, 'InvalidArgument')] }),
    A({ name: 'copy of an object onto itself without REPLACE', data: http('PUT', '/bucket/obj', { 'x-amz-copy-source': '/bucket/obj' }), expect: [E(400, 'InvalidRequest')] }),
    A({ name: 'copy with an unknown metadata directive', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': '/bucket/obj', 'x-amz-metadata-directive': 'MERGE' }), expect: [E(400, 'InvalidArgument')] }),
    A({ name: 'copy with a failing x-amz-copy-source-if-match', data: http('PUT', '/bucket/copy', { 'x-amz-copy-source': '/bucket/obj', 'x-amz-copy-source-if-match': '"nope"' }), expect: [E(412, 'PreconditionFailed')] }),

    // --- signatures (a server with credentials)
    S({ name: 'no signature', data: http('GET', '/bucket/obj'), expect: [E(403, 'AccessDenied')] }),
    S({ name: 'signed with the wrong secret', data: http('GET', '/bucket/obj', await signed(ap, 'GET', '/bucket/obj', '', { secret: 'wrong' })), expect: [E(403, 'SignatureDoesNotMatch')] }),
    S({ name: 'unknown access key', data: http('GET', '/bucket/obj', await signed(ap, 'GET', '/bucket/obj', '', { accessKey: 'AKIDNOBODY' })), expect: [E(403, 'InvalidAccessKeyId')] }),
    S({ name: 'malformed Authorization header', data: http('GET', '/bucket/obj', { Authorization: 'AWS4-HMAC-SHA256 Credential=garbage', 'x-amz-date': goodGet['x-amz-date']!, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }), expect: [E(400, 'AuthorizationHeaderMalformed')] }),
    S({ name: 'a request signed 20 minutes ago, replayed', data: http('GET', '/bucket/obj', await signed(ap, 'GET', '/bucket/obj', '', { date: new Date(now.getTime() - 20 * 60_000) })), expect: [E(403, 'RequestTimeTooSkewed')] }),
    S({ name: "a GET's signature replayed on a PUT", data: http('PUT', '/bucket/obj', goodGet, ''), expect: [E(403, 'SignatureDoesNotMatch')] }),
    S({ name: "a PUT's signature replayed on another key", data: http('PUT', '/bucket/other', putA, 'AAAA'), expect: [E(403, 'SignatureDoesNotMatch')] }),
    S({ name: "a PUT's signature replayed with another body", data: http('PUT', '/bucket/replayed', putA, 'BBBB'), expect: [E(400, 'XAmzContentSHA256Mismatch')] }),
    S({ name: 'an expired presigned URL', data: http('GET', await presigned(ap, '/bucket/obj', new Date(now.getTime() - 3600_000), 60), { Host: `127.0.0.1:${ap}` }), expect: [E(403, 'AccessDenied')] }),
    S({ name: 'V2 signature with the wrong secret', data: http('GET', '/bucket/obj', { Date: date, Authorization: v2Header('GET', '/bucket/obj', date, 'wrong') }), expect: [E(403, 'SignatureDoesNotMatch')] }),
    S({ name: 'a valid GET replayed within 15 minutes (accepted, as by S3; reads only)', data: http('GET', '/bucket/obj', goodGet), expect: [E(200)], check: full(1000) }),
  ];
}

describe('reliability: bad input over raw sockets (table, ~10,000 requests)', function () {
  this.timeout(180_000);
  let anon: TestServer;
  let auth: TestServer;
  let uploadId = '';
  const partEtags: string[] = [];

  before(async () => {
    anon = await startServer({ idleTimeoutMs: IDLE_MS });
    auth = await startServer({ idleTimeoutMs: IDLE_MS, credentials: TEST_CREDENTIALS });
    for (const server of [anon, auth]) {
      await server.store.put('obj', OBJ, { metadata: { 'Content-Type': 'text/plain' } });
      await server.store.put('empty', Buffer.alloc(0));
    }
    const created = await exchange(anon.port, http('POST', '/bucket/mpu?uploads'));
    uploadId = xmlOne(created.body, 'UploadId')!;
    for (const n of [1, 2]) {
      const body = Buffer.alloc(1024, n);
      const reply = await exchange(anon.port, http('PUT', `/bucket/mpu?partNumber=${n}&uploadId=${uploadId}`, {}, body));
      expect(reply.status).to.equal(200);
      partEtags.push(md5hex(body));
    }
  });

  after(async () => {
    await anon?.stop();
    await auth?.stop();
  });

  it('each case gets the S3 error S3 gives, changes nothing, and nothing grows over ~10,000 requests', async () => {
    const cases = await buildCases(auth, uploadId, partEtags);
    const revisions = { anon: anon.store.revision, auth: auth.store.revision };
    const seen = new Map<string, Map<string, number>>(); // case -> "status code" -> count
    const failures = new Map<string, string>();
    const slowest = new Map<string, number>(); // case -> total milliseconds
    const fast = cases.filter((c) => !c.slow);
    const slow = cases.filter((c) => c.slow);
    const rounds = Math.max(2, Math.ceil((TOTAL_REQUESTS - slow.length * 2) / fast.length));
    const warmup = Math.max(2, Math.floor(rounds / 10));
    const gc = await getGc();
    let requests = 0;
    let heapAfterWarmup = 0;
    let handlesAfterWarmup = 0;
    let rssAfterWarmup = 0;

    const runOne = async (c: Case): Promise<void> => {
      const server = c.server === 'anon' ? anon : auth;
      const t0 = performance.now();
      const reply = await exchange(server.port, c.data, c.ending);
      slowest.set(c.name, (slowest.get(c.name) ?? 0) + performance.now() - t0);
      requests++;
      const key = `${reply.status}${reply.code ? ` ${reply.code}` : ''}`;
      const counts = seen.get(c.name) ?? new Map<string, number>();
      counts.set(key, (counts.get(key) ?? 0) + 1);
      seen.set(c.name, counts);
      const ok = c.expect.some((e) => e.status === reply.status && (e.code === undefined || e.code === reply.code));
      const extra = ok ? c.check?.(reply) : undefined;
      if ((!ok || extra) && !failures.has(c.name)) {
        failures.set(c.name, `${c.name}: got ${key}${extra ? ` (${extra})` : ''}, expected ${c.expect.map((e) => `${e.status}${e.code ? ` ${e.code}` : ''}`).join(' or ')}: ${reply.body.slice(0, 160)}`);
      }
    };

    /** Runs rounds [from, to) of the table, PARALLEL requests at a time, without a barrier between rounds. */
    const runRounds = async (from: number, to: number): Promise<void> => {
      const todo: Case[] = [];
      for (let round = from; round < to; round++) todo.push(...(round < 2 ? [...fast, ...slow] : fast));
      let next = 0;
      await Promise.all(
        Array.from({ length: PARALLEL }, async () => {
          for (let i = next++; i < todo.length; i = next++) {
            await runOne(todo[i]!);
            // Nothing changed the store.
            if (anon.store.revision !== revisions.anon || auth.store.revision !== revisions.auth) {
              failures.set(`revision after ${todo[i]!.name}`, `the history changed after "${todo[i]!.name}" (round ${from + Math.floor(i / fast.length)})`);
            }
          }
        }),
      );
    };
    await runRounds(0, warmup);
    await sleep(IDLE_MS * 2); // let idle connections of the slow cases time out
    heapAfterWarmup = await settledHeap(gc);
    handlesAfterWarmup = activeHandles();
    rssAfterWarmup = process.memoryUsage().rss;
    await runRounds(warmup, rounds);
    await sleep(IDLE_MS * 2);
    const heapAtEnd = await settledHeap(gc);
    const handlesAtEnd = activeHandles();
    const rssAtEnd = process.memoryUsage().rss;

    // Every object is as it was.
    for (const server of [anon, auth]) {
      const info = server.store.head('obj')!;
      expect(md5hex(await server.store.read(info))).to.equal(md5hex(OBJ));
      expect(server.store.list({ limit: 100 }).objects.map((o) => o.key)).to.deep.equal(['empty', 'obj']);
    }
    expect(anon.store.head('mpu'), 'no failed completion created the object').to.equal(undefined);
    expect((await exchange(anon.port, http('GET', '/bucket/obj'))).status).to.equal(200);

    const counts = (name: string) => [...(seen.get(name) ?? new Map<string, number>()).values()].reduce((a, b) => a + b, 0);
    const table = cases.map((c) => `        ${c.name}: ${[...(seen.get(c.name) ?? new Map<string, number>())].map(([k, n]) => `${k} x${n}`).join(', ')} (${((slowest.get(c.name) ?? 0) / (counts(c.name) || 1)).toFixed(1)} ms each)`);
    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    console.log(
      `      ${requests} requests over ${rounds} rounds of ${cases.length} cases; heapUsed after gc ${mb(heapAfterWarmup)} -> ${mb(heapAtEnd)}, ` +
        `rss ${mb(rssAfterWarmup)} -> ${mb(rssAtEnd)}, handles ${handlesAfterWarmup} -> ${handlesAtEnd}\n${table.join('\n')}`,
    );
    expect([...failures.values()], [...failures.values()].join('\n')).to.deep.equal([]);
    expect(requests).to.be.at.least(Math.min(TOTAL_REQUESTS, 9000));
    expect(heapAtEnd - heapAfterWarmup, 'heapUsed growth after the warm-up').to.be.lessThan(8 * 1024 * 1024);
    expect(rssAtEnd - rssAfterWarmup, 'RSS growth after the warm-up').to.be.lessThan(96 * 1024 * 1024);
    expect(handlesAtEnd - handlesAfterWarmup, 'open handles').to.be.at.most(2);
  });
});

function activeHandles(): number {
  return (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length;
}
