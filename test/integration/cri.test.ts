// Real containerd 1.6 with CRI (scripts/containerd.sh) driven by the kubelet stand-in: a hostNetwork Redis pod
// on the `runc` handler starts, serves, is deleted the way kubelet deletes it, and the host leaves nothing behind.

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CriClient } from '../../src/cri/client.js';
import { KubeletStandIn, type DeletePodResult, type RunPodResult } from '../../src/cri/kubelet.js';
import { criHostPaths } from '../../src/cri/paths.js';
import { K8S, type PodSpec } from '../../src/cri/pod-config.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/cli/local-cluster.js';
import { RedisConn, waitFor } from './helpers.js';

const HOST = 'c-a';
const paths = criHostPaths(HOST);
const script = join(packageRoot(), 'scripts/containerd.sh');
const containerdSh = (...args: string[]) => run('bash', [script, ...args], { signal: AbortSignal.timeout(120_000) });

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Pids whose command line or cwd names one of the host's CRI dirs, and processes started from its bundles. */
function hostProcesses(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue;
    }
    if (cmd.includes(`${paths.runDir}/`) || cmd.includes(`${paths.rootDir}/`) || cmd.includes(paths.socket)) out.push(Number(p));
  }
  return out;
}

const hostMounts = (): string[] =>
  readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '')
    .filter((m) => [paths.runDir, paths.rootDir].some((d) => m === d || m.startsWith(`${d}/`)));

/** Whether anything listens on 127.0.0.1:port (from /proc/net/tcp, so no connection attempt is needed). */
function listening(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[1]?.endsWith(hex) === true && f[3] === '0A';
  });
}

describe('CRI: kubelet sequences against real containerd', () => {
  let cri: CriClient;
  let kubelet: KubeletStandIn;
  let port: number;
  let started: RunPodResult;
  let deleted: DeletePodResult;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    await containerdSh('down', HOST);   // a crashed earlier run
    const t0 = performance.now();
    await containerdSh('up', HOST);
    timings['containerd.sh up'] = performance.now() - t0;
    cri = new CriClient(paths.socket);
    kubelet = new KubeletStandIn(cri, paths);
    port = await freePort();
  });
  afterAll(async () => {
    cri?.close();
    await containerdSh('down', HOST);
    console.log(`CRI timings (ms): ${JSON.stringify(timings)}`);
  });

  it('reports containerd 1.6 on CRI v1', async () => {
    const v = await cri.version(AbortSignal.timeout(10_000));
    expect(v.runtime_name).toBe('containerd');
    expect(v.runtime_version).toMatch(/^1\.6\./);
    expect(v.runtime_api_version).toBe('v1');
  });

  it('runs a hostNetwork Redis pod with the runc handler', async () => {
    const pod: PodSpec = {
      name: 'redis-0', namespace: 'default', uid: `uid-${port}`, runtimeHandler: 'runc',
      labels: { app: 'redis' }, annotations: { 'ferry.dev/migrate': 'false' }, terminationGracePeriodSeconds: 5,
      containers: [{ name: 'redis', image: 'ferry/redis:7', command: ['redis-server'], args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'] }],
    };
    started = await kubelet.runPod(pod, AbortSignal.timeout(60_000));
    expect(started.steps.filter((s) => s.error).map((s) => `${s.step}: ${s.error?.message}`)).toEqual([]);
    expect(started.ok).toBe(true);
    for (const s of started.steps) timings[s.step] = s.ms;

    const sb = await cri.podSandboxStatus(started.podId);
    expect(sb.status?.state).toBe('SANDBOX_READY');
    expect(sb.status?.labels[K8S.podUid]).toBe(pod.uid);
    expect(sb.status?.runtime_handler).toBe('runc');
    const cs = await cri.containerStatus(started.containers['redis']!);
    expect(cs.status?.state).toBe('CONTAINER_RUNNING');
    expect(cs.status?.labels[K8S.containerName]).toBe('redis');
    expect(cs.status?.annotations[K8S.terminationGracePeriod]).toBe('5');

    await waitFor(() => listening(port), (x) => x, 15_000, `redis on 127.0.0.1:${port}`);
    const r = await RedisConn.open(port);
    try {
      expect(await r.cmd('SET', 'ferry', 'cri')).toBe('+OK');
      expect(await r.cmd('STRLEN', 'ferry')).toBe(':3');
      expect(await r.cmd('EXISTS', 'ferry')).toBe(':1');
    } finally {
      r.close();
    }
  });

  it('deletes the pod as kubelet does and nothing of it is left', async () => {
    const pids = hostProcesses();
    deleted = await kubelet.deletePod(started.podId, 5, AbortSignal.timeout(60_000));
    expect(deleted.steps.filter((s) => s.error).map((s) => `${s.step}: ${s.error?.message}`)).toEqual([]);
    expect(deleted.ok).toBe(true);
    expect(deleted.steps.map((s) => s.step)).toEqual(['StopContainer', 'StopPodSandbox', 'RemoveContainer', 'RemovePodSandbox', 'RemovePodCgroup']);
    for (const s of deleted.steps) timings[s.step] = s.ms;
    expect(await cri.listContainers()).toEqual([]);
    expect(await cri.listPodSandbox()).toEqual([]);
    expect(listening(port)).toBe(false);
    // The shim exits after its last task is deleted; containerd itself stays.
    await waitFor(() => hostProcesses().filter((p) => pids.includes(p)), (left) => left.length === 1, 10_000, 'only containerd left');
    const runcRoot = join(paths.runcRoot, 'k8s.io');
    expect(existsSync(runcRoot) ? readdirSync(runcRoot) : []).toEqual([]);
  });

  it('a call on a removed container is a typed NOT_FOUND, not a crash', async () => {
    const err = await cri.stopContainer(started.containers['redis']!, 2).then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_NOT_FOUND', details: { method: 'StopContainer', grpcCode: 5 } });
  });

  it('containerd.sh down leaves no process, mount or directory', async () => {
    await containerdSh('down', HOST);
    expect(hostProcesses()).toEqual([]);
    expect(hostMounts()).toEqual([]);
    expect(existsSync(paths.runDir)).toBe(false);
    expect(existsSync(paths.rootDir)).toBe(false);
    expect(existsSync(`/sys/fs/cgroup/memory${paths.cgroupRoot}`)).toBe(false);
    const err = await cri.version(AbortSignal.timeout(5_000)).then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_UNAVAILABLE', details: { grpcCode: 14 } });
  });
});
