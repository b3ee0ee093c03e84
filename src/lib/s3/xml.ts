/**
 * XML for the S3 layer. Replies are built with a small escaping writer (S3's documents are flat
 * and known); request bodies (DeleteObjects, CompleteMultipartUpload) are parsed with
 * fast-xml-parser. Any DOCTYPE is refused: no entity expansion, internal or external.
 */
import { XMLParser } from 'fast-xml-parser';
import { s3Error } from './errors.js';

export const S3_NAMESPACE = 'http://s3.amazonaws.com/doc/2006-03-01/';
const DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';

// Characters XML 1.0 cannot carry even as references are written as references anyway, as
// S3 does; clients that care ask for encoding-type=url. A carriage return is a reference too:
// parsers turn a literal one into a line feed. Quotes need no escaping in element text (zipkv
// writes no attribute values), so the quoted ETags of a listing pass through untouched.
const SPECIAL = /[&<>\u0000-\u0008\u000b-\u001f\ufffe\uffff]/g;
/** The same class without /g: a test that keeps no state, for the common case of nothing to escape. */
const HAS_SPECIAL = /[&<>\u0000-\u0008\u000b-\u001f\ufffe\uffff]/;

export function escapeXml(text: string): string {
  if (!HAS_SPECIAL.test(text)) return text;
  return text.replace(SPECIAL, (c) => {
    switch (c) {
      case '&': return '&amp;';
      case '<': return '&lt;';
      case '>': return '&gt;';
      default: return `&#x${c.charCodeAt(0).toString(16)};`;
    }
  });
}

/**
 * Elements of different names in a given order (ListObjectVersions interleaves Version and
 * DeleteMarker); the name it is given in its parent is not written.
 */
export class XmlSequence {
  constructor(readonly items: Array<[string, XmlValue]>) {}
}

/** A node: element name with text, children, or nothing (undefined values are skipped). */
export type XmlValue = string | number | boolean | undefined | XmlNode | XmlNode[] | XmlSequence;
export interface XmlNode {
  [name: string]: XmlValue | XmlValue[];
}

function render(name: string, value: XmlValue | XmlValue[], out: string[]): void {
  if (value === undefined) return;
  if (Array.isArray(value)) {
    for (const item of value) render(name, item, out);
    return;
  }
  if (value instanceof XmlSequence) {
    for (const [child, v] of value.items) render(child, v, out);
    return;
  }
  if (typeof value === 'object') {
    out.push(`<${name}>`);
    for (const [child, v] of Object.entries(value)) render(child, v, out);
    out.push(`</${name}>`);
    return;
  }
  out.push(`<${name}>${escapeXml(String(value))}</${name}>`);
}

/** A whole document: `<root xmlns="...">children</root>`. */
/** `namespace: null` writes a root without xmlns (S3's error documents have none). */
export function xmlDocument(root: string, children: XmlNode, namespace: string | null = S3_NAMESPACE): string {
  const out: string[] = [DECLARATION, namespace ? `<${root} xmlns="${namespace}">` : `<${root}>`];
  for (const [name, value] of Object.entries(children)) render(name, value, out);
  out.push(`</${root}>`);
  return out.join('');
}

const ENTITY = /&(?:(amp|lt|gt|quot|apos)|#x([0-9a-fA-F]{1,6})|#([0-9]{1,7}));/g;
const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Decodes XML's predefined entities and character references in one pass. */
export function decodeXmlText(text: string): string {
  return text.replace(ENTITY, (whole, named: string | undefined, hex: string | undefined, dec: string | undefined) => {
    if (named) return NAMED[named]!;
    const code = hex ? Number.parseInt(hex, 16) : Number.parseInt(dec!, 10);
    if (code > 0x10ffff) return whole;
    return String.fromCodePoint(code);
  });
}

const parser = new XMLParser({
  processEntities: false, // decoded by decodeXmlText, in one pass, with no DOCTYPE entities
  htmlEntities: false,
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: false,
  isArray: (name) => name === 'Object' || name === 'Part',
});

/** Parses a request body; malformed or hostile XML is `MalformedXML`. */
export function parseXml(body: string): Record<string, unknown> {
  if (/<!DOCTYPE|<!ENTITY/i.test(body)) throw s3Error('MalformedXML', 'DOCTYPE and entity declarations are not allowed.');
  let parsed: unknown;
  try {
    parsed = parser.parse(body, true);
  } catch {
    throw s3Error('MalformedXML');
  }
  if (!parsed || typeof parsed !== 'object') throw s3Error('MalformedXML');
  return parsed as Record<string, unknown>;
}

/** The text of an element as parsed (a string, or '' for an empty element), decoded. */
export function xmlText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return decodeXmlText(value);
  if (typeof value === 'object' && Object.keys(value as object).length === 0) return '';
  return undefined;
}
