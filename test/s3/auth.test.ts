import { expect } from 'chai';
import { createHash, createHmac } from 'node:crypto';
import fs from 'node:fs';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SourceData } from '@smithy/types';
import type { AuthOptions, AuthResult, Credentials } from '../../src/lib/s3/auth/authenticate.js';
import { authenticateUrl as authenticate, type UrlAuthInput as AuthInput } from './auth-input.js';
import { canonicalizedResourceV2, signV2, stringToSignV2 } from '../../src/lib/s3/auth/signature-v2.js';
import { canonicalQuery, canonicalUri, parseV4Authorization, uriEncode } from '../../src/lib/s3/auth/signature-v4.js';
import { S3Error } from '../../src/lib/s3/errors.js';
import { fixturesDir } from '../helpers/paths.js';

// Recorded S3QL cycles, copied into the repository with the other fixtures.
const transcriptsDir = path.join(fixturesDir, 's3ql-transcripts');

/**
 * The secrets of the access keys in the transcripts. The README names testkey/testsecret, which
 * is what the V2 files use; the V4 file was recorded against s3rver and is signed with s3rver's
 * default credentials, S3RVER/S3RVER.
 */
const TRANSCRIPT_SECRETS: Record<string, string> = { testkey: 'testsecret', S3RVER: 'S3RVER' };

interface Recorded extends AuthInput {
  file: string;
  number: string;
  time: Date;
  accessKey: string;
  version: 2 | 4;
}

function parseTranscript(file: string): Recorded[] {
  const out: Recorded[] = [];
  let number = '';
  let time = new Date(0);
  let current: Recorded | undefined;
  for (const line of fs.readFileSync(path.join(transcriptsDir, file), 'utf8').split('\n')) {
    const head = /^=== (#\d+) conn=\d+ t=([\d.]+)/.exec(line);
    if (head) {
      number = head[1]!;
      time = new Date(Number(head[2]) * 1000);
      current = undefined;
      continue;
    }
    if (!line.startsWith('> ')) continue;
    if (current === undefined) {
      const [method, url] = line.slice(2).split(' ');
      current = { file, number, time, method: method!, url: url!, headers: {}, accessKey: '', version: 2 };
      out.push(current);
      continue;
    }
    const colon = line.indexOf(':');
    const name = line.slice(2, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    const previous = current.headers[name];
    current.headers[name] = previous === undefined ? value : `${String(previous)}, ${value}`;
  }
  for (const r of out) {
    const auth = String(r.headers['authorization']);
    const v4 = /Credential=([^/]+)\//.exec(auth);
    const v2 = /^AWS ([^:]+):/.exec(auth);
    r.version = v4 ? 4 : 2;
    r.accessKey = (v4 ?? v2)![1]!;
  }
  return out;
}

function credsFor(r: Recorded): Credentials {
  return { accessKey: r.accessKey, secretKey: TRANSCRIPT_SECRETS[r.accessKey]! };
}

function expectS3Error(fn: () => unknown, code: string, message?: RegExp): S3Error {
  try {
    fn();
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(S3Error);
    const e = err as S3Error;
    expect(e.code, `${e.code}: ${e.message}`).to.equal(code);
    if (message) expect(e.message).to.match(message);
    return e;
  }
  expect.fail(`expected ${code}, but the request was accepted`);
}

function withHeaders(input: AuthInput, changes: Record<string, string | undefined>): AuthInput {
  const headers: IncomingHttpHeaders = { ...input.headers };
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) delete headers[k];
    else headers[k] = v;
  }
  return { ...input, headers };
}

/** Changes one character of the path (the last character before the query). */
function alterPath(url: string): string {
  const q = url.indexOf('?');
  const p = q < 0 ? url : url.slice(0, q);
  const rest = q < 0 ? '' : url.slice(q);
  const last = p[p.length - 1] === 'x' ? 'y' : 'x';
  return p.slice(0, -1) + last + rest;
}

const SKIP: AuthOptions = { skipClockCheck: true };

