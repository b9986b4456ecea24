// The source side of a lazy final phase: `runc checkpoint --lazy-pages` writes every image except the lazy
// pages and keeps the frozen task's memory in CRIU's pipes, served on a loopback port until the session ends.
//
// Life cycle (docs/postcopy.md has the probes behind each step):
//   freeze (our cgroup freezer) → final dirty scan → start → CRIU serves → fetch the delta → finish: CLOSE,
//   CRIU kills the task and exits, runc checkpoint exits 0 (the task's sockets are free for the restore).
//   Failure before finish: abort = SIGKILL CRIU; the tasks detach, we drop CRIU's network lock and thaw them,
//   and they run on as if nothing happened (probed: verify ok after a killed lazy dump).

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { FerryError } from '../../src/protocol/index.js';
import { run } from '../../src/util/exec.js';
import { firstCriuError } from '../runtime/runc-checkpointer.js';
import { CriuPageClient } from './criu-client.js';

export interface LazyDumpOptions {
  runc: string;
  criu: string;
  criuConfigFile: string | null;
  runcRoot: string;
  id: string;
  imagesDir: string;
  workDir: string;
  signal: AbortSignal;
}

const READY_TIMEOUT_MS = 60_000;

export class LazyDump {
  private constructor(
    private readonly child: ChildProcess,
    private readonly exit: Promise<number>,
    readonly client: CriuPageClient,
  ) {}

  /** Starts the lazy dump of an already frozen container and connects to CRIU's page server once it serves. */
  static async start(o: LazyDumpOptions): Promise<LazyDump> {
    const port = await freePort();
    const env = { ...process.env };
    if (o.criuConfigFile) env.CRIU_CONFIG_FILE = o.criuConfigFile;
    // runc hands its fd 3 to CRIU as the status fd: CRIU writes one byte there when its page server listens.
    // runc wants it writable, which Node's stdio pipes are not (runc: "not writable"): a plain file we poll.
    const statusPath = join(o.workDir, 'lazy-status');
    await mkdir(o.workDir, { recursive: true });
    const statusFd = openSync(statusPath, 'w', 0o600);
    const child = spawn(o.runc, ['--root', o.runcRoot, '--criu', o.criu, 'checkpoint', '--tcp-established', '--lazy-pages',
      '--page-server', `127.0.0.1:${port}`, '--status-fd', '3', '--image-path', o.imagesDir, '--work-path', o.workDir, o.id],
    { stdio: ['ignore', 'ignore', 'pipe', statusFd], env });
    closeSync(statusFd);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-2000); });
    const exit = new Promise<number>((resolve) => child.once('close', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
    let exited = false;
    void exit.then(() => { exited = true; });
    const deadline = performance.now() + READY_TIMEOUT_MS;
    // Polled each millisecond: the freeze is running while we wait.
    const ready = await (async (): Promise<'ready' | 'aborted' | 'timeout' | number> => {
      for (;;) {
        if ((await stat(statusPath)).size > 0) return 'ready';
        if (exited) return exit;
        if (o.signal.aborted) return 'aborted';
        if (performance.now() > deadline) return 'timeout';
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    if (ready !== 'ready') {
      if (typeof ready !== 'number') { await killCriu(child); await exit; }
      const why = await firstCriuError(`${o.workDir}/dump.log`) ?? stderr.trim().slice(-400);
      throw new FerryError(ready === 'aborted' ? 'E_ABORTED' : 'E_CRIU_DUMP', `lazy checkpoint of ${o.id.slice(0, 12)} failed (${ready}): ${why}`);
    }
    try {
      return new LazyDump(child, exit, await CriuPageClient.connect(port, o.signal));
    } catch (e) {
      await killCriu(child);
      await exit;
      throw e;
    }
  }

  private done = false;
  get ended(): boolean { return this.done; }

  /** Ends the session: CRIU kills the (frozen) task and exits. No way back to the live task after this. */
  async finish(): Promise<void> {
    this.done = true;
    this.client.sendClose();
    const code = await this.exit;
    if (code !== 0) throw new FerryError('E_CRIU_DUMP', `runc checkpoint exited ${code} after the lazy session`);
  }

  /** Before finish: CRIU dies, the task detaches and resumes once thawed. */
  async abort(): Promise<void> {
    this.done = true;
    // CRIU first: a session that ends while CRIU lives counts as a finished dump, and CRIU kills the task.
    await killCriu(this.child);
    await this.exit;
    this.client.destroy();
  }
}

/** CRIU runs as `criu swrk` under runc: killing runc alone would leave CRIU serving (and, once its socket closes, killing the task). */
async function killCriu(runc: ChildProcess): Promise<void> {
  const kids = (await run('pgrep', ['-P', String(runc.pid)], { allowFailure: true })).stdout.trim().split('\n').filter(Boolean).map(Number);
  for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch { /* gone */ } }
  runc.kill('SIGKILL');
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const a = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  if (!a || typeof a === 'string') throw new FerryError('E_INTERNAL', 'no free port');
  return a.port;
}

/**
 * CRIU's nftables network lock outlives a killed CRIU. CRIU 4.x names the table after the dump's run id
 * (`CRIU-<first characters of dump_criu_run_id>`), which the inventory image carries as a UUID string.
 */
export async function dropNetworkLock(imagesDir: string): Promise<void> {
  const inv = await readFile(join(imagesDir, 'inventory.img')).catch(() => null);
  const id = inv ? /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.exec(inv.toString('latin1'))?.[0] : undefined;
  if (!id) return;
  const tables = (await run('nft', ['list', 'tables'], { allowFailure: true })).stdout;
  for (const m of tables.matchAll(/^table inet (CRIU-(\S+))$/gm)) {
    if (id.startsWith(m[2]!)) await run('nft', ['delete', 'table', 'inet', m[1]!], { allowFailure: true });
  }
}
