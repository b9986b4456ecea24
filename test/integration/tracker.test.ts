// The agent's driver for the native dirty tracker, against the real helper and a real process.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log/logger.js';
import { DirtyTracker } from '../../agent/precopy/tracker.js';
import { lineCommand, waitFor } from './helpers.js';

const BINARY = fileURLToPath(new URL('../../native/dirtytrack/build/ferry-dirtytrack', import.meta.url));
const MEMHOG = '/var/cache/ferry/memhog';
const PORT = 28131;

describe('dirty tracker driver', () => {
  let hog: ChildProcess | null = null;
  let tracker: DirtyTracker | null = null;
  afterEach(async () => {
    await tracker?.close();
    tracker = null;
    // Each test starts its own process: forget this one so the next test's clean-up does not wait on it.
    const h = hog;
    hog = null;
    if (h && h.exitCode === null && h.signalCode === null) {
      h.kill('SIGKILL');
      await once(h, 'exit');
    }
  });

  it('attaches, reports every page, then only what was written, and reads pages as they are', async () => {
    hog = spawn(MEMHOG, ['--mib', '16', '--rate', '0', '--port', String(PORT)], { stdio: 'ignore', detached: true });
    await waitFor(() => lineCommand(PORT, 'verify'), (r) => r === 'ok 4096', 10_000, 'memhog');
    tracker = DirtyTracker.start(BINARY, silentLogger());
    const a = await tracker.attach([hog.pid!]);
    expect(a.mms.map((m) => m.pid)).toEqual([hog.pid]);
    const first = await tracker.scan(true);
    expect(first.pages).toBeGreaterThanOrEqual(4096);
    // Nothing writes (rate 0): the next scan reports only the odd page of stack and libc the poll loop touches.
    const quiet = await tracker.scan(false);
    expect(quiet.pages).toBeLessThan(64);
    // The 16 MiB region is the one mapping of exactly 4096 pages: its pages start with their own index.
    const maps = readFileSync(`/proc/${hog.pid}/maps`, 'utf8').split('\n').map((l) => l.split(' ')[0]!.split('-').map((x) => parseInt(x, 16)));
    const region = maps.find(([s, e]) => e! - s! === 16 * 2 ** 20)!;
    const { data, missing } = await tracker.read(hog.pid!, [[region[0]!, region[0]! + 3 * 4096]]);
    expect(missing).toEqual([]);
    expect([0, 1, 2].map((i) => data.readBigUInt64LE(i * 4096))).toEqual([0n, 1n, 2n]);
    await tracker.release();
    expect(/TracerPid:\s*0/.test(readFileSync(`/proc/${hog.pid}/status`, 'utf8'))).toBe(true);
    expect(await lineCommand(PORT, 'verify')).toBe('ok 4096');
  });

  it('a tracker whose helper dies fails its requests with a clear error instead of hanging', async () => {
    tracker = DirtyTracker.start(BINARY, silentLogger());
    process.kill(tracker.pid!, 'SIGKILL');
    await expect(tracker.scan(false)).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });
});
