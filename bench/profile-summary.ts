/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, or `npm run bench -- --profile`): the
 * functions with the most self time and the most total time (self + callees), as shares of the
 * samples.
 *
 * Usage: node dist/bench/profile-summary.js FILE.cpuprofile [--top N] [--filter TEXT]
 */
import fs from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function nameOf(node: ProfileNode, root: string): string {
  const { functionName, url, lineNumber } = node.callFrame;
  let where = url.replace(/^file:\/\//, '');
  if (where.startsWith(root)) where = where.slice(root.length + 1);
  const fn = functionName || '(anonymous)';
  return where ? `${fn} ${where}:${lineNumber + 1}` : fn;
}

export function summarise(profile: Profile, root: string, top: number, filter?: string): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfTime = new Map<number, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfTime.set(profile.samples[i]!, (selfTime.get(profile.samples[i]!) ?? 0) + dt);
    total += dt;
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, t] of selfTime) {
    const node = byId.get(id)!;
    const name = nameOf(node, root);
    self.set(name, (self.get(name) ?? 0) + t);
    // Each function on the stack once, however deep the recursion.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = nameOf(byId.get(cur)!, root);
      if (seen.has(n)) continue;
      seen.add(n);
      inclusive.set(n, (inclusive.get(n) ?? 0) + t);
    }
  }
  const pct = (t: number) => `${((100 * t) / Math.max(1, total)).toFixed(1).padStart(5)}%`;
  const rows = (m: Map<string, number>) =>
    [...m]
      .filter(([n]) => !filter || n.includes(filter))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([n, t]) => `  ${pct(t)}  ${(t / 1000).toFixed(0).padStart(6)} ms  ${n}`)
      .join('\n');
  return [
    `${(total / 1e6).toFixed(2)} s sampled`,
    'self time:',
    rows(self),
    'total time (self + callees):',
    rows(inclusive),
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--') && args[args.indexOf(a) - 1] !== '--top' && args[args.indexOf(a) - 1] !== '--filter');
  if (!file) {
    process.stderr.write('usage: profile-summary FILE.cpuprofile [--top N] [--filter TEXT]\n');
    process.exit(2);
  }
  const topAt = args.indexOf('--top');
  const filterAt = args.indexOf('--filter');
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  process.stdout.write(`${summarise(profile, root, topAt >= 0 ? Number(args[topAt + 1]) : 25, filterAt >= 0 ? args[filterAt + 1] : undefined)}\n`);
}
