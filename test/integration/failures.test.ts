// Failures before the commit point leave the container running on the source with its state; bad input changes nothing.

import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { packageRoot } from '../../src/cli/local-cluster.js';
import { TEST_CLUSTER_FILE, testCluster } from './cluster.js';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MAX_FRAME_BYTES, MigrationReport, Progress } from '../../src/protocol/index.js';
import { dial } from '../../src/rpc/handshake.js';
import { silentLogger } from '../../src/log/logger.js';
import { cli, cluster, containersNamed, counterLog, docker, firstBreak, lineCommand, expectNoResidue, expectOnlyOn, migrate, restartAgent, removeEverywhere, removeVolumeEverywhere, waitFor } from './helpers.js';

const [A, B] = ['t-a', 't-b'] as const;
const NAME = 'it-fail-counter';
const VOL = 'it-fail-data';

const log = (host: string): Promise<number[]> => counterLog(host, VOL);

/** The source is intact: still the only copy, still counting, and its history has no gap or restart. */
async function expectStillRunningOnSource(opts: { destinationClean: boolean } = { destinationClean: true }): Promise<void> {
  if (opts.destinationClean) await expectOnlyOn(NAME, A);
  else expect((await docker(A).getContainer(NAME).inspect()).State.Running).toBe(true);
  const before = (await log(A)).length;
  await expect.poll(async () => (await log(A)).length, { timeout: 10_000 }).toBeGreaterThan(before + 10);
  expect(firstBreak(await log(A))).toBe(-1);
}

beforeAll(async () => {
  await removeEverywhere(NAME);
  await removeVolumeEverywhere(VOL);
  const c = await docker(A).createContainer({
    name: NAME, Image: 'ferry/busybox:1', Hostname: NAME,
    Cmd: ['sh', '-c', 'i=0; while :; do echo $i >> /data/log; i=$((i+1)); sleep 0.02; done'],
    HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'volume', Source: VOL, Target: '/data' }], RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } },
  });
  await c.start();
  await waitFor(() => log(A), (xs) => xs.length > 10, 10_000, 'the counter to start');
});
afterAll(async () => {
  await removeEverywhere(NAME);
  await removeVolumeEverywhere(VOL);
});

describe('failure injected on the destination', () => {
  afterEach(async () => { await restartAgent(B); });

  it('a restore that fails rolls back: the source runs on with its state', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'restore-fail' });
    const r = await migrate(NAME, B);
    expect(r.result).toBe('rolled_back');
    expect(r.error?.code).toBe('E_CRIU_RESTORE');
    await expectStillRunningOnSource();
    // The restart policy switched off for the dump is back.
    expect((await docker(A).getContainer(NAME).inspect()).HostConfig.RestartPolicy?.Name).toBe('always');
    await expectNoResidue();
  });

  it('the destination agent dying mid-transfer rolls back; its leftovers go when it comes back', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'crash-during-pull:1' });
    const r = await migrate(NAME, B);
    expect(r.result).toBe('rolled_back');
    expect(r.error?.code).toBe('E_UNAVAILABLE');
    // The dead agent could not remove its half-made container yet, but it never ran.
    await expectStillRunningOnSource({ destinationClean: false });
    expect((await containersNamed(B, NAME)).map((c) => c.State)).toEqual(['created']);
    // The half-made destination container is removed by the agent's reaper at its next start.
    await restartAgent(B);
    await expectOnlyOn(NAME, A);
    await expectNoResidue();
  });
});

