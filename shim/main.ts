// containerd-shim-ferry-v1: the actions containerd invokes (start, delete, …) and the proxy daemon (__proxy).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../src/log/logger.js';
import { loadShimConfig, type ShimConfig } from './config.js';
import { deferredHooks, loadHooks } from './hooks.js';
import { TaskInterceptor } from './interceptor.js';
import { createShimLogger } from './log.js';
import { ShimProxy, socketAlive } from './proxy.js';
import { rewriteRuntimeOptions } from './proto/runc-options.js';
import { Any } from './proto/well-known.js';
import { ShimError } from './ttrpc/errors.js';

/** Where containerd's shims put their sockets (runc-v2 uses it whatever containerd's `state` is). */
export const SOCKET_DIR = '/run/containerd/s';
/** Bound on the upstream `start` action. */
export const UPSTREAM_START_TIMEOUT_MS = 30_000;
/** Bound on the proxy daemon coming up. */
export const PROXY_READY_TIMEOUT_MS = 10_000;

/** The flags containerd passes (Go `flag` syntax: `-name value`, booleans alone). */
export interface ShimArgs {
  readonly namespace: string;
  readonly address: string;
  readonly publishBinary: string;
  readonly id: string;
  readonly bundle: string | null;
  readonly action: string | null;
}

const BOOL_FLAGS = new Set(['debug', 'v']);

/** Parses containerd's shim argv (pkg/shim/shim.go `parseFlags`). Unknown flags are skipped, never fatal: upstream gets the argv anyway. */
export function parseShimArgs(argv: readonly string[]): ShimArgs {
  const flags = new Map<string, string>();
  let action: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith('-') && a.length > 1) {
      const name = a.replace(/^--?/, '');
      const eq = name.indexOf('=');
      if (eq >= 0) flags.set(name.slice(0, eq), name.slice(eq + 1));
      else if (BOOL_FLAGS.has(name)) flags.set(name, 'true');
      else flags.set(name, argv[++i] ?? '');
    } else action = a;
  }
  return {
    namespace: flags.get('namespace') ?? '',
    address: flags.get('address') ?? '',
    publishBinary: flags.get('publish-binary') ?? '',
    id: flags.get('id') ?? '',
    bundle: flags.get('bundle') ?? null,
    action,
  };
}

/** Our socket for an upstream address: one per upstream, so every container of a pod shares it. */
export function proxySocketFor(upstreamAddress: string): string {
  return join(SOCKET_DIR, createHash('sha256').update(`${upstreamAddress}:ferry`).digest('hex'));
}

/** What the `start` action hands the proxy daemon. */
interface ProxyArgs {
  readonly listen: string;
  readonly upstream: string;
  readonly namespace: string;
  readonly address: string;
  readonly id: string;
}

interface RunResult {
  readonly code: number;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

function run(bin: string, argv: readonly string[], opts: { cwd: string; input: Uint8Array; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, argv, { cwd: opts.cwd, env: process.env, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, sig) => resolve({ code: code ?? (sig === null ? 1 : 128), stdout: Buffer.concat(out), stderr: Buffer.concat(err) }));
    child.stdin.on('error', () => {}); // upstream may exit without reading
    child.stdin.end(opts.input);
  });
}

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  for await (const b of process.stdin) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

/** containerd's runtime options Any (stdin of `start`), rewritten for runc-v2 like a Create's options. */
function upstreamStdin(stdin: Buffer, config: ShimConfig, log: Logger): Uint8Array {
  if (stdin.length === 0) return stdin;
  const any = Any.decode(stdin);
  const next = rewriteRuntimeOptions(any, config);
  log.info({ optionsType: any.typeUrl, rewritten: next !== undefined }, 'start: runtime options on stdin');
  return next === undefined ? stdin : Any.encode(next);
}

/** Polls until `path` accepts connections, the child exits, or the bound passes. */
async function waitListening(path: string, child: { exitCode: number | null; signalCode: string | null }, timeoutMs: number): Promise<void> {
  const t0 = performance.now();
  let delay = 2;
  for (;;) {
    if (await socketAlive(path, 200)) return;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new ShimError('E_SHIM_PROXY_START', `proxy daemon exited (${child.exitCode ?? child.signalCode}) before listening on ${path}`, { path });
    }
    if (performance.now() - t0 > timeoutMs) throw new ShimError('E_SHIM_PROXY_START', `proxy daemon did not listen on ${path} within ${timeoutMs} ms`, { path });
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
}

