// Child processes with a deadline, captured output and typed failures.

import { spawn, type SpawnOptions } from 'node:child_process';
import { FerryError, type ErrorCode } from '../protocol/errors.js';

export interface ExecResult { stdout: string; stderr: string; code: number }
export interface ExecOptions { signal?: AbortSignal; env?: NodeJS.ProcessEnv; cwd?: string; input?: string | Buffer; errorCode?: ErrorCode; allowFailure?: boolean }

/** Runs a command to completion. A non-zero exit is an error carrying stderr, unless allowFailure. */
export function run(cmd: string, args: readonly string[], o: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const opts: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'], env: o.env ?? process.env };
    if (o.cwd) opts.cwd = o.cwd;
    if (o.signal) opts.signal = o.signal;
    const child = spawn(cmd, args, opts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      reject(e.name === 'AbortError'
        ? new FerryError('E_ABORTED', `${cmd} aborted`, { cause: e })
        : new FerryError(o.errorCode ?? 'E_INTERNAL', `cannot run ${cmd}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      const r = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code: code ?? (sig ? 128 : 1) };
      if (r.code === 0 || o.allowFailure) resolve(r);
      else reject(new FerryError(o.errorCode ?? 'E_INTERNAL', `${cmd} ${args[0] ?? ''} failed (${sig ?? code}): ${lastLines(r.stderr || r.stdout)}`, { details: { stderr: r.stderr.slice(-4000) } }));
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(o.input);
  });
}

const lastLines = (s: string): string => s.trim().split('\n').slice(-3).join(' | ').slice(0, 600);
