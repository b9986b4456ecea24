// Iterative pre-copy on the real stack: pages move in rounds while the container runs, the freeze only covers
// the last delta, and every page, write and connection survives.

import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentApi, type MigrationReport, type ProgressEvent } from '../../src/protocol/index.js';
import { agent, cluster, containersNamed, docker, expectNoResidue, expectOnlyOn, lineCommand, migrate, RedisConn, removeEverywhere, restartAgent, startMemhog, startRandomHog, startRedis, waitFor } from './helpers.js';

const [A, B] = ['t-a', 't-b'] as const;

function expectPrecopy(r: MigrationReport, from: string, to: string): void {
  expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', source: from, destination: to, strategy: 'precopy', error: null });
  expect(r.rounds?.length, 'rounds').toBeGreaterThanOrEqual(1);
  // Round 0 moved (nearly) everything while the container ran; the freeze shipped only a delta.
  expect(r.rounds![0]!.pages).toBeGreaterThan(0);
  expect(r.convergence?.reason).toBeTruthy();
  expect(r.phases['checkpoint.deltaPages']).toBeLessThan(r.rounds![0]!.pages);
  // The report's bytes are everything that crossed: the rounds and the final transfer.
  expect(r.bytesTotal).toBeGreaterThan(r.rounds!.reduce((n, x) => n + x.bytes, 0));
}

/** Host pid of the container's init, and whether any of its VMAs still carries a uffd-wp registration. */
async function trackedState(host: string, name: string): Promise<{ tracerPid: string; uffdVmas: number }> {
  const pid = (await docker(host).getContainer(name).inspect()).State.Pid;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  return {
    tracerPid: /TracerPid:\s*(\d+)/.exec(status)![1]!,
    uffdVmas: smaps.split('\n').filter((l) => l.startsWith('VmFlags:') && /\buw\b/.test(l)).length,
  };
}

describe('pre-copy: memhog page oracle', () => {
  const NAME = 'it-pre-memhog';
  const PORT = 28121;
  afterEach(async () => { await removeEverywhere(NAME); });

  it('moves 128 MiB there and back in rounds while 2000 random pages/s are written; every page exact', async () => {
    await startRandomHog(NAME, PORT, 128, 2000);
    const before = Number((await lineCommand(PORT, 'ping')).split(' ')[1]);
    for (const [from, to] of [[A, B], [B, A]] as const) {
      const events: ProgressEvent[] = [];
      const r = await migrate(NAME, to, { mode: 'precopy', maxRounds: 5 }, (e) => events.push(e));
      expectPrecopy(r, from, to);
      // Round 0 carries the whole working set; the rounds after it only what was written meanwhile.
      expect(r.rounds![0]!.pages).toBeGreaterThanOrEqual(32_768);
      for (const later of r.rounds!.slice(1)) expect(later.pages).toBeLessThan(r.rounds![0]!.pages / 2);
      // The pages written since the last round were read from the frozen task by the final scan, not fetched from CRIU one by one.
      expect(r.phases['checkpoint.deltaFromScan']).toBeGreaterThan(0);
      expect(r.phases['checkpoint.deltaFromScan']).toBeLessThanOrEqual(r.phases['checkpoint.deltaPages']!);
      // The progress stream showed every round as it happened.
      expect(events.filter((e) => e.phase === 'precopy' && e.state === 'progress').map((e) => e.round?.round)).toEqual(r.rounds!.map((x) => x.round));
      await expectOnlyOn(NAME, to);
      expect(await lineCommand(PORT, 'verify')).toBe('ok 32768');
      await expectNoResidue();
    }
    // Its state continued: the ping counter went on from where it was (no restart from zero).
    expect(Number((await lineCommand(PORT, 'ping')).split(' ')[1])).toBeGreaterThan(before);
  });

  it('memory that appears during the pre-copy arrives too', async () => {
    await startRandomHog(NAME, PORT, 64, 1000);
    let grown: Promise<string> | null = null;
    const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 4, maxDowntimeMs: 1 }, (e) => {
      // After round 0 has moved the original 64 MiB: 32 MiB more, in a new mapping the rounds must pick up.
      if (!grown && e.phase === 'precopy' && e.state === 'progress') grown = lineCommand(PORT, 'grow 32');
    });
    expect(await grown).toBe('ok 24576');
    expectPrecopy(r, A, B);
    expect(r.rounds!.length).toBeGreaterThanOrEqual(2);
    await expectOnlyOn(NAME, B);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 24576');
    await expectNoResidue();
  });

  it('a container of several processes: each one is tracked and arrives exact', async () => {
    const P2 = PORT + 1;
    // memhog as init, a second memhog as its child: two address spaces, one container.
    await startMemhog(NAME, ['sh', '-c', `memhog --mib 32 --rate 500 --port ${P2} & exec memhog --mib 48 --rate 500 --port ${PORT}`]);
    await waitFor(() => lineCommand(PORT, 'verify'), (r) => r === 'ok 12288', 30_000, 'memhog 1 to answer');
    await waitFor(() => lineCommand(P2, 'verify'), (r) => r === 'ok 8192', 30_000, 'memhog 2 to answer');
    const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 3 });
    expectPrecopy(r, A, B);
    expect(r.rounds![0]!.processes).toBe(2);
    await expectOnlyOn(NAME, B);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 12288');
    expect(await lineCommand(P2, 'verify')).toBe('ok 8192');
    await expectNoResidue();
  });
});