async function startAction(argv: readonly string[], args: ShimArgs, config: ShimConfig, log: Logger): Promise<number> {
  const t0 = performance.now();
  const bundle = args.bundle ?? process.cwd();
  const input = upstreamStdin(await readStdin(), config, log);
  const r = await run(config.upstream, argv, { cwd: process.cwd(), input, timeoutMs: UPSTREAM_START_TIMEOUT_MS });
  process.stderr.write(r.stderr);
  const upstreamAddress = r.stdout.toString('utf8').trim();
  if (r.code !== 0 || upstreamAddress === '') {
    log.error({ code: r.code, stdout: upstreamAddress, stderr: r.stderr.toString('utf8').trim() }, 'upstream start failed');
    process.stdout.write(r.stdout);
    return r.code === 0 ? 1 : r.code;
  }
  const upstream = upstreamAddress.replace(/^unix:\/\//, '');
  const listen = proxySocketFor(upstreamAddress);
  const tUp = performance.now();
  let reused = true;
  if (!(await socketAlive(listen))) {
    reused = false;
    mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
    const proxyArgs: ProxyArgs = { listen, upstream, namespace: args.namespace, address: args.address, id: args.id };
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '__proxy', JSON.stringify(proxyArgs)], {
      cwd: '/',
      detached: true,
      stdio: 'ignore',
      env: process.env,
    });
    child.unref();
    await waitListening(listen, child, PROXY_READY_TIMEOUT_MS);
  }
  // containerd re-reads <bundle>/address after its own restart; runc-v2 just wrote its own address there.
  writeFileSync(join(bundle, 'address'), `unix://${listen}`);
  log.info(
    { upstream: upstreamAddress, listen, reused, upstreamStartMs: Math.round(tUp - t0), totalMs: Math.round(performance.now() - t0) },
    reused ? 'start: reusing the live proxy for this upstream' : 'start: proxy started',
  );
  process.stdout.write(`unix://${listen}`);
  return 0;
}

/** Hands the action to upstream unchanged: same argv, cwd, stdin, stdout, stderr and exit code. */
function passThrough(argv: readonly string[], config: ShimConfig): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(config.upstream, argv, { stdio: 'inherit', env: process.env });
    child.on('error', reject);
    child.on('close', (code, sig) => resolve(code ?? (sig === null ? 1 : 128)));
  });
}

async function proxyDaemon(json: string): Promise<void> {
  const p = JSON.parse(json) as ProxyArgs;
  const config = loadShimConfig(p.address);
  const log = createShimLogger(config.log, { role: 'proxy', socket: p.listen, namespace: p.namespace });
  const life = new AbortController();
  // Loaded while the listener comes up; see deferredHooks.
  const loading = loadHooks(config, log);
  const interceptor = new TaskInterceptor({ hooks: deferredHooks(loading.then((l) => l.hooks)), log, namespace: p.namespace, overrides: config, signal: life.signal });
  const proxy = new ShimProxy({
    listen: p.listen,
    upstream: p.upstream,
    interceptor,
    log,
    onExit: (reason) => {
      life.abort(new ShimError('E_SHIM_UPSTREAM', reason));
      log.info({ reason }, 'proxy exiting');
      process.exit(0);
    },
  });
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e.message, stack: e.stack }, 'proxy crashed');
    process.exit(1);
  });
  process.on('SIGTERM', () => void proxy.stop('SIGTERM'));
  process.on('SIGINT', () => void proxy.stop('SIGINT'));
  process.on('SIGPIPE', () => {});
  try {
    await proxy.listen();
  } catch (e: unknown) {
    // EADDRINUSE with a live listener: another proxy already serves this upstream.
    log.error({ err: e instanceof Error ? e.message : String(e) }, 'proxy could not listen');
    process.exit(1);
  }
  log.info({ upstream: p.upstream, firstId: p.id, hooks: (await loading).source }, 'proxy daemon up');
}

/** Runs one invocation of the shim binary; resolves with the exit code (the proxy daemon never resolves it). */
export async function runShim(argv: readonly string[]): Promise<number> {
  if (argv[0] === '__proxy') {
    await proxyDaemon(argv[1] ?? '{}');
    return new Promise<number>(() => {}); // lives until the proxy exits the process
  }
  const args = parseShimArgs(argv);
  let config: ShimConfig;
  try {
    config = loadShimConfig(args.address);
  } catch (e: unknown) {
    process.stderr.write(`containerd-shim-ferry-v1: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  if (args.action !== 'start') return passThrough(argv, config);
  const log = createShimLogger(config.log, { role: 'start', id: args.id, namespace: args.namespace });
  try {
    return await startAction(argv, args, config, log);
  } catch (e: unknown) {
    const msg = e instanceof Error ? e.message : String(e);
    log.error({ err: msg }, 'start failed');
    process.stderr.write(`containerd-shim-ferry-v1: start: ${msg}\n`);
    return 1;
  }
}

const self = fileURLToPath(import.meta.url);
const entry = process.argv[1] === undefined ? '' : (() => { try { return realpathSync(process.argv[1] as string); } catch { return ''; } })();
if (entry === self) {
  void runShim(process.argv.slice(2)).then((code) => process.exit(code));
}