describe('s3 auth: encoding helpers', () => {
  it('UriEncodes like AWS: unreserved kept, the rest %XX uppercase', () => {
    expect(uriEncode("a b+c%d~e!f'g(h)i*j/k", true)).to.equal('a%20b%2Bc%25d~e%21f%27g%28h%29i%2Aj%2Fk');
    expect(uriEncode('ü😀', false)).to.equal('%C3%BC%F0%9F%98%80');
    expect(uriEncode('a/b', false)).to.equal('a/b');
  });

  it('normalises the path by decoding and re-encoding each segment', () => {
    expect(canonicalUri('/b/a%7eb~c%7E')).to.equal('/b/a~b~c~');
    expect(canonicalUri('/b/it!s%21')).to.equal('/b/it%21s%21');
    expect(canonicalUri('/b/a%2Fb/c')).to.equal('/b/a%2Fb/c'); // an encoded slash stays one
    expect(canonicalUri('/b/%c3%bc')).to.equal('/b/%C3%BC');
    expect(canonicalUri('/b/100%')).to.equal('/b/100%25'); // a stray % is a literal %
    expect(canonicalUri('/b/%FF')).to.equal('/b/%FF'); // not UTF-8, kept byte for byte
    expect(canonicalUri('/b/a+b')).to.equal('/b/a%2Bb'); // '+' in a path is a plus
  });

  it('sorts and encodes the canonical query', () => {
    expect(canonicalQuery('prefix=a%20b%2F&max-keys=1&delete&b=2&b=1')).to.equal('b=1&b=2&delete=&max-keys=1&prefix=a%20b%2F');
    expect(canonicalQuery('X-Amz-Signature=abc&a=%7e', 'X-Amz-Signature')).to.equal('a=~');
  });

  it('builds the V2 canonicalized resource from the signed sub-resources only', () => {
    expect(canonicalizedResourceV2('/bucket/', 'prefix=fs%2F&max-keys=1')).to.equal('/bucket/');
    expect(canonicalizedResourceV2('/bucket/', 'delete')).to.equal('/bucket/?delete');
    expect(canonicalizedResourceV2('/b/k%20x', 'uploadId=u%2B1&partNumber=2&x-id=UploadPart')).to.equal('/b/k%20x?partNumber=2&uploadId=u+1');
    expect(canonicalizedResourceV2('/b/k', 'versionId=&acl')).to.equal('/b/k?acl&versionId=');
  });

  it('parses a V4 Authorization header with or without spaces after the commas', () => {
    const sig = 'a'.repeat(64);
    for (const sep of [',', ', ']) {
      const p = parseV4Authorization(`AWS4-HMAC-SHA256 Credential=AK/20260101/eu-central-1/s3/aws4_request${sep}SignedHeaders=host;x-amz-date${sep}Signature=${sig}`);
      expect(p.credential).to.include({ accessKey: 'AK', date: '20260101', region: 'eu-central-1', scope: '20260101/eu-central-1/s3/aws4_request' });
      expect(p.signedHeaders).to.deep.equal(['host', 'x-amz-date']);
      expect(p.signature).to.equal(sig);
    }
  });
});