describe('pre-copy: rollback', () => {
  const NAME = 'it-pre-rollback';
  const PORT = 28124;
  afterEach(async () => {
    await removeEverywhere(NAME);
    await restartAgent(B);
  });

  it('a round that fails leaves the source running, untracked, with its CPU quota back', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'precopy-round-fail:2' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const quota = (await docker(A).getContainer(NAME).inspect()).State.Pid;
    const cpuPath = /(?:^|\n)\d+:cpu,cpuacct:(.*)|(?:^|\n)\d+:cpu:(.*)/.exec(readFileSync(`/proc/${quota}/cgroup`, 'utf8'));
    const quotaFile = `/sys/fs/cgroup/cpu${cpuPath![1] ?? cpuPath![2]}/cpu.cfs_quota_us`;
    const quotaBefore = readFileSync(quotaFile, 'utf8');
    // Auto-converge with an impossible target throttles the writer from round 1 on; the failure must undo it.
    const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 10, maxDowntimeMs: 1, autoConverge: true });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'rolled_back', strategy: 'precopy', error: { code: 'E_FAULT_INJECTED' } });
    await expectOnlyOn(NAME, A);
    expect(await trackedState(A, NAME)).toEqual({ tracerPid: '0', uffdVmas: 0 });
    expect(readFileSync(quotaFile, 'utf8')).toBe(quotaBefore);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectNoResidue();
  });
});

describe('pre-copy: rollback after the lazy final dump', () => {
  const NAME = 'it-pre-lazy-rollback';
  const PORT = 28126;
  afterEach(async () => {
    await removeEverywhere(NAME);
    await restartAgent(A);
    await restartAgent(B);
  });

  const dirtied = async (): Promise<number> => Number(/dirtied (\d+)/.exec(await lineCommand(PORT, 'stats'))![1]);

  it('a restore that fails after CRIU let the task go brings it back on the source from its mirror, every page exact', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'restore-fail' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const before = await dirtied();
    const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 4 });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'rolled_back', strategy: 'precopy', error: { code: 'E_CRIU_RESTORE' } });
    expect(r.phases['checkpoint.deltaFetch'], 'the lazy final phase ran').toBeGreaterThanOrEqual(0);
    await expectOnlyOn(NAME, A);
    // Its memory came back from the mirror and the delta: every page consistent, and the writer went on from
    // where it was frozen (its count never goes back).
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    expect(await dirtied()).toBeGreaterThanOrEqual(before);
    await expectNoResidue();
  });

  it('a failure while CRIU still holds the task lets the task run on where it was, untouched', async () => {
    await restartAgent(A, { FERRY_AGENT_FAULTS: 'lazy-delta-fail' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const pid = (await docker(A).getContainer(NAME).inspect()).State.Pid;
    const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 4 });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'rolled_back', error: { code: 'E_FAULT_INJECTED' } });
    await expectOnlyOn(NAME, A);
    // The same process, not a restored copy: CRIU was killed and the task detached and thawed.
    expect((await docker(A).getContainer(NAME).inspect()).State.Pid).toBe(pid);
    expect(await trackedState(A, NAME)).toEqual({ tracerPid: '0', uffdVmas: 0 });
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectNoResidue();
  });
});

