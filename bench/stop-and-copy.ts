// Benchmark: Ferry's stop-and-copy against Docker's checkpoint path and raw CRIU (dump + copy + restore),
// on the same memhog workload, measured in the same run. Prints JSON.
//
// Freeze = what a client outside the container sees: the longest gap between two answered pings on one
// TCP connection that stays open across the move. Also reported: each tool's own wall time and bytes.

import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, release, totalmem } from 'node:os';
import Docker from 'dockerode';
import { ControllerApi } from '../src/protocol/index.js';
import { dial } from '../src/rpc/handshake.js';
import { silentLogger } from '../src/log/logger.js';
import { clusterFile, loadCluster, type HostConfig } from '../src/cluster.js';
import { run } from '../src/util/exec.js';
import { PORT, Pinger, memhogCmd, round, startMemhog, waitPongs } from './lib.js';

const SIZES = (process.env.BENCH_SIZES ?? '64,256,1024').split(',').map(Number);
const CRIU = '/opt/ferry/bin/criu';

interface Result { freezeMs: number; toolMs: number; bytes: number; verify: string; pingErrors: number; connectionKept: boolean }

async function measure(p: Pinger, act: () => Promise<{ toolMs: number; bytes: number }>): Promise<Result> {
  await waitPongs(p, 200);
  p.maxGap = 0;
  const r = await act();
  await waitPongs(p, 200);
  const verify = await p.command('verify');
  return { freezeMs: round(p.maxGap), toolMs: round(r.toolMs), bytes: r.bytes, verify, pingErrors: p.errors, connectionKept: p.broken === null };
}


async function benchFerry(a: HostConfig, b: HostConfig, mib: number, secret: string, url: string): Promise<Result> {
  const name = 'bench-ferry';
  await startMemhog(new Docker({ socketPath: a.dockerSocket }), name, mib);
  const p = await Pinger.open(PORT);
  p.start();
  const { conn } = await dial({ url, name: 'bench', role: 'cli', serverRole: 'controller', secret, log: silentLogger() });
  try {
    return await measure(p, async () => {
      const r = await conn.request(ControllerApi.StartMigration, { container: name, to: b.name, dryRun: false, timeoutMs: 600_000 });
      if (r.result !== 'succeeded') throw new Error(`ferry migration ${r.result}: ${r.error?.message}`);
      return { toolMs: r.downtimeMs ?? NaN, bytes: r.bytesTotal };
    });
  } finally {
    p.close();
    conn.close();
    for (const h of [a, b]) await new Docker({ socketPath: h.dockerSocket }).getContainer(name).remove({ force: true }).catch(() => undefined);
  }
}

async function benchDocker(a: HostConfig, b: HostConfig, mib: number): Promise<Result> {
  const name = 'bench-docker';
  const da = new Docker({ socketPath: a.dockerSocket });
  const db = new Docker({ socketPath: b.dockerSocket });
  await startMemhog(da, name, mib);
  const cpDir = '/dev/shm/ferry-bench/docker';
  rmSync(cpDir, { recursive: true, force: true });
  mkdirSync(cpDir, { recursive: true });
  const p = await Pinger.open(PORT);
  p.start();
  try {
    return await measure(p, async () => {
      const t0 = performance.now();
      // docker checkpoint create --checkpoint-dir, create on B, copy into B's checkpoints dir, docker start --checkpoint.
      await (da.getContainer(name) as unknown as { createCheckpoint(o: object): Promise<void> }).createCheckpoint({ CheckpointID: 'cp1', CheckpointDir: cpDir, Exit: true });
      const c = await db.createContainer({ name, Image: 'ferry/memhog:1', Hostname: name, Cmd: memhogCmd(mib), HostConfig: { NetworkMode: 'host' } });
      const info = (await db.info()) as { DockerRootDir: string };
      const dst = join(info.DockerRootDir, 'containers', c.id, 'checkpoints');
      mkdirSync(dst, { recursive: true });
      cpSync(join(cpDir, 'cp1'), join(dst, 'cp1'), { recursive: true });
      await c.start({ _query: { checkpoint: 'cp1' }, _body: {} } as object);
      return { toolMs: performance.now() - t0, bytes: dirBytes(join(cpDir, 'cp1')) };
    });
  } finally {
    p.close();
    await da.getContainer(name).remove({ force: true }).catch(() => undefined);
    await db.getContainer(name).remove({ force: true }).catch(() => undefined);
    rmSync(cpDir, { recursive: true, force: true });
    // containerd leaks a copy of every restored checkpoint (platform/docker.md §7).
    for (const h of [a, b]) {
      const tmp = `/var/lib/ferry/hosts/${h.name}/tmp`;
      for (const n of safeList(tmp)) if (n.startsWith('ctrd-checkpoint')) rmSync(join(tmp, n), { recursive: true, force: true });
    }
  }
}