describe('s3 auth: recorded S3QL requests', () => {
  const files = fs.readdirSync(transcriptsDir).filter((f) => f.endsWith('.txt')).sort();
  const requests = files.flatMap(parseTranscript);
  const label = (r: Recorded) => `${r.file} ${r.number} ${r.method} ${r.url}`;

  it('has both V2 and V4 requests to check', () => {
    expect(files.length).to.be.at.least(3);
    expect(requests.length).to.be.greaterThan(250);
    expect(requests.filter((r) => r.version === 2).length).to.be.greaterThan(150);
    expect(requests.filter((r) => r.version === 4).length).to.be.greaterThan(80);
  });

  it('authenticates every recorded request', () => {
    const kinds: Record<string, number> = {};
    for (const r of requests) {
      let result: AuthResult;
      try {
        result = authenticate(r, credsFor(r), SKIP);
      } catch (err) {
        throw new Error(`${label(r)}: ${String(err)} ${JSON.stringify((err as S3Error).details)}`);
      }
      kinds[result.kind] = (kinds[result.kind] ?? 0) + 1;
      if (result.kind === 'v4') expect(result.payloadHash).to.equal('UNSIGNED-PAYLOAD');
    }
    expect(kinds['v2']! + kinds['v4']!).to.equal(requests.length);
  });

  it('accepts them within 15 minutes of their recording time, and not beyond', () => {
    for (const r of requests) {
      authenticate(r, credsFor(r), { now: new Date(r.time.getTime() + 14 * 60_000) });
      authenticate(r, credsFor(r), { now: new Date(r.time.getTime() - 14 * 60_000) });
      expectS3Error(() => authenticate(r, credsFor(r), { now: new Date(r.time.getTime() + 16 * 60_000) }), 'RequestTimeTooSkewed');
      expectS3Error(() => authenticate(r, credsFor(r), { now: new Date(r.time.getTime() - 16 * 60_000) }), 'RequestTimeTooSkewed');
    }
  });

  it('rejects every request with a wrong secret', () => {
    for (const r of requests) {
      expectS3Error(() => authenticate(r, { accessKey: r.accessKey, secretKey: TRANSCRIPT_SECRETS[r.accessKey] + 'x' }, SKIP), 'SignatureDoesNotMatch');
    }
  });

  it('rejects every request from an unknown access key', () => {
    for (const r of requests) {
      expectS3Error(() => authenticate(r, { accessKey: 'someone-else', secretKey: 'x' }, SKIP), 'InvalidAccessKeyId');
    }
  });

  it('rejects every request whose path was altered', () => {
    for (const r of requests) {
      expectS3Error(() => authenticate({ ...r, url: alterPath(r.url) }, credsFor(r), SKIP), 'SignatureDoesNotMatch');
    }
  });

  it('rejects every request whose method was altered', () => {
    for (const r of requests) {
      expectS3Error(() => authenticate({ ...r, method: r.method === 'GET' ? 'DELETE' : 'GET' }, credsFor(r), SKIP), 'SignatureDoesNotMatch');
    }
  });

  it('rejects every request in which any one signed header was altered', () => {
    let checked = 0;
    for (const r of requests) {
      let names: string[];
      if (r.version === 4) {
        names = parseV4Authorization(String(r.headers['authorization'])).signedHeaders;
      } else {
        // V2 signs Content-MD5, Content-Type, Date and the x-amz-* headers.
        names = Object.keys(r.headers).filter((n) => n === 'content-md5' || n === 'content-type' || n === 'date' || n.startsWith('x-amz-'));
      }
      expect(names.length, label(r)).to.be.greaterThan(0);
      for (const name of names) {
        const value = String(r.headers[name]);
        let altered: string;
        if (name === 'x-amz-date') altered = value.replace(/(\d)Z$/, (_, d: string) => `${(Number(d) + 1) % 10}Z`);
        else if (name === 'date') altered = value.replace(/:(\d\d) GMT$/, (_, s: string) => `:${String((Number(s) + 1) % 60).padStart(2, '0')} GMT`);
        else if (name === 'x-amz-content-sha256') altered = createHash('sha256').update('').digest('hex');
        else altered = value + 'x';
        expect(altered, `${label(r)} ${name}`).to.not.equal(value);
        expectS3Error(() => authenticate(withHeaders(r, { [name]: altered }), credsFor(r), SKIP), 'SignatureDoesNotMatch');
        checked++;
      }
    }
    expect(checked).to.be.greaterThan(1000);
  });

  it('rejects V4 requests whose query was altered (V2 signs only sub-resources)', () => {
    const withQuery = requests.filter((r) => r.url.includes('?'));
    expect(withQuery.length).to.be.greaterThan(30);
    for (const r of withQuery) {
      const url = r.url.includes('max-keys=') ? r.url.replace(/max-keys=(\d+)/, 'max-keys=$12') : r.url + '&x=1';
      if (r.version === 4) {
        expectS3Error(() => authenticate({ ...r, url }, credsFor(r), SKIP), 'SignatureDoesNotMatch');
      } else {
        // V2 leaves prefix/max-keys out of the signature, so this still passes.
        authenticate({ ...r, url }, credsFor(r), SKIP);
      }
    }
    // Removing a signed sub-resource (?delete) breaks the signature even in V2.
    const deletes = requests.filter((r) => r.url.endsWith('?delete'));
    expect(deletes.length).to.be.greaterThan(0);
    for (const r of deletes) {
      expectS3Error(() => authenticate({ ...r, url: r.url.replace('?delete', '') }, credsFor(r), SKIP), 'SignatureDoesNotMatch');
    }
  });

  it('rejects a V4 request carrying an x-amz-* header that was not signed', () => {
    const r = requests.find((x) => x.version === 4)!;
    const e = expectS3Error(() => authenticate(withHeaders(r, { 'x-amz-meta-extra': '1' }), credsFor(r), SKIP), 'AccessDenied', /not signed/);
    expect(e.details['HeadersNotSigned']).to.equal('x-amz-meta-extra');
  });

  it('accepts anything when no credentials are configured', () => {
    for (const r of requests.slice(0, 5)) {
      expect(authenticate({ ...r, url: alterPath(r.url) }, undefined)).to.deep.equal({ kind: 'anonymous' });
    }
    expect(authenticate({ method: 'GET', url: '/', headers: {} }, undefined)).to.deep.equal({ kind: 'anonymous' });
  });
});

