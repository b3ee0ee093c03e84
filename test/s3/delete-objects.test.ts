import { createHash } from 'node:crypto';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { XMLValidator } from 'fast-xml-parser';
import { rawRequest, xmlField, type RawResponse } from '../helpers/http.js';
import { startServer, type TestServer, s3Fails } from '../helpers/server.js';


const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

describe('s3: DeleteObjects', () => {
  let t: TestServer;
  before(async () => {
    t = await startServer();
  });
  after(async () => {
    await t.stop();
  });

  const putAll = (keys: string[]) => Promise.all(keys.map((k) => t.store.put(k, Buffer.from(k))));
  const live = (keys: string[]) => keys.filter((k) => t.store.head(k) !== undefined);

  /** POST /bucket/?delete as S3QL sends it: text/xml with a Content-MD5. */
  const postDelete = (xml: string, headers: Record<string, string> = {}): Promise<RawResponse> => {
    const body = Buffer.from(xml, 'utf8');
    return rawRequest(t.port, {
      method: 'POST',
      path: '/bucket/?delete',
      headers: {
        'Content-Type': 'text/xml; charset=utf-8',
        'Content-MD5': createHash('md5').update(body).digest('base64'),
        'Content-Length': body.length,
        ...headers,
      },
      body,
    });
  };

  it('reports existing and missing keys alike as Deleted', async () => {
    await putAll(['del/a', 'del/b']);
    const out = await t.client.send(
      new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Objects: [{ Key: 'del/a' }, { Key: 'del/missing' }, { Key: 'del/b' }] } }),
    );
    expect(out.Deleted!.map((d) => d.Key)).to.deep.equal(['del/a', 'del/missing', 'del/b']);
    expect(out.Errors ?? []).to.have.length(0);
    expect(live(['del/a', 'del/b'])).to.deep.equal([]);
  });

  it('Quiet mode reports only the errors', async () => {
    await putAll(['quiet/a', 'quiet/b']);
    const tooLong = 'k'.repeat(1025);
    const out = await t.client.send(
      new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Quiet: true, Objects: [{ Key: 'quiet/a' }, { Key: tooLong }, { Key: 'quiet/b' }] } }),
    );
    expect(out.Deleted ?? []).to.have.length(0);
    expect(out.Errors!.map((e) => [e.Key, e.Code])).to.deep.equal([[tooLong, 'KeyTooLongError']]);
    expect(live(['quiet/a', 'quiet/b'])).to.deep.equal([]);
  });

  it('1000 keys are accepted, 1001 are MalformedXML and delete nothing', async () => {
    const keys = Array.from({ length: 1001 }, (_, i) => `many/${i}`);
    await putAll(keys);
    const err = await s3Fails(t.client.send(new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Objects: keys.map((Key) => ({ Key })) } })));
    expect(err.name).to.equal('MalformedXML');
    expect(err.$metadata.httpStatusCode).to.equal(400);
    expect(live(keys)).to.have.length(1001);
    const out = await t.client.send(new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Objects: keys.slice(0, 1000).map((Key) => ({ Key })) } }));
    expect(out.Deleted!.map((d) => d.Key)).to.deep.equal(keys.slice(0, 1000));
    expect(live(keys)).to.deep.equal(['many/1000']);
  });

  it('malformed XML and documents of the wrong shape are MalformedXML', async () => {
    await putAll(['shape/x']);
    const bodies = [
      '<Delete><Object><Key>shape/x</Key></Object>',
      '<Delete><Object><Key>shape/x</Key></Objekt></Delete>',
      'not xml at all',
      '',
      '<Delete></Delete>',
      '<Delete><Object><VersionId>1</VersionId></Object></Delete>',
      '<Remove><Object><Key>shape/x</Key></Object></Remove>',
    ];
    for (const body of bodies) {
      const res = await postDelete(body);
      expect(res.status, body).to.equal(400);
      expect(xmlField(res.body, 'Code'), body).to.equal('MalformedXML');
    }
    expect(live(['shape/x'])).to.deep.equal(['shape/x']);
  });

  it('a DOCTYPE or entity declaration (billion laughs) is MalformedXML and deletes nothing', async () => {
    await putAll(['lol', 'lollollol', 'ext']);
    const laughs = [
      '<?xml version="1.0"?>',
      '<!DOCTYPE lolz [',
      ' <!ENTITY lol "lol">',
      ...Array.from({ length: 9 }, (_, i) => ` <!ENTITY lol${i + 1} "${`&lol${i || ''};`.repeat(10)}">`),
      ']>',
      '<Delete><Object><Key>&lol9;</Key></Object><Object><Key>lol</Key></Object></Delete>',
    ].join('\n');
    const external = '<?xml version="1.0"?><!doctype d [<!entity e SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&e;</Key></Object><Object><Key>ext</Key></Object></Delete>';
    const small = '<!DOCTYPE d [<!ENTITY x "lollollol">]><Delete><Object><Key>&x;</Key></Object></Delete>';
    for (const body of [laughs, external, small]) {
      const res = await postDelete(body);
      expect(res.status).to.equal(400);
      expect(xmlField(res.body, 'Code')).to.equal('MalformedXML');
    }
    expect(live(['lol', 'lollollol', 'ext'])).to.deep.equal(['lol', 'lollollol', 'ext']);
  });

  it('keys with XML special characters are deleted (SDK and raw &amp; forms)', async () => {
    const keys = ['x/a&b', 'x/<lt>', 'x/"q"', "x/'a'", 'x/&amp;literal', 'x/\u00fc\u{1f600}', 'x/cr\rlf\n'];
    await putAll(keys);
    const sdk = await t.client.send(new DeleteObjectsCommand({ Bucket: 'bucket', Delete: { Objects: keys.slice(0, 4).map((Key) => ({ Key })) } }));
    expect(sdk.Deleted!.map((d) => d.Key)).to.have.members(keys.slice(0, 4));
    expect(live(keys)).to.deep.equal(keys.slice(4));

    // By hand: the literal key "x/&amp;literal" is written &amp;amp; in XML; references decode.
    const raw = await postDelete(
      `<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>${escape('x/&amp;literal')}</Key></Object>` +
        '<Object><Key>x/&#xfc;&#128512;</Key></Object><Object><Key>x/cr&#13;lf&#10;</Key></Object></Delete>',
    );
    expect(raw.status).to.equal(200);
    const text = raw.body.toString('utf8');
    expect(XMLValidator.validate(text)).to.equal(true);
    expect(text).to.contain('<Key>x/&amp;amp;literal</Key>');
    expect(live(keys)).to.deep.equal([]);
  });

  it("S3QL's raw form: POST /bucket/?delete, text/xml with Content-MD5, namespaced reply", async () => {
    await putAll(['s3ql_data_1', 's3ql_data_2']);
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>false</Quiet>' +
      '<Object><Key>s3ql_data_1</Key></Object><Object><Key>s3ql_data_2</Key></Object><Object><Key>s3ql_data_3</Key></Object></Delete>';
    const res = await postDelete(xml);
    expect(res.status).to.equal(200);
    expect(res.headers['content-type']).to.equal('application/xml');
    const text = res.body.toString();
    expect(text).to.match(/<DeleteResult xmlns="http:\/\/s3\.amazonaws\.com\/doc\/2006-03-01\/">/);
    const deleted = [...text.matchAll(/<Deleted><Key>([^<]*)<\/Key><\/Deleted>/g)].map((m) => m[1]);
    expect(deleted).to.have.members(['s3ql_data_1', 's3ql_data_2', 's3ql_data_3']);
    expect(text).to.not.contain('<Error>');
    expect(live(['s3ql_data_1', 's3ql_data_2'])).to.deep.equal([]);
  });

  it('a Content-MD5 that does not match the body is BadDigest and deletes nothing', async () => {
    await putAll(['md5/a']);
    const res = await postDelete('<Delete><Object><Key>md5/a</Key></Object></Delete>', { 'Content-MD5': createHash('md5').update('other').digest('base64') });
    expect(res.status).to.equal(400);
    expect(xmlField(res.body, 'Code')).to.equal('BadDigest');
    expect(live(['md5/a'])).to.deep.equal(['md5/a']);
  });
});
