/** Runs the built `zipkv` binary as a user would, in a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { zipkvBin } from './paths.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `zipkv ...args` to completion. */
export function runZipkv(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [zipkvBin, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface RunningServer {
  child: ChildProcess;
  url: string;
  output: () => string;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<RunResult>;
}

/** Starts `zipkv serve ...args` and waits for its start-up line. */
export function startZipkvServe(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [zipkvBin, 'serve', ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let started = false;
    const exited = new Promise<RunResult>((done) => child.on('close', (code, signal) => done({ code, signal, stdout, stderr })));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`zipkv serve did not start: ${stdout}${stderr}`));
    }, 30_000);
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /on (http:\/\/\S+)/.exec(stdout);
      if (m && !started) {
        started = true;
        clearTimeout(timer);
        resolve({
          child,
          url: m[1]!,
          output: () => stdout + stderr,
          async stop(signal: NodeJS.Signals = 'SIGTERM') {
            child.kill(signal);
            return exited;
          },
        });
      }
    });
    void exited.then((r) => {
      if (!started) {
        clearTimeout(timer);
        reject(new Error(`zipkv serve exited (${r.code}): ${r.stdout}${r.stderr}`));
      }
    });
  });
}

/** `zipkv ...args` to completion: shorthand for tests that run many commands. */
export function zipkv(...args: string[]): Promise<RunResult> {
  return runZipkv(args);
}

/** oclif wraps error messages to the terminal width; joined again, paths can be matched whole. */
export function unwrap(text: string): string {
  return text.replace(/\n ›   /g, '');
}