describe('s3 auth: malformed and unsigned requests', () => {
  const creds = { accessKey: 'AK', secretKey: 'SK' };
  const base = { method: 'GET', url: '/b/k', headers: { host: 'h', 'x-amz-date': '20261124T000000Z', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } };
  const sig = '0'.repeat(64);
  const v4 = (auth: string, extra: Record<string, string | undefined> = {}) => withHeaders(base, { authorization: auth, ...extra });

  it('denies a request without any signature', () => {
    expectS3Error(() => authenticate({ method: 'GET', url: '/b/k', headers: { host: 'h' } }, creds), 'AccessDenied');
  });

  it('reports malformed Authorization headers', () => {
    expectS3Error(() => authenticate(v4('AWS4-HMAC-SHA256 Credential=AK'), creds, SKIP), 'AuthorizationHeaderMalformed');
    expectS3Error(() => authenticate(v4(`AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/s3/aws4_request, Signature=${sig}`), creds, SKIP), 'AuthorizationHeaderMalformed', /SignedHeaders/);
    expectS3Error(() => authenticate(v4(`AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=${sig}`), creds, SKIP), 'AuthorizationHeaderMalformed', /service/);
    expectS3Error(() => authenticate(v4(`AWS4-HMAC-SHA256 Credential=AK/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=${sig}`), creds, SKIP), 'AuthorizationHeaderMalformed', /date/i);
    expectS3Error(() => authenticate(v4('AWS AK'), creds, SKIP), 'InvalidArgument');
    expectS3Error(() => authenticate(v4('Bearer token'), creds, SKIP), 'InvalidArgument', /Unsupported/);
  });

  it('requires x-amz-content-sha256, a valid date and a signed host', () => {
    const auth = `AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${sig}`;
    expectS3Error(() => authenticate(v4(auth, { 'x-amz-content-sha256': undefined }), creds, SKIP), 'InvalidRequest', /x-amz-content-sha256/);
    expectS3Error(() => authenticate(v4(auth, { 'x-amz-content-sha256': 'nonsense' }), creds, SKIP), 'InvalidArgument');
    expectS3Error(() => authenticate(v4(auth, { 'x-amz-date': '2026-11-24T00:00:00Z' }), creds, SKIP), 'AccessDenied', /date/);
    const noHost = auth.replace('SignedHeaders=host;', 'SignedHeaders=');
    expectS3Error(() => authenticate(v4(noHost), creds, SKIP), 'AccessDenied', /host/);
    expectS3Error(() => authenticate(withHeaders(base, { authorization: 'AWS AK:abc=' }), creds, SKIP), 'AccessDenied', /Date/);
  });

  it('allows only one authentication mechanism', () => {
    const input = { method: 'GET', url: '/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256', headers: { host: 'h', authorization: 'AWS AK:abc=' } };
    expectS3Error(() => authenticate(input, creds, SKIP), 'InvalidArgument', /Only one auth mechanism/);
  });

  it('reports missing presigned parameters', () => {
    expectS3Error(() => authenticate({ method: 'GET', url: '/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256', headers: { host: 'h' } }, creds, SKIP), 'AuthorizationQueryParametersError');
    expectS3Error(() => authenticate({ method: 'GET', url: '/b/k?X-Amz-Algorithm=HMAC', headers: { host: 'h' } }, creds, SKIP), 'AuthorizationQueryParametersError');
    expectS3Error(() => authenticate({ method: 'GET', url: '/b/k?Signature=abc', headers: { host: 'h' } }, creds, SKIP), 'AccessDenied', /AWSAccessKeyId/);
  });
});

