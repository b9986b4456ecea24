// Pure post-copy on the real stack: the destination runs before any page has arrived and fetches every page
// from the source's CRIU session; the dumped tasks are killed at once, so their addresses are free.

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MigrationReport } from '../../src/protocol/index.js';
import { cluster, containersNamed, docker, expectNoResidue, expectOnlyOn, killAgent, lineCommand, migrate, RedisConn, removeEverywhere, restartAgent, startMemhog, startRandomHog, startRedis, waitFor } from './helpers.js';

const [A, B] = ['t-a', 't-b'] as const;

function expectPostcopy(r: MigrationReport): void {
  expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', strategy: 'postcopy', error: null });
  // No page moved inside the freeze: the dump wrote none and the destination fetched them all afterwards.
  expect(r.phases['cleanup.lazyFill'], 'the fill after the freeze').toBeGreaterThan(0);
  expect(r.phases['checkpoint.killed'], 'the dumped tasks were killed at once').toBeGreaterThanOrEqual(1);
}

/** Post-copy's bytes: the pages fetched after the freeze are counted too, about the memory's size. */
function expectAllBytes(r: MigrationReport, mib: number): void {
  expect(r.bytesTotal).toBeGreaterThan(mib * 2 ** 20 * 0.9);
}

describe('post-copy: memhog page oracle', () => {
  const NAME = 'it-post-memhog';
  const PORT = 28131;
  afterEach(async () => { await removeEverywhere(NAME); });

  it('moves 128 MiB there and back while 2000 random pages/s are written; every page exact', async () => {
    await startRandomHog(NAME, PORT, 128, 2000);
    for (const [from, to] of [[A, B], [B, A]] as const) {
      const r = await migrate(NAME, to, { mode: 'postcopy' });
      expectPostcopy(r);
      expectAllBytes(r, 128);
      expect(r.source).toBe(from);
      await expectOnlyOn(NAME, to);
      expect(await lineCommand(PORT, 'verify')).toBe('ok 32768');
    }
    await expectNoResidue();
  });

  it('a container of several processes: both address spaces are fetched, every page exact', async () => {
    // The init's exit waits for its child, which CRIU still holds (ptrace) while it serves: the addresses
    // must be free without waiting for that (the killed tasks' files are closed long before).
    const P2 = PORT + 10;
    await startMemhog(NAME, ['sh', '-c', `memhog --mib 32 --rate 500 --port ${P2} & exec memhog --mib 48 --rate 500 --port ${PORT}`]);
    await waitFor(() => lineCommand(PORT, 'verify'), (r) => r === 'ok 12288', 30_000, 'memhog 1 to answer');
    await waitFor(() => lineCommand(P2, 'verify'), (r) => r === 'ok 8192', 30_000, 'memhog 2 to answer');
    const r = await migrate(NAME, B, { mode: 'postcopy' });
    expectPostcopy(r);
    expect(r.phases['checkpoint.killed']).toBe(2);
    await expectOnlyOn(NAME, B);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 12288');
    expect(await lineCommand(P2, 'verify')).toBe('ok 8192');
    await expectNoResidue();
  });
});

describe('post-copy: failures', () => {
  const NAME = 'it-post-fail';
  const PORT = 28132;
  afterEach(async () => {
    await removeEverywhere(NAME);
    await restartAgent(A);
    await restartAgent(B);
  });

  it('a restore that fails after the tasks were killed brings them back on the source from CRIU\'s session, every page exact', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'restore-fail' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const r = await migrate(NAME, B, { mode: 'postcopy' });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'rolled_back', strategy: 'postcopy', error: { code: 'E_CRIU_RESTORE' } });
    await expectOnlyOn(NAME, A);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectNoResidue();
  });

  it('a dump that fails before the tasks were killed lets them run on where they were, untouched', async () => {
    await restartAgent(A, { FERRY_AGENT_FAULTS: 'postcopy-dump-fail' });
    await startRandomHog(NAME, PORT, 64, 2000);
    const pid = (await docker(A).getContainer(NAME).inspect()).State.Pid;
    const r = await migrate(NAME, B, { mode: 'postcopy' });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'rolled_back', error: { code: 'E_FAULT_INJECTED' } });
    await expectOnlyOn(NAME, A);
    expect((await docker(A).getContainer(NAME).inspect()).State.Pid).toBe(pid);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 16384');
    await expectNoResidue();
  });

  it('the source agent killed while the destination still fetches: lost, runs nowhere, nothing left once it is back', async () => {
    const release = (): string => join(cluster().hosts.find((h) => h.name === B)!.dataDir, 'lazy-serve-release');
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'lazy-serve-hold' });
    try {
      await startRandomHog(NAME, PORT, 64, 0);
      const moved = migrate(NAME, B, { mode: 'postcopy' });
      // Running on B with most of its memory still on A, behind B's held page server.
      await waitFor(async () => (await containersNamed(B, NAME)).map((c) => c.State), (s) => s[0] === 'running', 60_000, 'the restored copy on B');
      await killAgent(A);
      writeFileSync(release(), '');
      const r = await moved;
      rmSync(release(), { force: true });
      expect(r, JSON.stringify(r)).toMatchObject({ result: 'lost', strategy: 'postcopy', error: { code: 'E_LOST' } });
      for (const h of [A, B]) expect((await containersNamed(h, NAME)).filter((c) => c.State === 'running'), h).toEqual([]);
      // The source's copy could not be removed while its agent was down: recovery removes it once it is back.
      await restartAgent(A);
      await waitFor(() => containersNamed(A, NAME), (cs) => cs.length === 0, 60_000, 'the source copy to be removed by recovery');
      await expectNoResidue();
    } finally {
      rmSync(release(), { force: true });
    }
  });

  it('pages that stop coming after the destination ran: reported lost, and it runs nowhere', async () => {
    // The destination's fetches fail after 20 requests: enough for the restore, not for the whole fill.
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'postcopy-fetch-fail:20' });
    await startRandomHog(NAME, PORT, 64, 0);
    const r = await migrate(NAME, B, { mode: 'postcopy' });
    expect(r, JSON.stringify(r)).toMatchObject({ result: 'lost', strategy: 'postcopy', error: { code: 'E_LOST' } });
    expect(r.downtimeMs, 'it did run on the destination').not.toBeNull();
    // Never two copies, and never one running on zero pages: the destination killed its copy, the source's died at the dump.
    for (const h of [A, B]) expect((await containersNamed(h, NAME)).filter((c) => c.State === 'running'), h).toEqual([]);
    await expectNoResidue();
  });
});

describe('post-copy: Redis under a live client on one TCP connection', () => {
  const NAME = 'it-post-redis';
  const PORT = 28133;
  afterEach(async () => { await removeEverywhere(NAME); });

  it('keeps every acknowledged write and the connection', async () => {
    await startRedis(A, NAME, PORT);
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('DEBUG', 'POPULATE', '50000', 'key', '128')).toBe('+OK');
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
      expectPostcopy(await migrate(NAME, B, { mode: 'postcopy' }));
      await expectOnlyOn(NAME, B);
      const at = acked;
      await expect.poll(() => acked, { timeout: 15_000 }).toBeGreaterThan(at + 100);
      expect(conn.closedWith).toBeNull();
    } finally {
      stop = true;
      await writer;
    }
    expect(await conn.cmd('LLEN', 'log')).toBe(`:${acked}`);
    expect(await conn.cmd('DBSIZE')).toBe(':50002');
    conn.close();
    await expectNoResidue();
  });
});
