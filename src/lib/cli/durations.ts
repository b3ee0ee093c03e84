/** Durations given on the command line. */

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/**
 * A duration given on the command line, in milliseconds: a whole number of seconds (`3600`) or
 * a whole number with one unit, `s`, `m`, `h` or `d` (`45s`, `30m`, `12h`, `7d`). At least one
 * second; anything else is refused with a message that names `flag`.
 */
export function parseDuration(value: string, flag: string): number {
  const m = /^(\d{1,15})([smhd]?)$/.exec(value.trim());
  const seconds = m ? Number(m[1]) * DURATION_UNITS[m[2] || 's']! : NaN;
  if (!(seconds >= 1 && Number.isSafeInteger(seconds * 1000))) {
    throw new Error(
      `${flag} must be a duration of at least one second: a number of seconds (3600) or a number with a unit s, m, h or d (45s, 30m, 12h, 7d), not ${JSON.stringify(value)}`,
    );
  }
  return seconds * 1000;
}

/**
 * --keep-history: `all` (undefined: the whole history is kept) or a duration (see
 * parseDuration); anything else is refused with a message that says what is accepted.
 */
export function parseKeepHistory(value: string): number | undefined {
  if (value.trim() === 'all') return undefined;
  try {
    return parseDuration(value, '--keep-history');
  } catch {
    throw new Error(
      `--keep-history takes "all" (keep every operation) or a duration of at least one second, a number with a unit s, m, h or d (1s, 10m, 12h, 30d), not ${JSON.stringify(value)}`,
    );
  }
}
