// A provider's preemption notice drains the doomed host: opted-in containers move with their state, in time.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/cli/local-cluster.js';
import { TEST_CLUSTER_FILE } from './cluster.js';
import { AwsEmulator } from '../unit/spot/emulators.js';
import { cli, counterLog, docker, expectOnlyOn, firstBreak, removeEverywhere, removeVolumeEverywhere, restartAgent, waitFor } from './helpers.js';

const [A, B] = ['t-a', 't-b'] as const;
const OPTED = 'it-spot-counter';
const VOL = 'it-spot-data';
const STAYS = 'it-spot-stays';

describe('spot notice (AWS IMDSv2 emulator)', () => {
  let aws: AwsEmulator;
  beforeAll(async () => {
    aws = await AwsEmulator.start();
    for (const n of [OPTED, STAYS]) await removeEverywhere(n);
    await removeVolumeEverywhere(VOL);
    const opted = await docker(A).createContainer({
      name: OPTED, Image: 'ferry/busybox:1', Hostname: OPTED, Labels: { 'ferry.dev/migrate': 'true', 'ferry.dev/priority': '5' },
      Cmd: ['sh', '-c', 'i=0; while :; do echo $i >> /data/log; i=$((i+1)); sleep 0.02; done'],
      HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'volume', Source: VOL, Target: '/data' }] },
    });
    await opted.start();
    const stays = await docker(A).createContainer({ name: STAYS, Image: 'ferry/busybox:1', Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'none' } });
    await stays.start();
    await waitFor(() => counterLog(A, VOL), (xs) => xs.length > 10, 10_000, 'the counter to start');
  });
  afterAll(async () => {
    for (const h of [A, B]) await cli(['uncordon', h]);
    await restartAgent(A);
    await restartAgent(B);
    await aws.emu.close();
    for (const n of [OPTED, STAYS]) await removeEverywhere(n);
    await removeVolumeEverywhere(VOL);
  });

  it('a dry run shows an honest plan: with 1 s left nothing fits, and it says why', async () => {
    const r = await cli(['drain', A, '--deadline', '1s', '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout);
    expect(plan.plan).toHaveLength(1);
    expect(plan.plan[0]).toMatchObject({ container: OPTED, fits: false });
    expect(plan.plan[0].reason).toMatch(/usable/);
    // A dry run changes nothing: no cordon, nothing moved.
    const hosts = JSON.parse((await cli(['hosts', '--json'])).stdout) as { name: string; cordoned: boolean }[];
    expect(hosts.find((h) => h.name === A)?.cordoned).toBe(false);
    await expectOnlyOn(OPTED, A);
  });

  it('an instance-action notice moves the opted-in container off the host before the deadline', async () => {
    await restartAgent(A, { FERRY_AGENT_SPOT_PROVIDER: 'aws', FERRY_AGENT_SPOT_ENDPOINT: aws.emu.url, FERRY_AGENT_SPOT_POLL_MS: '50' });
    // `ferry events` watches along, as an operator would.
    const events = spawn(process.execPath, [join(packageRoot(), 'bin/ferry.js'), 'events', '--json'], { env: { ...process.env, FERRY_CLUSTER: TEST_CLUSTER_FILE } });
    let seen = '';
    let ready = '';
    events.stdout.on('data', (b: Buffer) => (seen += b.toString()));
    events.stderr.on('data', (b: Buffer) => (ready += b.toString()));
    await waitFor(() => ready, (t) => t.includes('watching'), 10_000, 'the events stream to subscribe');
    const before = (await counterLog(A, VOL)).length;
    const noticeAt = performance.now();
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: new Date(Date.now() + 120_000).toISOString() });
    // Done means the drain says so (the source copy is removed after the commit point, not at it).
    await waitFor(() => seen, (t) => t.includes('"type":"drain-finished"'), 60_000, 'the drain to finish');
    expect(performance.now() - noticeAt).toBeLessThan(120_000);
    await expectOnlyOn(OPTED, B);
    // Not opted in: it stays (and dies with the host, as the user chose).
    expect((await docker(A).listContainers({ filters: { name: [`^/${STAYS}$`] } })).length).toBe(1);
    // The doomed host takes no migrations any more.
    const hosts = JSON.parse((await cli(['hosts', '--json'])).stdout) as { name: string; cordoned: boolean }[];
    expect(hosts.find((h) => h.name === A)?.cordoned).toBe(true);
    const refused = await cli(['migrate', OPTED, '--to', A, '--json']);
    expect(refused.code).toBe(3);
    // The counter went on, exactly.
    await waitFor(() => counterLog(B, VOL), (xs) => xs.length > before + 20, 10_000, 'the counter to continue on t-b');
    expect(firstBreak(await counterLog(B, VOL))).toBe(-1);
    // The operator saw the notice, the drain and the migration, in that order.
    events.kill('SIGINT');
    const types = seen.trim().split('\n').map((l) => (JSON.parse(l) as { type: string }).type);
    expect(types).toEqual(['notice', 'drain-started', 'migration', 'drain-finished']);
  });

  it('a rebalance recommendation (no deadline yet) starts moving containers early', async () => {
    // The counter now lives on t-b. t-a is healthy again; t-b gets a rebalance recommendation only.
    expect((await cli(['uncordon', A])).code).toBe(0);
    const aws2 = await AwsEmulator.start();
    try {
      await restartAgent(B, { FERRY_AGENT_SPOT_PROVIDER: 'aws', FERRY_AGENT_SPOT_ENDPOINT: aws2.emu.url, FERRY_AGENT_SPOT_POLL_MS: '50' });
      const before = (await counterLog(B, VOL)).length;
      aws2.rebalance = JSON.stringify({ noticeTime: new Date().toISOString() });
      await waitFor(() => cli(['hosts', '--json']).then((r) => JSON.parse(r.stdout) as { name: string; cordoned: boolean }[]),
        (hs) => hs.find((h) => h.name === B)?.cordoned === true, 30_000, 't-b to be cordoned');
      await waitFor(async () => (await docker(B).listContainers({ all: true, filters: { name: [`^/${OPTED}$`] } })).length, (n) => n === 0, 60_000, 'the counter to leave t-b');
      await expectOnlyOn(OPTED, A);
      await waitFor(() => counterLog(A, VOL), (xs) => xs.length > before + 20, 10_000, 'the counter to continue on t-a');
      expect(firstBreak(await counterLog(A, VOL))).toBe(-1);
    } finally {
      await aws2.emu.close();
    }
  });
});