describe('s3 auth: V2 query-string form', () => {
  const creds = { accessKey: 'AK', secretKey: 'SK' };
  const expires = '1795563054';
  const now = new Date(Number(expires) * 1000 - 60_000);

  function presignV2(method: string, rawPath: string, rawQuery: string): string {
    const sts = stringToSignV2({ method, rawPath, rawQuery, headers: {}, expires });
    const signature = signV2('SK', sts);
    const auth = `AWSAccessKeyId=AK&Expires=${expires}&Signature=${encodeURIComponent(signature)}`;
    return `${rawPath}?${rawQuery ? rawQuery + '&' : ''}${auth}`;
  }

  it('accepts a valid URL until it expires', () => {
    const url = presignV2('GET', '/b/a%20key', 'response-content-type=text%2Fplain&versionId=3');
    expect(authenticate({ method: 'GET', url, headers: { host: 'h' } }, creds, { now })).to.deep.equal({ kind: 'v2' });
    expectS3Error(() => authenticate({ method: 'GET', url, headers: { host: 'h' } }, creds, { now: new Date(Number(expires) * 1000 + 1000) }), 'AccessDenied', /^Request has expired$/);
    expectS3Error(() => authenticate({ method: 'GET', url: url.replace('versionId=3', 'versionId=4'), headers: { host: 'h' } }, creds, { now }), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate({ method: 'GET', url: url.replace(`Expires=${expires}`, `Expires=${Number(expires) + 1}`), headers: { host: 'h' } }, creds, { now }), 'SignatureDoesNotMatch');
  });

  it('puts the bucket of a virtual-hosted-style request back into the resource', () => {
    const headers: IncomingHttpHeaders = { host: 'bkt.s3.example', date: new Date(now).toUTCString() };
    const signature = signV2('SK', stringToSignV2({ method: 'GET', rawPath: '/k', rawQuery: 'acl', headers, pathPrefix: '/bkt' }));
    const input = { method: 'GET', url: '/k?acl', headers: { ...headers, authorization: `AWS AK:${signature}` } };
    expect(authenticate(input, creds, { now, virtualHostBucket: 'bkt' }).kind).to.equal('v2');
    expectS3Error(() => authenticate(input, creds, { now }), 'SignatureDoesNotMatch');
  });

  it('signs every S3 sub-resource and response-* override: none can be added to a signed request unnoticed', () => {
    const subresources = [
      'acl', 'accelerate', 'analytics', 'cors', 'delete', 'encryption', 'inventory', 'legal-hold', 'lifecycle', 'location',
      'logging', 'metrics', 'notification', 'object-lock', 'partNumber', 'policy', 'policyStatus', 'publicAccessBlock',
      'replication', 'requestPayment', 'restore', 'retention', 'select', 'tagging', 'torrent', 'uploadId', 'uploads',
      'versionId', 'versioning', 'versions', 'website', 'intelligent-tiering', 'ownershipControls',
      'response-content-type', 'response-content-language', 'response-expires', 'response-cache-control',
      'response-content-disposition', 'response-content-encoding',
    ];
    for (const name of subresources) {
      expect(canonicalizedResourceV2('/b/k', name), name).to.equal(`/b/k?${name}`);
      expect(canonicalizedResourceV2('/b/k', `${name}=1&prefix=p`), name).to.equal(`/b/k?${name}=1`);
      const signed = presignV2('GET', '/b/', '');
      expectS3Error(() => authenticate({ method: 'GET', url: `${signed}&${name}`, headers: {} }, creds, { now }), 'SignatureDoesNotMatch');
      expect(authenticate({ method: 'GET', url: presignV2('GET', '/b/', name), headers: {} }, creds, { now }).kind, name).to.equal('v2');
    }
  });

  it('takes a space in the signature for an unencoded plus', () => {
    // Find a signature with a '+' and send it unencoded, as some clients do.
    for (let i = 0; i < 200; i++) {
      const rawPath = `/b/k${i}`;
      const signature = signV2('SK', stringToSignV2({ method: 'GET', rawPath, rawQuery: '', headers: {}, expires }));
      if (!signature.includes('+')) continue;
      const url = `${rawPath}?AWSAccessKeyId=AK&Expires=${expires}&Signature=${signature.replace(/\//g, '%2F').replace(/=/g, '%3D')}`;
      expect(authenticate({ method: 'GET', url, headers: {} }, creds, { now }).kind).to.equal('v2');
      return;
    }
    expect.fail('no signature with a plus found');
  });
});

