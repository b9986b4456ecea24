// A container's cgroups (v1 here), as far as pre-copy needs them: its processes and a CPU throttle we can undo.

import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { FerryError } from '../../src/protocol/index.js';

/** The mount-relative path of `pid`'s cgroup in `controller` (v1), or null. */
async function cgroupPath(pid: number, controller: string): Promise<string | null> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n');
  for (const l of lines) {
    const [, ctrls, path] = l.split(':');
    if (ctrls !== undefined && path !== undefined && ctrls.split(',').includes(controller)) return path;
  }
  return null;
}

/** Host pids of every process in the container whose init is `pid` (freezer hierarchy: what CRIU dumps). */
export async function containerProcs(pid: number): Promise<number[]> {
  const path = await cgroupPath(pid, 'freezer');
  if (path === null) throw new FerryError('E_PRECONDITION', `process ${pid} has no freezer cgroup (cgroup v1 expected)`);
  const text = await readFile(`/sys/fs/cgroup/freezer${path}/cgroup.procs`, 'utf8');
  return text.split('\n').filter(Boolean).map(Number);
}

/** The pid of `hostPid` inside its innermost pid namespace: the N of CRIU's pagemap-N.img. */
export async function nsPidOf(hostPid: number): Promise<number> {
  const line = (await readFile(`/proc/${hostPid}/status`, 'utf8')).split('\n').find((l) => l.startsWith('NSpid:'));
  const last = line?.trim().split(/\s+/).at(-1);
  const n = Number(last);
  if (!Number.isInteger(n) || n <= 0) throw new FerryError('E_INTERNAL', `no NSpid for ${hostPid}`);
  return n;
}

/**
 * Auto-converge's lever: a CFS quota on the container's cpu cgroup. The original quota is remembered by the
 * caller (it is persisted with the migration) so that it is put back on every path, a crash included.
 */
export class CpuThrottle {
  private constructor(private readonly dir: string, readonly originalQuotaUs: number, private readonly periodUs: number) {}

  static async of(pid: number): Promise<CpuThrottle> {
    const path = await cgroupPath(pid, 'cpu');
    if (path === null) throw new FerryError('E_PRECONDITION', `process ${pid} has no cpu cgroup`);
    const dir = `/sys/fs/cgroup/cpu${path}`;
    const quota = Number((await readFile(`${dir}/cpu.cfs_quota_us`, 'utf8')).trim());
    const period = Number((await readFile(`${dir}/cpu.cfs_period_us`, 'utf8')).trim());
    return new CpuThrottle(dir, quota, period);
  }

  /** Takes `fraction` (0..0.95) of the CPU the container may use away; 0 gives back the original quota. */
  async set(fraction: number): Promise<void> {
    if (!(fraction >= 0 && fraction <= 0.95)) throw new FerryError('E_INVALID_ARGUMENT', `throttle ${fraction} out of range`);
    if (fraction === 0) return this.restore();
    const allowed = this.originalQuotaUs > 0 ? this.originalQuotaUs : this.periodUs * cpus().length;
    await writeFile(`${this.dir}/cpu.cfs_quota_us`, String(Math.max(1000, Math.round(allowed * (1 - fraction)))));
  }

  async restore(): Promise<void> {
    await writeFile(`${this.dir}/cpu.cfs_quota_us`, String(this.originalQuotaUs));
  }

  static async restoreQuota(pid: number, quotaUs: number): Promise<void> {
    const path = await cgroupPath(pid, 'cpu');
    if (path !== null) await writeFile(`/sys/fs/cgroup/cpu${path}/cpu.cfs_quota_us`, String(quotaUs));
  }
}

/** Host pids of every process in the cgroup whose freezer.state file this is. */
export async function cgroupProcs(freezerState: string): Promise<number[]> {
  const text = await readFile(`${freezerState.slice(0, freezerState.lastIndexOf('/'))}/cgroup.procs`, 'utf8');
  return text.split('\n').filter(Boolean).map(Number);
}
