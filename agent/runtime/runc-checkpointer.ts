// CRIU dumps through runc directly: Docker's own checkpoint path tars every page through containerd's content store.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../src/protocol/index.js';
import { run } from '../../src/util/exec.js';

export interface RuncConfig {
  /** The real runc binary. */
  runc: string;
  /** CRIU 4.2.x (older versions cannot dump inet sockets on kernels ≥ 6.16). */
  criu: string;
  /** CRIU options runc never sets itself (e.g. the nftables network lock). */
  criuConfigFile: string | null;
}

export class RuncCheckpointer {
  constructor(private readonly cfg: RuncConfig) {}

  /**
   * Dumps a running container's processes into imagesDir; the processes are gone afterwards. On failure
   * CRIU resumes them, so the container keeps running, and the error carries the first CRIU error line.
   */
  async dump(runcRoot: string, id: string, pid: number, imagesDir: string, workDir: string, signal: AbortSignal, onFrozen?: () => Promise<void>): Promise<{ frozenAt: number }> {
    const env = { ...process.env };
    if (this.cfg.criuConfigFile) env.CRIU_CONFIG_FILE = this.cfg.criuConfigFile;
    const args = ['--root', runcRoot, '--criu', this.cfg.criu, 'checkpoint', '--tcp-established', '--image-path', imagesDir, '--work-path', workDir, id];
    // CRIU freezes a cgroup-v1 container by writing FROZEN and then sleeping 100 ms before it looks again.
    // Freezing it ourselves and polling every millisecond takes that 100 ms out of every freeze; CRIU finds
    // the cgroup already frozen and goes straight on.
    const freezer = await freezerStateFile(pid);
    // Pre-copy's last dirty scan must see a container that can no longer write: only our own freeze gives that.
    if (onFrozen && !freezer) throw new FerryError('E_PRECONDITION', 'pre-copy needs the cgroup v1 freezer');
    const frozenAt = performance.now();
    if (freezer) await freeze(freezer, signal);
    let r;
    try {
      if (onFrozen) await onFrozen();
      r = await run(this.cfg.runc, args, { signal, env, allowFailure: true });
    } finally {
      // After a dump the tasks hold a pending SIGKILL and die on thaw; after a failure they resume.
      if (freezer) await writeFile(freezer, 'THAWED').catch(() => undefined);
    }
    if (r.code !== 0) {
      const log = join(workDir, 'dump.log');
      throw new FerryError('E_CRIU_DUMP', `checkpoint of ${id.slice(0, 12)} failed: ${await firstCriuError(log) ?? r.stderr.trim().slice(-400)}`, { details: { log } });
    }
    return { frozenAt };
  }
}

/** CRIU's first "Error (" line is the cause; everything after it is fallout. */
export async function firstCriuError(logPath: string): Promise<string | null> {
  try {
    const text = await readFile(logPath, 'utf8');
    // The RLIMIT_NOFILE complaint appears in every run here and is harmless.
    const line = text.split('\n').find((l) => l.includes('Error (') && !l.includes('RLIMIT_NOFILE'));
    return line?.trim() ?? null;
  } catch {
    return null;
  }
}

/** The cgroup-v1 freezer state file of the process's cgroup, or null where there is none (cgroup v2). */
export async function freezerStateFile(pid: number): Promise<string | null> {
  try {
    const line = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n').find((l) => /^\d+:freezer:/.test(l));
    if (!line) return null;
    const path = `/sys/fs/cgroup/freezer${line.slice(line.indexOf(':freezer:') + 9)}/freezer.state`;
    await readFile(path, 'utf8');
    return path;
  } catch {
    return null;
  }
}

const FREEZE_TIMEOUT_MS = 2_000;

/** Freezes the cgroup and waits, polling each millisecond, until the kernel reports every task frozen. */
export async function freeze(stateFile: string, signal: AbortSignal): Promise<void> {
  await writeFile(stateFile, 'FROZEN');
  const until = performance.now() + FREEZE_TIMEOUT_MS;
  while ((await readFile(stateFile, 'utf8')).trim() !== 'FROZEN') {
    if (signal.aborted || performance.now() > until) {
      await writeFile(stateFile, 'THAWED').catch(() => undefined);
      throw new FerryError(signal.aborted ? 'E_ABORTED' : 'E_CRIU_DUMP', `cgroup did not freeze within ${FREEZE_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}
