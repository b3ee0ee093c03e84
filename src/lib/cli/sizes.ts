/** Sizes on the command line: bytes (1048576) or a number with a binary unit (512K, 40M, 20G, 1T). */
const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

export function parseSize(value: string, flag: string): number {
  const m = /^(\d{1,15}(?:\.\d{1,6})?)\s*([kmgt]?)(?:i?b)?$/i.exec(value.trim());
  const bytes = m ? Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!(bytes >= 1 && Number.isSafeInteger(bytes))) {
    throw new Error(`${flag} must be a size: bytes (1048576) or a number with a unit K, M, G or T (512M, 20G, 1.5T), not ${JSON.stringify(value)}`);
  }
  return bytes;
}