describe('pre-copy: a container whose memory is still arriving', () => {
  const NAME = 'it-pre-filling';
  const PORT = 28127;
  const release = (): string => join(cluster().hosts.find((h) => h.name === B)!.dataDir, 'lazy-serve-release');
  afterEach(async () => {
    // A held page server keeps the restored task waiting on its faults; let it go before removing anything.
    writeFileSync(release(), '');
    await removeEverywhere(NAME);
    rmSync(release(), { force: true });
    await restartAgent(B);
  });

  it('is not moved again until every page has arrived; then it moves on exact', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'lazy-serve-hold' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const events: ProgressEvent[] = [];
    const first = migrate(NAME, B, { mode: 'precopy', maxRounds: 4 }, (e) => events.push(e));
    // Running on B, but B's page server answers nothing yet: most of its memory is still in flight.
    await waitFor(async () => (await containersNamed(B, NAME)).map((c) => c.State), (s) => s[0] === 'running', 60_000, 'the restored copy on B');
    // The caller is told why the migration has not returned yet.
    const waiting = await waitFor(() => events.find((e) => e.phase === 'cleanup' && e.state === 'started'), (e) => !!e, 30_000, 'the cleanup progress event');
    expect(waiting!.message).toContain(`running on ${B}`);
    // Neither the controller (the first migration still holds the container) nor B's agent itself (asked
    // directly, as a second controller would) lets it go anywhere now.
    await expect(migrate(NAME, A, { mode: 'precopy' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const b = await agent(B);
    try {
      await expect(b.request(AgentApi.InspectForMigration, { ref: NAME })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    } finally {
      b.close();
    }
    writeFileSync(release(), '');
    const r = await first;
    rmSync(release(), { force: true });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', destination: B });
    expect((r.checks ?? []).filter((c) => c.startsWith('cleanup pending'))).toEqual([]);
    expect(r.phases['cleanup.lazyFill'], 'the fill was waited for').toBeGreaterThan(0);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    expectPrecopy(await migrate(NAME, A, { mode: 'precopy', maxRounds: 4 }), B, A);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectOnlyOn(NAME, A);
    await expectNoResidue();
  });

  it('a fault storm on pages not arrived yet: every faulting process waits for its pages, none runs on zeros', async () => {
    const P2 = PORT + 1;
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'lazy-serve-hold' });
    await startMemhog(NAME, ['sh', '-c', `memhog --mib 32 --rate 0 --port ${P2} & exec memhog --mib 48 --rate 0 --port ${PORT}`]);
    await waitFor(() => lineCommand(PORT, 'verify'), (r) => r === 'ok 12288', 30_000, 'memhog 1 to answer');
    await waitFor(() => lineCommand(P2, 'verify'), (r) => r === 'ok 8192', 30_000, 'memhog 2 to answer');
    const moved = migrate(NAME, B, { mode: 'precopy', maxRounds: 2 });
    const id = await waitFor(async () => (await containersNamed(B, NAME)).find((c) => c.State === 'running')?.Id, (x) => !!x, 60_000, 'the restored copy on B');
    // Both processes read every page at once while B's page server holds them back.
    const checks = [lineCommand(PORT, 'verify'), lineCommand(P2, 'verify')];
    await waitFor(async () => threadsInUserfault(id!), (n) => n >= 2, 30_000, 'both processes to block on pages not arrived yet');
    writeFileSync(release(), '');
    expect(await Promise.all(checks)).toEqual(['ok 12288', 'ok 8192']);
    const r = await moved;
    rmSync(release(), { force: true });
    expectPrecopy(r, A, B);
    await expectOnlyOn(NAME, B);
    await expectNoResidue();
  });
});

/** Threads of the container's processes (host pids from its cgroup) that are blocked on a userfault. */
function threadsInUserfault(containerId: string): number {
  let n = 0;
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      if (!readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(containerId)) continue;
      for (const t of readdirSync(`/proc/${pid}/task`)) if (readFileSync(`/proc/${pid}/task/${t}/stack`, 'utf8').includes('handle_userfault')) n++;
    } catch {
      // The process went away while we looked.
    }
  }
  return n;
}