describe('bad input gets a typed error and changes nothing', () => {
  it.each([
    ['an unknown container', ['migrate', 'no-such-container', '--to', B], 3, 'E_NOT_FOUND'],
    ['an unknown host', ['migrate', NAME, '--to', 'nowhere'], 3, 'E_NOT_FOUND'],
    ['the host it already runs on', ['migrate', NAME, '--to', A], 3, 'E_INVALID_ARGUMENT'],
    ['a malformed host name', ['migrate', NAME, '--to', '../etc'], 3, 'E_INVALID_ARGUMENT'],
  ])('%s', async (_what, args, exit, code) => {
    const r = await cli([...args, '--json']);
    expect(r.code, r.stdout + r.stderr).toBe(exit);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({ type: 'error', code });
    await expectStillRunningOnSource();
  });

  it('a stopped container', async () => {
    const c = await docker(A).createContainer({ name: 'it-stopped', Image: 'ferry/busybox:1', Cmd: ['true'], HostConfig: { NetworkMode: 'none' } });
    try {
      const r = await cli(['migrate', 'it-stopped', '--to', B, '--json']);
      expect(r.code).toBe(3);
      expect(JSON.parse(r.stdout.trim())).toMatchObject({ type: 'error', code: 'E_PRECONDITION' });
      expect(await docker(B).listContainers({ all: true, filters: { name: ['^/it-stopped$'] } })).toHaveLength(0);
    } finally {
      await c.remove({ force: true });
    }
  });

  it('a bad flag is a usage error', async () => {
    const r = await cli(['migrate', NAME, '--to', B, '--timeout', 'soon']);
    expect(r.code).toBe(2);
  });

  it('a dry run checks everything and moves nothing', async () => {
    const r = await cli(['migrate', NAME, '--to', B, '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(report).toMatchObject({ type: 'report', result: 'dry_run', source: A, destination: B });
    // The CLI's default is auto: the dry run already says which mode would run and why.
    expect(report.modeChoice).toMatchObject({ requested: 'auto' });
    expect(report.checks.some((c: string) => c.startsWith(`auto: ${report.strategy} (${report.modeChoice.reason})`))).toBe(true);
    const text = await cli(['migrate', NAME, '--to', B, '--dry-run']);
    expect(text.stdout).toContain(`chosen:    ${report.strategy} (auto, `);
    await expectStillRunningOnSource();
  });

  it('two migrations of one container at once: one runs, the other is refused as a conflict', async () => {
    const [x, y] = await Promise.all([cli(['migrate', NAME, '--to', B, '--json']), cli(['migrate', NAME, '--to', B, '--json'])]);
    const codes = [x.code, y.code].sort();
    expect(codes, x.stdout + y.stdout).toEqual([0, 4]);
    await expectOnlyOn(NAME, B);
    const back = await migrate(NAME, A);
    expect(back.result).toBe('succeeded');
    await expectStillRunningOnSource();
  });
});

describe('untrusted peers', () => {
  it('an agent refuses a peer without the secret, before any request', async () => {
    const h = cluster().hosts[0]!;
    await expect(dial({ url: h.agentUrl, name: 'intruder', role: 'controller', serverRole: 'agent', secret: 'not-the-cluster-secret', log: silentLogger() }))
      .rejects.toMatchObject({ code: 'E_UNAUTHENTICATED' });
  });

  it('an agent drops a peer that sends an oversized or malformed frame, and keeps serving', async () => {
    const h = cluster().hosts[0]!;
    for (const payload of [Buffer.alloc(MAX_FRAME_BYTES + 1024), Buffer.from([0xc1, 0xc1])]) {
      const ws = new WebSocket(h.agentUrl);
      await once(ws, 'open');
      ws.send(payload);
      const [code] = (await once(ws, 'close')) as [number];
      expect([1009, 4400]).toContain(code);
    }
    const r = await cli(['hosts', '--json']);
    expect(JSON.parse(r.stdout).every((x: { connected: boolean }) => x.connected)).toBe(true);
  });
});

describe('cancellation', () => {
  it('Ctrl-C during the transfer rolls back: exit 130, the container runs on the source with its state', async () => {
    const name = 'it-cancel';
    await removeEverywhere(name);
    // Big enough that the transfer lasts long enough to be interrupted in the middle of it.
    const c = await docker(A).createContainer({ name, Image: 'ferry/memhog:1', Hostname: name, Cmd: ['memhog', '--mib', '512', '--rate', '0', '--port', '28113'], HostConfig: { NetworkMode: 'host' } });
    await c.start();
    try {
      // memhog listens only once its memory is filled: migrating earlier would verify a half-built process.
      await waitFor(() => lineCommand(28113, 'verify'), (r) => r === 'ok 131072', 30_000, 'memhog to fill its memory and answer');
      const p = spawn(process.execPath, [join(packageRoot(), 'bin/ferry.js'), 'migrate', name, '--to', B, '--mode', 'stop-and-copy', '--json'], { env: { ...process.env, FERRY_CLUSTER: TEST_CLUSTER_FILE } });
      let out = '';
      let sent = false;
      p.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        // Interrupt as soon as the transfer has started: the source is frozen and dumped by then.
        if (!sent && out.includes('"phase":"transfer","state":"started"')) { sent = true; p.kill('SIGINT'); }
      });
      const [code] = (await once(p, 'close')) as [number];
      expect(sent).toBe(true);
      expect(code, out).toBe(130);
      const report = JSON.parse(out.trim().split('\n').at(-1)!);
      expect(report).toMatchObject({ type: 'report', result: 'rolled_back', error: { code: 'E_ABORTED' } });
      await expectOnlyOn(name, A);
      // Restored in place from its own dump: every page intact.
      expect(await lineCommand(28113, 'verify')).toBe('ok 131072');
      await expectNoResidue();
    } finally {
      await removeEverywhere(name);
    }
  });
});

