/**
 * AWS Signature Version 2 (the S3 "HMAC-SHA1" scheme), as still sent by S3QL's `s3c://` backend
 * and older tools: header form `Authorization: AWS <accessKey>:<base64 signature>` and query form
 * `?AWSAccessKeyId=..&Expires=..&Signature=..`.
 *
 * String to sign:
 *   METHOD \n Content-MD5 \n Content-Type \n Date-or-Expires \n canonicalized-amz-headers canonicalized-resource
 */

import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { percentDecodeBytes, signableBytes } from './signature-v4.js';

/**
 * Query parameters that V2 includes in the canonicalized resource: every S3 sub-resource and the
 * response-* overrides. A V2 signature covers the path and these, nothing else of the query, so
 * one missing here is a parameter that can be added to a signed request unnoticed, and makes
 * every client that does sign it fail (s3cmd signs whatever sub-resource it asks for: `info`
 * asks for ?cors, ?policy, ?lifecycle, ...). Botocore's list lacks a few of the newer ones
 * (encryption, publicAccessBlock, ...): its V2 requests for those are refused, as a request
 * whose sub-resource is not signed must be.
 */
export const V2_SUBRESOURCES: ReadonlySet<string> = new Set([
  'accelerate',
  'acl',
  'analytics',
  'cors',
  'defaultObjectAcl',
  'delete',
  'encryption',
  'intelligent-tiering',
  'inventory',
  'legal-hold',
  'lifecycle',
  'location',
  'logging',
  'metrics',
  'notification',
  'object-lock',
  'ownershipControls',
  'partNumber',
  'policy',
  'policyStatus',
  'publicAccessBlock',
  'replication',
  'requestPayment',
  'response-cache-control',
  'response-content-disposition',
  'response-content-encoding',
  'response-content-language',
  'response-content-type',
  'response-expires',
  'restore',
  'retention',
  'select',
  'select-type',
  'storageClass',
  'tagging',
  'torrent',
  'uploadId',
  'uploads',
  'versionId',
  'versioning',
  'versions',
  'website',
]);

export class V2ParseError extends Error {}

/** Parses `AWS accessKey:signature`. */
export function parseV2Authorization(header: string): { accessKey: string; signature: string } {
  const m = /^AWS\s+(\S+)$/.exec(header.trim());
  if (!m) throw new V2ParseError('AWS authorization header is invalid.  Expected AwsAccessKeyId:signature');
  const value = m[1]!;
  const colon = value.lastIndexOf(':');
  if (colon <= 0 || colon === value.length - 1) throw new V2ParseError('AWS authorization header is invalid.  Expected AwsAccessKeyId:signature');
  return { accessKey: value.slice(0, colon), signature: value.slice(colon + 1) };
}

function headerText(value: string | string[] | undefined): string {
  if (value === undefined) return '';
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * The x-amz-* headers, lowercased, sorted, `name:value\n` each, values trimmed, repeated headers
 * joined with ',' (a header that Node already joined arrives as one value and is used as is).
 */
export function canonicalizedAmzHeaders(headers: IncomingHttpHeaders): string {
  const names = Object.keys(headers)
    .map((n) => n.toLowerCase())
    .filter((n) => n.startsWith('x-amz-'))
    .sort();
  let out = '';
  for (const name of [...new Set(names)]) {
    const v = headers[name];
    const values = v === undefined ? [] : Array.isArray(v) ? v : [v];
    out += `${name}:${values.map((x) => x.trim()).join(',')}\n`;
  }
  return out;
}


/**
 * Canonicalized resource: the path as sent (still percent-encoded, no query), then the signed
 * sub-resources of the query sorted by name as `?a&b=v` with values decoded. `pathPrefix` is
 * prepended for virtual-hosted-style requests (`/bucket`).
 */
export function canonicalizedResourceV2(rawPath: string, rawQuery: string, pathPrefix = ''): string {
  const subresources: Array<[string, string | undefined]> = [];
  if (rawQuery !== '') {
    for (const part of rawQuery.split('&')) {
      const eq = part.indexOf('=');
      const name = percentDecodeBytes(eq < 0 ? part : part.slice(0, eq)).toString('utf8');
      if (!V2_SUBRESOURCES.has(name)) continue;
      // The value's bytes, one latin1 character each, like the header values (see signableBytes).
      subresources.push([name, eq < 0 ? undefined : percentDecodeBytes(part.slice(eq + 1)).toString('latin1')]);
    }
  }
  // Stable sort by name only (repeated names keep their order).
  subresources.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let out = pathPrefix + (rawPath === '' ? '/' : rawPath);
  if (subresources.length > 0) {
    out += '?' + subresources.map(([n, v]) => (v === undefined ? n : `${n}=${v}`)).join('&');
  }
  return out;
}

export interface V2StringToSignInput {
  method: string;
  rawPath: string;
  rawQuery: string;
  headers: IncomingHttpHeaders;
  /** For the query form: the Expires parameter, which takes the place of the date. */
  expires?: string;
  pathPrefix?: string;
}

export function stringToSignV2(input: V2StringToSignInput): string {
  const h = input.headers;
  let date: string;
  if (input.expires !== undefined) date = input.expires;
  else if (h['x-amz-date'] !== undefined) date = ''; // x-amz-date is signed among the amz headers
  else date = headerText(h['date']);
  return (
    `${input.method.toUpperCase()}\n` +
    `${headerText(h['content-md5'])}\n` +
    `${headerText(h['content-type'])}\n` +
    `${date}\n` +
    canonicalizedAmzHeaders(h) +
    canonicalizedResourceV2(input.rawPath, input.rawQuery, input.pathPrefix)
  );
}

/** base64(HMAC-SHA1(secret, stringToSign)) */
export function signV2(secretKey: string, stringToSign: string): string {
  return createHmac('sha1', secretKey).update(signableBytes(stringToSign)).digest('base64');
}