describe('--mode auto: measures the write rate, then picks', () => {
  const NAME = 'it-auto';
  const PORT = 28128;
  afterEach(async () => { await removeEverywhere(NAME); });

  it('a dry run reports the choice and leaves the container untracked', async () => {
    await startRandomHog(NAME, PORT, 64, 20_000);
    const r = await migrate(NAME, B, { mode: 'auto', dryRun: true });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'dry_run', strategy: 'stop-and-copy', modeChoice: { requested: 'auto', reason: 'heavy-writer' } });
    expect(r.modeChoice!.dirtyPagesPerSec!).toBeGreaterThan(5_000);
    expect(await trackedState(A, NAME)).toEqual({ tracerPid: '0', uffdVmas: 0 });
    await expectOnlyOn(NAME, A);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
  });

  it('a heavy random writer goes by stop-and-copy, an idle 256 MiB container by pre-copy; both arrive exact', async () => {
    await startRandomHog(NAME, PORT, 64, 20_000);
    const heavy = await migrate(NAME, B, { mode: 'auto' });
    expect(heavy, JSON.stringify(heavy)).toMatchObject({ result: 'succeeded', strategy: 'stop-and-copy', modeChoice: { reason: 'heavy-writer' } });
    expect(heavy.rounds).toBeUndefined();
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectOnlyOn(NAME, B);
    await removeEverywhere(NAME);

    await startRandomHog(NAME, PORT, 256, 0);
    const idle = await migrate(NAME, B, { mode: 'auto' });
    expectPrecopy(idle, A, B);
    expect(idle.modeChoice, JSON.stringify(idle.modeChoice)).toMatchObject({ requested: 'auto', reason: 'shorter-freeze' });
    expect(idle.modeChoice!.predictedPrecopyFreezeMs!).toBeLessThan(idle.modeChoice!.predictedStopCopyFreezeMs);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 65536');
    await expectOnlyOn(NAME, B);
    await expectNoResidue();
  });

  it('a large quiet container goes by post-copy, and arrives exact', async () => {
    // 640 MiB written once, then idle: post-copy's freeze does not grow with memory, pre-copy's does.
    await startRandomHog(NAME, PORT, 640, 0);
    const r = await migrate(NAME, B, { mode: 'auto' });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', strategy: 'postcopy', modeChoice: { requested: 'auto', reason: 'quiet-postcopy' } });
    expect(r.modeChoice!.predictedPostcopyFreezeMs!).toBeLessThan(r.modeChoice!.predictedPrecopyFreezeMs!);
    expect(r.rounds).toBeUndefined();
    expect(r.phases['cleanup.lazyFill'], 'the memory followed after the freeze').toBeGreaterThan(0);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 163840');
    await expectOnlyOn(NAME, B);
    await expectNoResidue();
  });
});

describe('pre-copy: Redis under a live client on one TCP connection', () => {
  const NAME = 'it-pre-redis';
  const PORT = 28125;
  const KEYS = 50_000;
  afterEach(async () => { await removeEverywhere(NAME); });

  it('keeps every acknowledged write and the connection', async () => {
    await startRedis(A, NAME, PORT);
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('DEBUG', 'POPULATE', String(KEYS), 'key', '128')).toBe('+OK');
    let acked = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        expect(await conn.cmd('INCR', 'counter')).toBe(`:${acked + 1}`);
        expect(await conn.cmd('RPUSH', 'log', String(acked + 1))).toBe(`:${acked + 1}`);
        acked++;
      }
    })();
    try {
      await expect.poll(() => acked, { timeout: 10_000 }).toBeGreaterThan(100);
      const r = await migrate(NAME, B, { mode: 'precopy', maxRounds: 4 });
      expectPrecopy(r, A, B);
      await expectOnlyOn(NAME, B);
      const at = acked;
      await expect.poll(() => acked, { timeout: 15_000 }).toBeGreaterThan(at + 100);
      expect(conn.closedWith).toBeNull();
    } finally {
      stop = true;
      await writer;
    }
    expect(await conn.cmd('LLEN', 'log')).toBe(`:${acked}`);
    expect(await conn.cmd('DBSIZE')).toBe(`:${KEYS + 2}`);
    conn.close();
    await expectNoResidue();
  });
});