// ---------------------------------------------------------------------------------------------
// Requests signed by the AWS SDK

interface Captured extends AuthInput {
  body: Buffer;
}

const ODD_KEYS = ['a b/ü+%~!.txt', "it's (1)*[x].txt", 'plus+and space', '%41%2F', 'tilde~/dir//x', 'emoji 😀', 'x=y&z?w#v', 'semi;colon,comma:at@'];

describe('s3 auth: requests signed by the AWS SDK', function () {
  this.timeout(20_000);
  const creds = { accessKey: 'AKIDEXAMPLE', secretKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
  const captured: Captured[] = [];
  let server: http.Server;
  let client: S3Client;
  let port = 0;

  before(async () => {
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        captured.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) });
        if (req.method === 'GET' && req.url!.includes('list-type=2')) {
          res.writeHead(200, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bkt</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>');
        } else if (req.method === 'POST') {
          res.writeHead(200, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>');
        } else {
          res.writeHead(200, { etag: '"x"', 'content-length': '0' });
          res.end();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    client = new S3Client({
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: creds.accessKey, secretAccessKey: creds.secretKey },
      maxAttempts: 1,
    });
    const send = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch {
        // What matters is the captured request.
      }
    };
    for (const Key of ODD_KEYS) {
      await send(client.send(new PutObjectCommand({ Bucket: 'bkt', Key, Body: `body of ${Key}`, Metadata: { note: '  two   spaces  ', greeting: 'grüße' }, ContentType: 'text/plain' })));
      await send(client.send(new GetObjectCommand({ Bucket: 'bkt', Key, Range: 'bytes=0-3', ResponseContentDisposition: 'attachment; filename="ü x.txt"' })));
      await send(client.send(new HeadObjectCommand({ Bucket: 'bkt', Key })));
      await send(client.send(new ListObjectsV2Command({ Bucket: 'bkt', Prefix: Key, Delimiter: '/', StartAfter: Key })));
    }
    await send(client.send(new UploadPartCommand({ Bucket: 'bkt', Key: 'multi part', UploadId: 'u/+=1', PartNumber: 3, Body: 'part' })));
    await send(client.send(new DeleteObjectsCommand({ Bucket: 'bkt', Delete: { Objects: ODD_KEYS.map((Key) => ({ Key })) } })));
    await send(client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'streamed ü', Body: Readable.from([Buffer.from('abc'), Buffer.from('defg')]), ContentLength: 7 })));
  });

  after(async () => {
    client?.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('captured what the SDK sent', () => {
    expect(captured.length).to.be.at.least(ODD_KEYS.length * 4 + 3);
    expect(captured.some((c) => c.url.includes('%C3%BC'))).to.equal(true);
    expect(captured.some((c) => c.headers['x-amz-content-sha256'] === 'STREAMING-UNSIGNED-PAYLOAD-TRAILER')).to.equal(true);
  });

  it('verifies every captured request, with the real clock', () => {
    for (const c of captured) {
      let result: AuthResult;
      try {
        result = authenticate(c, creds);
      } catch (err) {
        throw new Error(`${c.method} ${c.url}: ${String(err)} ${JSON.stringify((err as S3Error).details)}`);
      }
      expect(result.kind).to.equal('v4');
      if (result.kind !== 'v4') continue;
      expect(result.streaming).to.equal(undefined);
      // A hex payload hash is the body's, for the caller to check.
      if (/^[0-9a-f]{64}$/.test(result.payloadHash)) expect(result.payloadHash).to.equal(createHash('sha256').update(c.body).digest('hex'));
    }
  });

  it('accepts the same path encoded differently, but not a different path', () => {
    const put = captured.find((c) => c.method === 'PUT' && c.url.includes('%21'))!;
    expect(authenticate({ ...put, url: put.url.replace('%21', '!').replace('~', '%7e') }, creds).kind).to.equal('v4');
    expectS3Error(() => authenticate({ ...put, url: put.url.replace('%20', '+') }, creds), 'SignatureDoesNotMatch');
    // '+' in a path is a literal plus (as the SDKs encode it), so this is the same key.
    expect(authenticate({ ...put, url: put.url.replace('%2B', '+') }, creds).kind).to.equal('v4');
    // An encoded slash is not a slash: a%2Fb is one segment, a/b two.
    expect(put.url).to.include('/bkt/a%20b/');
    expectS3Error(() => authenticate({ ...put, url: put.url.replace('/bkt/a%20b/', '/bkt/a%20b%2F') }, creds), 'SignatureDoesNotMatch');
    // In the query, '/' and '%2F' are the same.
    const part = captured.find((c) => c.url.includes('uploadId=u%2F'))!;
    expect(authenticate({ ...part, url: part.url.replace('uploadId=u%2F', 'uploadId=u/') }, creds).kind).to.equal('v4');
  });

  it('rejects every captured request that was tampered with', () => {
    for (const c of captured) {
      expectS3Error(() => authenticate(c, { ...creds, secretKey: creds.secretKey.slice(1) }), 'SignatureDoesNotMatch');
      // A changed path is refused: by the signature, or before it when the change leaves the
      // path badly percent-encoded (the one parser both authentication and routing use).
      const altered = authenticate.bind(null, { ...c, url: alterPath(c.url) }, creds);
      const code = (() => {
        try {
          altered();
        } catch (err) {
          return (err as S3Error).code;
        }
        return 'accepted';
      })();
      expect(['SignatureDoesNotMatch', 'InvalidArgument'], c.url).to.include(code);
      expectS3Error(() => authenticate({ ...c, url: c.url + (c.url.includes('?') ? '&' : '?') + 'extra=1' }, creds), 'SignatureDoesNotMatch');
      expectS3Error(() => authenticate(withHeaders(c, { host: `127.0.0.1:${port + 1}` }), creds), 'SignatureDoesNotMatch');
      const { signedHeaders } = parseV4Authorization(String(c.headers['authorization']));
      for (const name of signedHeaders.filter((n) => n.startsWith('x-amz-meta-') || n === 'range' || n === 'content-type' || n === 'x-amz-decoded-content-length')) {
        expectS3Error(() => authenticate(withHeaders(c, { [name]: String(c.headers[name]) + '1' }), creds), 'SignatureDoesNotMatch');
      }
    }
  });

  // Presigned URLs, from the SDK's own signer (the S3 presigner package is not installed: this
  // does what it does, signing `UNSIGNED-PAYLOAD` and keeping x-amz-content-sha256 out).
  const bytes = (d: SourceData): string | Uint8Array =>
    typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  class Sha256 {
    private readonly h;
    constructor(secret?: SourceData) {
      this.h = secret ? createHmac('sha256', bytes(secret)) : createHash('sha256');
    }
    update(data: SourceData): void {
      this.h.update(bytes(data));
    }
    async digest(): Promise<Uint8Array> {
      return new Uint8Array(this.h.digest());
    }
    reset(): void {}
  }

  async function presign(method: string, key: string, query: Record<string, string>, opts: { expiresIn?: number; region?: string; signingDate?: Date; headers?: Record<string, string> } = {}): Promise<AuthInput> {
    const signer = new SignatureV4({
      credentials: { accessKeyId: creds.accessKey, secretAccessKey: creds.secretKey },
      region: opts.region ?? 'us-east-1',
      service: 's3',
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const rawPath = '/bkt/' + key.split('/').map((s) => uriEncode(s)).join('/');
    const headers: Record<string, string> = { host: `127.0.0.1:${port}`, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...opts.headers };
    const signed = await signer.presign(
      { method, protocol: 'http:', hostname: '127.0.0.1', port, path: rawPath, query: { ...query }, headers },
      { expiresIn: opts.expiresIn ?? 900, signingDate: opts.signingDate, unhoistableHeaders: new Set(['x-amz-content-sha256']), unsignableHeaders: new Set(['x-amz-content-sha256']) },
    );
    const qs = Object.entries(signed.query ?? {})
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    const sent: IncomingHttpHeaders = { ...signed.headers };
    delete sent['x-amz-content-sha256'];
    return { method, url: `${rawPath}?${qs}`, headers: sent };
  }

  it('verifies presigned URLs for odd keys, query parameters and any region', async () => {
    for (const key of ODD_KEYS) {
      for (const region of ['us-east-1', 'eu-west-3']) {
        const get = await presign('GET', key, { 'response-content-disposition': 'attachment; filename="ü.txt"', versionId: 'a/b+c' }, { region });
        expect(authenticate(get, creds)).to.deep.equal({ kind: 'v4-presigned' });
        // The signer moves x-amz-* headers into the query and signs the other headers.
        const put = await presign('PUT', key, {}, { region, headers: { 'x-amz-meta-owner': 'me', 'content-type': 'text/plain' } });
        expect(put.url).to.include('X-Amz-SignedHeaders=content-type%3Bhost').and.to.include('x-amz-meta-owner=me');
        expect(authenticate(put, creds)).to.deep.equal({ kind: 'v4-presigned' });
        expectS3Error(() => authenticate(withHeaders(put, { 'content-type': 'text/html' }), creds), 'SignatureDoesNotMatch');
        expectS3Error(() => authenticate({ ...put, url: put.url.replace('x-amz-meta-owner=me', 'x-amz-meta-owner=you') }, creds), 'SignatureDoesNotMatch');
      }
    }
  });

  it('rejects tampered and expired presigned URLs', async () => {
    const input = await presign('GET', 'a b/ü+%~!.txt', { versionId: '7' }, { expiresIn: 60 });
    expectS3Error(() => authenticate({ ...input, url: input.url.replace('versionId=7', 'versionId=8') }, creds), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate({ ...input, url: alterPath(input.url) }, creds), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate({ ...input, method: 'PUT' }, creds), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate({ ...input, url: input.url.replace('X-Amz-Expires=60', 'X-Amz-Expires=61') }, creds), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate(input, { ...creds, secretKey: 'other' }), 'SignatureDoesNotMatch');
    expectS3Error(() => authenticate(withHeaders(input, { 'x-amz-acl': 'public-read' }), creds), 'AccessDenied', /not signed/);
    expectS3Error(() => authenticate(input, creds, { now: new Date(Date.now() + 61_000) }), 'AccessDenied', /^Request has expired$/);
    expect(authenticate(input, creds, { now: new Date(Date.now() + 61_000), skipClockCheck: true }).kind).to.equal('v4-presigned');

    const old = await presign('GET', 'k', {}, { expiresIn: 3600, signingDate: new Date(Date.now() - 2 * 3600_000) });
    expectS3Error(() => authenticate(old, creds), 'AccessDenied', /^Request has expired$/);
    const week = await presign('GET', 'k', {}, { expiresIn: 604800 });
    expect(authenticate(week, creds).kind).to.equal('v4-presigned');
    const tooLong = { ...week, url: week.url.replace('X-Amz-Expires=604800', 'X-Amz-Expires=604801') };
    expectS3Error(() => authenticate(tooLong, creds), 'AuthorizationQueryParametersError');
  });
});