describe('controller restart', () => {
  afterEach(async () => { await restartAgent(B); });

  it('a controller killed mid-migration rolls it back from its journal when it comes back', async () => {
    await restartAgent(B, { FERRY_AGENT_FAULTS: 'hang-before-restore' });
    const lc = testCluster();
    const cfg = cluster();
    // The CLI's migration reaches the restore and hangs there; then the controller dies without cleanup.
    const pending = cli(['migrate', NAME, '--to', B, '--json']);
    await waitFor(() => readFileSync(`${cfg.stateDir}/journal.jsonl`, 'utf8'), (j) => j.trim().split('\n').at(-1)!.includes('"phase":"restoring"'), 30_000, 'the migration to reach restoring');
    await lc.stopProcess('controller', cfg.stateDir, 'SIGKILL');
    expect((await pending).code).toBe(5); // the CLI lost its controller: outcome unknown to it
    // Source dumped and frozen out, destination prepared: the journal says "restoring". The destination
    // agent comes back without the fault, then the controller, which must finish the job by itself.
    await lc.stopAgent(cfg, B);
    await lc.startAgent(cfg, B, {}, AbortSignal.timeout(60_000));
    await lc.startController(cfg, AbortSignal.timeout(60_000));
    await waitFor(() => readFileSync(`${cfg.stateDir}/journal.jsonl`, 'utf8'), (j) => j.trim().split('\n').at(-1)!.includes('"phase":"rolled-back"'), 60_000, 'recovery to roll back');
    await expectStillRunningOnSource();
    await expectNoResidue();
  });
});

describe('the --json contract', () => {
  it('every line is a schema-valid event or the final report, and nothing carries terminal codes', async () => {
    const r = await cli(['migrate', NAME, '--to', B, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string });
    for (const l of lines.slice(0, -1)) {
      const { type, ...rest } = l;
      expect(type).toBe('progress');
      expect(Progress.payload.safeParse(rest).success, JSON.stringify(l)).toBe(true);
    }
    const { type, ...report } = lines.at(-1)!;
    expect(type).toBe('report');
    expect(MigrationReport.safeParse(report).success).toBe(true);
    expect(report).toMatchObject({ result: 'succeeded', source: A, destination: B });
    expect(r.stdout + r.stderr).not.toMatch(/\x1b\[/);
    // Put it back for the tests that follow.
    expect((await migrate(NAME, A)).result).toBe('succeeded');
    await expectStillRunningOnSource();
  });
});
