/**
 * Child process of the lock tests. Usage: node lock-child.js <dir> hold|try
 *   hold: opens the store, prints "open <pid>", and waits to be killed.
 *   try:  tries to open the store and prints one JSON line: { ok } or { name, code, message }.
 */
import { openStore } from '../../src/lib/store/store.js';

const [dir, mode] = process.argv.slice(2);
if (!dir || (mode !== 'hold' && mode !== 'try')) {
  process.stderr.write('usage: lock-child <dir> hold|try\n');
  process.exit(2);
}

if (mode === 'hold') {
  const store = await openStore(dir);
  await store.put('held-by', Buffer.from(String(process.pid)));
  process.stdout.write(`open ${process.pid}\n`);
  setInterval(() => undefined, 1 << 30);
} else {
  try {
    const store = await openStore(dir);
    await store.close();
    process.stdout.write(JSON.stringify({ ok: true }) + '\n');
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stdout.write(JSON.stringify({ ok: false, name: e.name, code: e.code, message: e.message }) + '\n');
  }
}
