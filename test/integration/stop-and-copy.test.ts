// Real migrations between two real dockerds with CRIU: state, files, volumes and TCP connections survive.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { counterLog, docker, expectNoResidue, firstBreak, expectOnlyOn, migrate, lineCommand, RedisConn, removeEverywhere, removeVolumeEverywhere, startRedis, waitFor } from './helpers.js';

const [A, B] = ['t-a', 't-b'] as const;

/** Exactly 0, 1, 2, …: no gap, no duplicate, no restart from zero. */
function expectContiguous(xs: number[]): void {
  const bad = firstBreak(xs);
  expect(bad, `counter breaks at line ${bad}: ${xs.slice(Math.max(0, bad - 2), bad + 3).join(',')}`).toBe(-1);
}

async function upperFile(host: string, name: string, file: string): Promise<string> {
  const i = await docker(host).getContainer(name).inspect();
  return readFileSync(join((i.GraphDriver.Data as Record<string, string>).UpperDir!, file), 'utf8');
}

describe('stop-and-copy: counter with rw layer and volume', () => {
  const NAME = 'it-counter';
  const VOL = 'it-counter-data';
  beforeAll(async () => {
    await removeEverywhere(NAME);
    await removeVolumeEverywhere(VOL);
    const c = await docker(A).createContainer({
      name: NAME, Image: 'ferry/busybox:1', Hostname: NAME,
      // The counter lives only in the shell's memory; the log in the volume shows every value it took.
      Cmd: ['sh', '-c', 'echo rw-data > /rwfile; i=0; while :; do echo $i >> /data/log; i=$((i+1)); sleep 0.02; done'],
      HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'volume', Source: VOL, Target: '/data' }], RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } },
    });
    await c.start();
    await waitFor(() => counterLog(A, VOL), (xs) => xs.length > 20, 10_000, 'the counter to start');
  });
  afterAll(async () => {
    await removeEverywhere(NAME);
    await removeVolumeEverywhere(VOL);
  });

  it('moves A → B and back with the counter continuing exactly', async () => {
    for (const [from, to] of [[A, B], [B, A]] as const) {
      const before = (await counterLog(from, VOL)).length;
      const r = await migrate(NAME, to);
      expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', source: from, destination: to, error: null });
      expect(r.downtimeMs).toBeGreaterThan(0);
      await expectOnlyOn(NAME, to);
      // The counter keeps counting on the destination, from where it was.
      await expect.poll(async () => (await counterLog(to, VOL)).length, { timeout: 10_000 }).toBeGreaterThan(before + 30);
      expectContiguous(await counterLog(to, VOL));
      expect(await upperFile(to, NAME, 'rwfile')).toBe('rw-data\n');
      const i = await docker(to).getContainer(NAME).inspect();
      expect(i.Config.Hostname).toBe(NAME);
      expect(i.HostConfig.RestartPolicy?.Name).toBe('unless-stopped');
      // The source's copy of the volume went with the container.
      await expect(docker(from).getVolume(VOL).inspect()).rejects.toMatchObject({ statusCode: 404 });
      await expectNoResidue();
    }
  });
});

describe('stop-and-copy: Redis under a live client on one TCP connection', () => {
  const NAME = 'it-redis';
  const PORT = 28111;
  const KEYS = 20_000;
  beforeAll(async () => { await startRedis(A, NAME, PORT); });
  afterAll(async () => { await removeEverywhere(NAME); });

  it('keeps every acknowledged write and the client connection, there and back', async () => {
    const conn = await RedisConn.open(PORT);
    expect(await conn.cmd('DEBUG', 'POPULATE', String(KEYS), 'key', '64')).toBe('+OK');
    let acked = 0;
    let counter = 0;
    let maxGap = 0;
    let stop = false;
    // One connection for the whole test: INCR must go 1, 2, 3, … and every RPUSH must land.
    const writer = (async () => {
      let last = performance.now();
      while (!stop) {
        const n = await conn.cmd('INCR', 'counter');
        expect(n).toBe(`:${counter + 1}`);
        counter++;
        expect(await conn.cmd('RPUSH', 'log', String(counter))).toBe(`:${acked + 1}`);
        acked++;
        const now = performance.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
      }
    })();
    try {
      for (const [from, to] of [[A, B], [B, A]] as const) {
        await expect.poll(() => acked, { timeout: 10_000 }).toBeGreaterThan(100);
        const r = await migrate(NAME, to);
        expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', source: from, destination: to });
        await expectOnlyOn(NAME, to);
        const at = acked;
        await expect.poll(() => acked, { timeout: 15_000 }).toBeGreaterThan(at + 100);
        expect(conn.closedWith).toBeNull();
        // The stall the client saw is the freeze, not a reconnect: bounded by the migration's own report.
        expect(maxGap).toBeLessThan((r.downtimeMs ?? 0) + 1000);
        maxGap = 0;
      }
    } finally {
      stop = true;
      await writer;
    }
    expect(await conn.cmd('LLEN', 'log')).toBe(`:${acked}`);
    expect(await conn.cmd('DBSIZE')).toBe(`:${KEYS + 2}`);
    expect(await conn.cmd('STRLEN', 'key:4242')).toBe(':64');
    conn.close();
    await expectNoResidue();
  });
});

describe('stop-and-copy: every page arrives exact (memhog oracle), restored lazily', () => {
  const NAME = 'it-memhog';
  const PORT = 28112;
  const ask = (cmd: string): Promise<string> => lineCommand(PORT, cmd);
  beforeAll(async () => {
    await removeEverywhere(NAME);
    const c = await docker(A).createContainer({
      name: NAME, Image: 'ferry/memhog:1', Hostname: NAME,
      // 64 MiB, each page stamped with its index, generation and a checksum; 2000 random page writes a second.
      Cmd: ['memhog', '--mib', '64', '--rate', '2000', '--pattern', 'random', '--port', String(PORT)],
      HostConfig: { NetworkMode: 'host' },
    });
    await c.start();
    await waitFor(() => ask('verify'), (r) => r.startsWith('ok'), 10_000, 'memhog to answer');
  });
  afterAll(async () => { await removeEverywhere(NAME); });

  it('verifies every page after moving there and back while pages are being written', async () => {
    for (const [from, to] of [[A, B], [B, A]] as const) {
      const before = Number((await ask('ping')).split(' ')[1]);
      const r = await migrate(NAME, to);
      expect(r, JSON.stringify(r)).toMatchObject({ result: 'succeeded', source: from, destination: to });
      await expectOnlyOn(NAME, to);
      // Every page self-consistent and at the generation the process itself recorded: none lost, none stale.
      expect(await ask('verify')).toBe('ok 16384');
      // The process's own counter went on from where it was: the same process, not a restart.
      expect(Number((await ask('ping')).split(' ')[1])).toBeGreaterThan(before);
      await expectNoResidue();
    }
  });
});
