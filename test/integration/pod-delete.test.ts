// Pod deletion becomes a migration: real containerd + CRI on two hosts (scripts/containerd.sh), Ferry's shim
// (containerd-shim-ferry-v1) on the `ferry` runtime handler, the test cluster's agents and controller, and a
// kubelet stand-in per host doing exactly kubelet's CRI calls. The test plays the pod's owner: once the
// deletion has begun, it creates the replacement pod on the other host, as a ReplicaSet would.

import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CriClient } from '../../src/cri/client.js';
import { KubeletStandIn, type Step } from '../../src/cri/kubelet.js';
import type { Connection } from '../../src/rpc/connection.js';
import { criHostPaths } from '../../src/cri/paths.js';
import type { PodSpec } from '../../src/cri/pod-config.js';
import { ClusterEvent, ControllerApi, type MigrationReport } from '../../src/protocol/index.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/cli/local-cluster.js';
import { RedisConn, cluster, controller, expectNoResidue, lineCommand, waitFor } from './helpers.js';
import { TEST_CLUSTER_FILE, TEST_HOSTS } from './cluster.js';

const [A, B] = TEST_HOSTS;
const script = join(packageRoot(), 'scripts/containerd.sh');
const containerdSh = (...args: string[]) => run('bash', [script, ...args], { signal: AbortSignal.timeout(180_000) });
const PORT = 28310;