/** The floor: CRIU alone on the same program outside any container, images on tmpfs, copied with cp. */
async function benchRawCriu(mib: number): Promise<Result> {
  const root = '/dev/shm/ferry-bench/raw';
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, 'a'), { recursive: true });
  mkdirSync(join(root, 'b'), { recursive: true });
  const memhog = '/var/cache/ferry/memhog'; // the same static binary as in the ferry/memhog image
  const child: ChildProcess = spawn('unshare', ['--pid', '--fork', 'setsid', memhog, ...memhogCmd(mib).slice(1)], { stdio: 'ignore', detached: true });
  const p = await Pinger.open(PORT);
  p.start();
  // unshare's child is the new namespace's init: memhog itself (setsid execs in place when it can).
  const pid = Number((await run('pgrep', ['-P', String(child.pid)])).stdout.trim().split('\n')[0]);
  try {
    return await measure(p, async () => {
      const t0 = performance.now();
      const d = await run(CRIU, ['dump', '-t', String(pid), '-D', join(root, 'a'), '--tcp-established', '--shell-job', '-o', 'dump.log'], { allowFailure: true });
      if (d.code !== 0) throw new Error(`raw criu dump failed: ${(await run('grep', ['Error', join(root, 'a', 'dump.log')], { allowFailure: true })).stdout.slice(0, 500)}`);
      for (const f of readdirSync(join(root, 'a'))) cpSync(join(root, 'a', f), join(root, 'b', f));
      await run(CRIU, ['restore', '-D', join(root, 'b'), '-d', '--tcp-established', '--shell-job', '-o', 'restore.log', '--pidfile', join(root, 'pid')]);
      return { toolMs: performance.now() - t0, bytes: dirBytes(join(root, 'a')) };
    });
  } finally {
    p.close();
    // The restored copy lives in a pid namespace of its own, no longer under unshare: kill it by pid.
    try { process.kill(Number(readFileSync(join(root, 'pid'), 'utf8')), 'SIGKILL'); } catch { /* not restored */ }
    try { process.kill(pid, 'SIGKILL'); } catch { /* dumped, so gone */ }
    child.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  }
}

const safeList = (d: string): string[] => { try { return readdirSync(d); } catch { return []; } };
const dirBytes = (d: string): number => readdirSync(d).reduce((n, f) => n + statSync(join(d, f)).size, 0);

async function main(): Promise<void> {
  const cluster = loadCluster(clusterFile());
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('need two hosts');
  const rows = [];
  for (const mib of SIZES) {
    process.stderr.write(`bench: ${mib} MiB …\n`);
    const raw = await benchRawCriu(mib);
    const ferry = await benchFerry(a, b, mib, cluster.secret, cluster.controller.url);
    const docker = await benchDocker(a, b, mib);
    rows.push({
      mib,
      ferry, docker, rawCriu: raw,
      ferryFreezeVsRaw: round(ferry.freezeMs / raw.freezeMs * 100) / 100,
      dockerFreezeVsFerry: round(docker.freezeMs / ferry.freezeMs * 100) / 100,
    });
  }
  const out = {
    benchmark: 'stop-and-copy',
    date: new Date().toISOString(),
    machine: { kernel: release(), cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30) },
    workload: 'memhog: N MiB of touched anonymous memory, idle writer; client pings over one TCP connection',
    model: 'platform model for raw CRIU: freeze ≈ 0.1 s + 1.9 s/GiB',
    targets: { ferryFreezeVsRaw: '≤ 1.3', dockerFreezeVsFerry: '≥ 5 at 1 GiB' },
    rows,
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  rmSync('/dev/shm/ferry-bench', { recursive: true, force: true });
}

main().catch((e: unknown) => { process.stderr.write(`bench failed: ${(e as Error).stack}\n`); process.exit(1); });
