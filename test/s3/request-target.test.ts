/**
 * A signature covers exactly what the router acts on: a signed request replayed with a `#...`
 * tail on its target (which a parser might drop for one purpose and keep for another) is
 * refused before anything else, for V2 and V4, header-signed and presigned, and writes nothing.
 */
import { createHash, createHmac } from 'node:crypto';
import { expect } from 'chai';
import { rawExchange, statusOf } from '../helpers/http.js';
import { TEST_CREDENTIALS, startServer, type TestServer } from '../helpers/server.js';

const { accessKey, secretKey } = TEST_CREDENTIALS;
const sha256 = (b: string) => createHash('sha256').update(b).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
const BODY = 'signed body';

function v4Key(day: string): Buffer {
  let key = hmac(`AWS4${secretKey}`, day);
  for (const part of ['us-east-1', 's3', 'aws4_request']) key = hmac(key, part);
  return key;
}

function amzNow(): { amzDate: string; day: string } {
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  return { amzDate, day: amzDate.slice(0, 8) };
}

/** A PUT of `path`, signed four ways: the request line's target and the headers to send. */
function signedPuts(port: number, path: string): Array<{ name: string; target: string; headers: Record<string, string> }> {
  const host = `127.0.0.1:${port}`;
  const { amzDate, day } = amzNow();
  const scope = `${day}/us-east-1/s3/aws4_request`;
  // V4, Authorization header.
  const canonical = ['PUT', path, '', `host:${host}`, 'x-amz-content-sha256:UNSIGNED-PAYLOAD', `x-amz-date:${amzDate}`, '', 'host;x-amz-content-sha256;x-amz-date', 'UNSIGNED-PAYLOAD'].join('\n');
  const v4sig = createHmac('sha256', v4Key(day)).update(['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n')).digest('hex');
  const v4 = {
    'x-amz-date': amzDate,
    'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    Authorization: `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${v4sig}`,
  };
  // V4 presigned.
  const params = `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${encodeURIComponent(`${accessKey}/${scope}`)}&X-Amz-Date=${amzDate}&X-Amz-Expires=300&X-Amz-SignedHeaders=host`;
  const preCanonical = ['PUT', path, params, `host:${host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const preSig = createHmac('sha256', v4Key(day)).update(['AWS4-HMAC-SHA256', amzDate, scope, sha256(preCanonical)].join('\n')).digest('hex');
  // V2, Authorization header and query string.
  const date = new Date().toUTCString();
  const v2sig = createHmac('sha1', secretKey).update(`PUT\n\n\n${date}\n${path}`).digest('base64');
  const expires = String(Math.floor(Date.now() / 1000) + 300);
  const v2qsig = createHmac('sha1', secretKey).update(`PUT\n\n\n${expires}\n${path}`).digest('base64');
  return [
    { name: 'V4 header', target: path, headers: v4 },
    { name: 'V4 presigned', target: `${path}?${params}&X-Amz-Signature=${preSig}`, headers: {} },
    { name: 'V2 header', target: path, headers: { Date: date, Authorization: `AWS ${accessKey}:${v2sig}` } },
    { name: 'V2 presigned', target: `${path}?AWSAccessKeyId=${accessKey}&Expires=${expires}&Signature=${encodeURIComponent(v2qsig)}`, headers: {} },
  ];
}

function put(port: number, target: string, headers: Record<string, string>): Promise<string> {
  const lines = [`PUT ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, `Content-Length: ${BODY.length}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return rawExchange(port, `${lines.join('\r\n')}\r\n\r\n${BODY}`);
}

describe('s3: one request target for signing and routing', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer({ credentials: TEST_CREDENTIALS });
  });
  after(async () => {
    await t.stop();
  });

  const ways = ['V4 header', 'V4 presigned', 'V2 header', 'V2 presigned'];
  for (const tail of ['#/other', '#?uploads', '#']) {
    for (const way of ways) {
      it(`${way}: a signed PUT replayed with "${tail}" after its target is refused (400 InvalidRequest) and writes nothing`, async () => {
        const signed = signedPuts(t.port, '/bucket/photo').find((s) => s.name === way)!;
        const before = t.store.revision;
        const q = signed.target.indexOf('?');
        // The tail goes after the path (where a key would continue) and after the whole target.
        const targets = q < 0 ? [signed.target + tail] : [signed.target.slice(0, q) + tail + signed.target.slice(q), signed.target + tail];
        for (const target of targets) {
          const reply = await put(t.port, target, signed.headers);
          expect(statusOf(reply), target).to.equal(400);
          expect(reply, target).to.match(/<Code>InvalidRequest<\/Code>/);
        }
        expect(t.store.revision, 'nothing written').to.equal(before);
        expect(t.store.list({ prefix: 'photo', limit: 10 }).objects.map((o) => o.key)).to.deep.equal(t.store.head('photo') ? ['photo'] : []);
      });
    }
  }

  it('a "#" is refused before authentication: an unsigned request gets 400, not 403', async () => {
    for (const target of ['/bucket/photo#x', '/bucket?list-type=2#x', '/#']) {
      const reply = await rawExchange(t.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${t.port}\r\nConnection: close\r\n\r\n`);
      expect(statusOf(reply), target).to.equal(400);
      expect(reply, target).to.match(/<Code>InvalidRequest<\/Code>/);
    }
  });

  it('the same signed requests, untouched, are accepted (control)', async () => {
    for (const signed of signedPuts(t.port, '/bucket/photo')) {
      const reply = await put(t.port, signed.target, signed.headers);
      expect(statusOf(reply), `${signed.name}: ${reply.slice(0, 400)}`).to.equal(200);
    }
    expect(t.store.list({ prefix: 'photo', limit: 10 }).objects.map((o) => o.key)).to.deep.equal(['photo']);
  });
});
