/**
 * The original tools take Go-style flags with one dash (`-dir zipdir`, `-bs=1024`). oclif reads
 * `-dir` as the short flags d, i, r, so the launcher rewrites a single-dash word of two or more
 * letters into its double-dash form before oclif sees it. Short flags stay single letters
 * (`-h`), negative numbers are untouched, and nothing after `--` is rewritten.
 */
const GO_FLAG = /^-[A-Za-z][A-Za-z0-9-]+(=.*)?$/s;

export function normalizeGoFlags(argv: readonly string[]): string[] {
  const out: string[] = [];
  let rest = false;
  for (const arg of argv) {
    if (rest) out.push(arg);
    else if (arg === '--') {
      rest = true;
      out.push(arg);
    } else out.push(GO_FLAG.test(arg) ? `-${arg}` : arg);
  }
  return out;
}