const redisPod = (name: string, uid: string, annotations: Record<string, string>, port = PORT): PodSpec => ({
  name, namespace: 'default', uid, runtimeHandler: 'ferry', annotations, terminationGracePeriodSeconds: 30,
  containers: [{ name: 'redis', image: 'ferry/redis:7', command: ['redis-server'], args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'] }],
});

/** Pids of redis-server processes listening on `port` anywhere on this machine (all hosts share it). */
function redisListeners(port: number): number[] {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set(readFileSync('/proc/net/tcp', 'utf8').split('\n').map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(hex) && f[3] === '0A').map((f) => f[9]));
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() !== 'redis-server') continue;
      for (const fd of readdirSync(`/proc/${p}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSafe(`/proc/${p}/fd/${fd}`));
        if (m && inodes.has(m[1])) { out.push(Number(p)); break; }
      }
    } catch { /* gone meanwhile */ }
  }
  return out;
}
function readlinkSafe(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}

/** Whether the host's shim log has a line with `msg` about pod `pod` (what the shim is doing, as it says). */
function shimLogHas(host: string, msg: string, pod: string): boolean {
  const f = `/var/log/ferry/shim-${host}.log`;
  if (!existsSync(f)) return false;
  return readFileSync(f, 'utf8').split('\n').some((l) => l.includes(`"msg":"${msg}"`) && l.includes(`"pod":"${pod}"`));
}

/** The CRI calls kubelet saw fail, as `Step: message` (empty when the pod ran or went as asked). */
const stepErrors = (r: { steps: Step[] }): string[] => r.steps.filter((s) => s.error).map((s) => `${s.step}: ${s.error?.message}`);

/** A controller connection collecting the final report of every migration (cluster events). */
async function watchReports(): Promise<{ ctl: Connection; reports: MigrationReport[] }> {
  const ctl = await controller();
  const reports: MigrationReport[] = [];
  ctl.on('event', (m, p) => {
    const e = ClusterEvent.payload.safeParse(p);
    if (m === ClusterEvent.name && e.success && e.data.type === 'migration') reports.push((e.data.data as { report: MigrationReport }).report);
  });
  await ctl.request(ControllerApi.WatchEvents, {});
  return { ctl, reports };
}

/** The init pid runc-v2 recorded for a pod container of a host. */
function initPid(host: string, id: string): number {
  return Number(readFileSync(join(criHostPaths(host).runDir, 'state/io.containerd.runtime.v2.task/k8s.io', id, 'init.pid'), 'utf8'));
}

/** Migrations staged on a host's agent for a pod (the agent's own state files). */
function staged(host: string): { migrationId: string; pulled: boolean }[] {
  const dir = cluster().hosts.find((h) => h.name === host)!.dataDir;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => n.startsWith('m-')).flatMap((n) => {
    try {
      const s = JSON.parse(readFileSync(join(dir, n, 'state.json'), 'utf8')) as { role: string; pod: unknown; pulled: boolean; migrationId: string };
      return s.role === 'target' && s.pod ? [{ migrationId: s.migrationId, pulled: s.pulled }] : [];
    } catch {
      return [];
    }
  });
}

/** A client writing INCR + RPUSH over one connection, checking each reply continues the sequence. */
class Writer {
  acked = 0;
  errors: string[] = [];
  private stopped = false;
  private done: Promise<void>;
  constructor(readonly conn: RedisConn) {
    this.done = (async () => {
      while (!this.stopped) {
        const n = await conn.cmd('INCR', 'counter');
        if (n !== `:${this.acked + 1}`) this.errors.push(`INCR gave ${n}, expected ${this.acked + 1}`);
        const l = await conn.cmd('RPUSH', 'log', String(this.acked + 1));
        if (l !== `:${this.acked + 1}`) this.errors.push(`RPUSH gave ${l}`);
        this.acked++;
      }
    })();
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

describe('pod deletion through the containerd shim', () => {
  const pa = criHostPaths(A);
  const pb = criHostPaths(B);
  let criA: CriClient;
  let criB: CriClient;
  let kubeA: KubeletStandIn;
  let kubeB: KubeletStandIn;

  beforeAll(async () => {
    await containerdSh('down', A, B);
    await containerdSh('up', A, B, '--cluster', TEST_CLUSTER_FILE);
    criA = new CriClient(pa.socket);
    criB = new CriClient(pb.socket);
    kubeA = new KubeletStandIn(criA, pa);
    kubeB = new KubeletStandIn(criB, pb);
  });
  afterAll(async () => {
    criA?.close();
    criB?.close();
    await containerdSh('down', A, B);
  });

  it('an opted-in pod deleted on one host continues on the other with every acknowledged write', async () => {
    const spec = redisPod('redis-0', 'uid-a-1', { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B });
    const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
    expect(stepErrors(started)).toEqual([]);
    await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('SET', 'hello', 'world')).toBe('+OK');

    // containerd restarts underneath a running pod: it must find our shim again from the bundle's address file.
    const ctrdPid = Number(readFileSync(join(pa.runDir, 'containerd.pid'), 'utf8'));
    process.kill(ctrdPid, 'SIGKILL');
    await waitFor(() => { try { process.kill(ctrdPid, 0); return false; } catch { return true; } }, (x) => x, 10_000, 'containerd gone');
    await containerdSh('up', A, '--cluster', TEST_CLUSTER_FILE);
    const after = await criA.containerStatus(started.containers['redis']!);
    expect(after.status?.state).toBe('CONTAINER_RUNNING');

    const writer = new Writer(conn);
    await waitFor(() => writer.acked, (n) => n >= 200, 10_000, 'writes before the deletion');
    // The owner creates the replacement as the old pod goes, as a ReplicaSet would: both start together.
    const deletion = kubeA.deletePod(started.podId, 30, AbortSignal.timeout(120_000));
    const replacement = kubeB.runPod({ ...spec, uid: 'uid-b-1' }, AbortSignal.timeout(120_000));
    const [del, rep] = await Promise.all([deletion, replacement]);
    expect(stepErrors(del)).toEqual([]);
    expect(stepErrors(rep)).toEqual([]);

    // The workload continues: the same TCP connection, the counter exact, the pre-deletion key there.
    const at = writer.acked;
    await waitFor(() => writer.acked, (n) => n >= at + 200, 20_000, 'writes after the migration');
    await writer.stop();
    expect(writer.errors).toEqual([]);
    expect(conn.closedWith).toBeNull();
    expect(await conn.cmd('LLEN', 'log')).toBe(`:${writer.acked}`);
    expect(await conn.cmd('EXISTS', 'hello')).toBe(':1');
    conn.close();

    // Exactly one copy runs, on the destination; the source host has nothing left of the pod.
    expect(redisListeners(PORT)).toHaveLength(1);
    expect(await criA.listContainers()).toEqual([]);
    expect(await criA.listPodSandbox()).toEqual([]);
    const rs = await criB.containerStatus(rep.containers['redis']!);
    expect(rs.status?.state).toBe('CONTAINER_RUNNING');
    // `ferry ps` sees the pod container where it now runs, and only there.
    const ctl = await controller();
    try {
      const listed = (await ctl.request(ControllerApi.ClusterContainers, { all: false })).filter((c) => c.name === 'default/redis-0/redis');
      expect(listed.map((c) => [c.host, c.id, c.state])).toEqual([[B, rep.containers['redis'], 'running']]);
    } finally {
      ctl.close();
    }
    await waitFor(() => staged(B), (s) => s.length === 0, 30_000, 'destination state released');

    // The replacement names its own host as destination: refused in preflight, before anything is touched,
    // and under the default policy the deletion then proceeds as it would without Ferry.
    const del2 = await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000));
    expect(del2.ok).toBe(true);
    expect(redisListeners(PORT)).toHaveLength(0);
    await expectNoResidue();
  });

  it('a replacement whose Create comes before the old pod\'s deletion waits for the migration instead of starting fresh', async () => {
    const spec = redisPod('early-0', 'uid-e-1', { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B });
    const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
    expect(started.ok).toBe(true);
    await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('SET', 'early', 'bird')).toBe('+OK');
    const replacement = kubeB.runPod({ ...spec, uid: 'uid-e-2' }, AbortSignal.timeout(120_000));
    // The replacement's shim is asking, and the old pod still runs on A: nothing may start on B yet.
    await waitFor(() => shimLogHas(B, 'replacement pod: asking whether migrated state is coming', 'early-0'), (x) => x, 30_000, 'the replacement asking');
    expect(redisListeners(PORT)).toHaveLength(1);
    const del = await kubeA.deletePod(started.podId, 30, AbortSignal.timeout(120_000));
    const rep = await replacement;
    expect(del.ok).toBe(true);
    expect(stepErrors(rep)).toEqual([]);
    expect(await conn.cmd('GET', 'early').catch((e: Error) => e.message)).not.toMatch(/connection/);
    expect(await conn.cmd('EXISTS', 'early')).toBe(':1');
    conn.close();
    expect(redisListeners(PORT)).toHaveLength(1);
    await waitFor(() => staged(B), (s) => s.length === 0, 30_000, 'destination state released');
    expect((await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000))).ok).toBe(true);
    await expectNoResidue();
  });

  it('a pod\'s /dev/shm and rw layer travel with it, and its memory continues', async () => {
    // The shell's counter lives in its memory; each value is also written to /dev/shm (the sandbox's tmpfs)
    // and the rw layer. A fresh start would count from 1 again and find neither file.
    const spec: PodSpec = {
      name: 'shm-0', namespace: 'default', uid: 'uid-m-1', runtimeHandler: 'ferry', terminationGracePeriodSeconds: 30,
      annotations: { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B },
      containers: [{ name: 'counter', image: 'ferry/busybox:1', command: ['sh', '-c', 'echo layer > /rwfile; echo once > /dev/shm/marker; i=0; while :; do i=$((i+1)); echo $i > /dev/shm/counter; sleep 0.02; done'] }],
    };
    const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
    expect(started.ok).toBe(true);
    const rootA = (): string => `/proc/${initPid(A, started.containers['counter']!)}/root`;
    const before = Number(await waitFor(() => readFileSync(`${rootA()}/dev/shm/counter`, 'utf8'), (v) => Number(v) >= 50, 15_000, 'the counter at 50'));
    const [del, rep] = await Promise.all([
      kubeA.deletePod(started.podId, 30, AbortSignal.timeout(120_000)),
      kubeB.runPod({ ...spec, uid: 'uid-m-2' }, AbortSignal.timeout(120_000)),
    ]);
    expect(del.ok).toBe(true);
    expect(stepErrors(rep)).toEqual([]);
    const rootB = `/proc/${initPid(B, rep.containers['counter']!)}/root`;
    expect(readFileSync(`${rootB}/rwfile`, 'utf8')).toBe('layer\n');
    // Written once, before the move: only the transfer can have put it into the new sandbox's tmpfs.
    expect(readFileSync(`${rootB}/dev/shm/marker`, 'utf8')).toBe('once\n');
    const after = Number(await waitFor(() => readFileSync(`${rootB}/dev/shm/counter`, 'utf8'), (v) => Number(v) > before, 15_000, 'the counter going on'));
    expect(after).toBeGreaterThan(before);
    expect((await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000))).ok).toBe(true);
    await expectNoResidue();
  });

  it('ferry.dev/mode: precopy moves a writing pod in rounds, and every page arrives exact', async () => {
    const { ctl, reports } = await watchReports();
    try {
      const HOG = 28321;
      const spec: PodSpec = {
        name: 'hog-0', namespace: 'default', uid: 'uid-h-1', runtimeHandler: 'ferry', terminationGracePeriodSeconds: 60,
        annotations: { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B, 'ferry.dev/mode': 'precopy' },
        containers: [{ name: 'hog', image: 'ferry/memhog:1', command: ['memhog', '--mib', '128', '--rate', '2000', '--pattern', 'random', '--port', String(HOG)] }],
      };
      const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
      expect(stepErrors(started)).toEqual([]);
      await waitFor(() => lineCommand(HOG, 'verify'), (r) => r === 'ok 32768', 30_000, 'memhog to answer');
      const [del, rep] = await Promise.all([
        kubeA.deletePod(started.podId, 60, AbortSignal.timeout(120_000)),
        kubeB.runPod({ ...spec, uid: 'uid-h-2' }, AbortSignal.timeout(120_000)),
      ]);
      expect(stepErrors(del)).toEqual([]);
      expect(stepErrors(rep)).toEqual([]);
      const r = await waitFor(() => reports.find((x) => x.container === 'default/hog-0/hog'), (x) => x !== undefined, 60_000, 'the report');
      expect(r).toMatchObject({ result: 'succeeded', strategy: 'precopy' });
      expect(r?.rounds?.length).toBeGreaterThan(0);
      // memhog's own oracle: every page consistent with exactly one write history, on the destination.
      expect(await lineCommand(HOG, 'verify')).toBe('ok 32768');
      await waitFor(() => staged(B), (s) => s.length === 0, 60_000, 'destination state released (fill done)');
      expect(await lineCommand(HOG, 'verify')).toBe('ok 32768');
      expect((await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000))).ok).toBe(true);
      await expectNoResidue();
    } finally {
      ctl.close();
    }
  });

  it('StatefulSet order (ferry.dev/release: staged): the deletion completes first, the same-named replacement restores later', async () => {
    const { ctl, reports } = await watchReports();
    try {
      const spec = redisPod('db-0', 'uid-s-1', { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B, 'ferry.dev/release': 'staged' });
      const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
      expect(started.ok).toBe(true);
      await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
      const conn = await RedisConn.open(PORT);
      expect(await conn.cmd('SET', 'hello', 'statefulset')).toBe('+OK');
      const writer = new Writer(conn);
      await waitFor(() => writer.acked, (n) => n >= 200, 10_000, 'writes before the deletion');

      // kubelet finishes the deletion on its own: the old pod is gone before any replacement exists.
      const del = await kubeA.deletePod(started.podId, 30, AbortSignal.timeout(60_000));
      expect(stepErrors(del)).toEqual([]);
      expect(await criA.listContainers()).toEqual([]);
      expect(await criA.listPodSandbox()).toEqual([]);
      expect(staged(B)).toEqual([expect.objectContaining({ pulled: true })]);
      expect(redisListeners(PORT)).toHaveLength(0);
      expect(reports.filter((r) => r.container === 'default/db-0/redis')).toEqual([]);

      // Only now does the StatefulSet create db-0 again (the scheduler put it on B); its shim restores it.
      const rep = await kubeB.runPod({ ...spec, uid: 'uid-s-2' }, AbortSignal.timeout(120_000));
      expect(stepErrors(rep)).toEqual([]);
      const r = await waitFor(() => reports.find((x) => x.container === 'default/db-0/redis'), (x) => x !== undefined, 30_000, 'the final report');
      expect(r?.result).toBe('succeeded');

      // The client's writes were only ever delayed: same connection, nothing lost or repeated.
      const at = writer.acked;
      await waitFor(() => writer.acked, (n) => n >= at + 200, 30_000, 'writes after the replacement restored');
      await writer.stop();
      expect(writer.errors).toEqual([]);
      expect(conn.closedWith).toBeNull();
      expect(await conn.cmd('LLEN', 'log')).toBe(`:${writer.acked}`);
      expect(await conn.cmd('EXISTS', 'hello')).toBe(':1');
      conn.close();
      expect(redisListeners(PORT)).toHaveLength(1);
      await waitFor(() => staged(B), (s) => s.length === 0, 30_000, 'destination state released');
      expect((await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000))).ok).toBe(true);
      await expectNoResidue();
    } finally {
      ctl.close();
    }
  });

  it('a replacement that never comes: the pod is reported lost, the deletion proceeds, nothing is left', async () => {
    const { ctl, reports } = await watchReports();
    try {
      // A 5 s grace period leaves the migration 3 s: enough to dump and stage, not to wait for an owner that never acts.
      const spec = { ...redisPod('orphan-0', 'uid-o-1', { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B }), terminationGracePeriodSeconds: 5 };
      const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
      expect(started.ok).toBe(true);
      await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
      const del = await kubeA.deletePod(started.podId, 5, AbortSignal.timeout(60_000));
      expect(del.ok).toBe(true);
      const r = await waitFor(() => reports.find((x) => x.container === 'default/orphan-0/redis'), (x) => x !== undefined, 30_000, 'the migration report');
      expect(r?.result).toBe('lost');
      expect(r?.error?.code).toBe('E_LOST');
      expect(redisListeners(PORT)).toHaveLength(0);
      expect(staged(B)).toEqual([]);
      await expectNoResidue();
    } finally {
      ctl.close();
    }
  });

  it('a pod without the annotation is killed normally', async () => {
    const started = await kubeA.runPod(redisPod('plain-0', 'uid-p-1', {}), AbortSignal.timeout(60_000));
    expect(started.ok).toBe(true);
    await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
    const del = await kubeA.deletePod(started.podId, 30, AbortSignal.timeout(60_000));
    expect(del.ok).toBe(true);
    expect(redisListeners(PORT)).toHaveLength(0);
    expect(staged(B)).toEqual([]);
  });

  it('on-failure: refuse keeps the container running and refuses the deletion; a retry after the cause is gone migrates', async () => {
    const spec = redisPod('keep-0', 'uid-k-1', { 'ferry.dev/migrate': 'true', 'ferry.dev/to': B, 'ferry.dev/on-failure': 'refuse' });
    const started = await kubeA.runPod(spec, AbortSignal.timeout(60_000));
    expect(started.ok).toBe(true);
    await waitFor(() => redisListeners(PORT).length, (n) => n === 1, 15_000, 'redis listening');
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('SET', 'kept', 'yes')).toBe('+OK');
    const ctl = await controller();
    try {
      // The destination is cordoned: the migration is refused before anything is touched.
      await ctl.request(ControllerApi.Cordon, { host: B, cordoned: true });
      const del = await kubeA.deletePod(started.podId, 30, AbortSignal.timeout(60_000));
      const stop = del.steps.find((s) => s.step === 'StopContainer');
      expect(stop?.error?.details).toMatchObject({ grpcCode: 9 });
      expect(stop?.error?.message).toMatch(/refused/);
      expect(await conn.cmd('GET', 'kept').catch(() => 'gone')).not.toBe('gone');
      expect(conn.closedWith).toBeNull();
      expect(redisListeners(PORT)).toHaveLength(1);

      // kubelet retries; now there is somewhere to go. containerd sends a container's stop signal only once,
      // so the retry waits out its grace period and comes as SIGKILL, which the shim holds for a new attempt.
      await ctl.request(ControllerApi.Cordon, { host: B, cordoned: false });
      const retry = kubeA.deletePod(started.podId, 3, AbortSignal.timeout(120_000));
      const rep = await kubeB.runPod({ ...spec, uid: 'uid-k-2' }, AbortSignal.timeout(120_000));
      expect((await retry).ok).toBe(true);
      expect(rep.ok).toBe(true);
      expect(await conn.cmd('EXISTS', 'kept')).toBe(':1');
      conn.close();
      expect(redisListeners(PORT)).toHaveLength(1);
      // The replacement names its own host as destination and refuses: its deletion is refused too (afterAll's
      // containerd.sh down removes it).
      expect((await kubeB.deletePod(rep.podId, 2, AbortSignal.timeout(60_000))).ok).toBe(false);
      expect(redisListeners(PORT)).toHaveLength(1);
    } finally {
      await ctl.request(ControllerApi.Cordon, { host: B, cordoned: false }).catch(() => undefined);
      ctl.close();
    }
  });
});
