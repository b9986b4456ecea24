// The behaviour every provider watcher shares, run against each emulator: outages, garbage, abort.

import { getEventListeners } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { AwsWatcher } from '../../../agent/spot/aws-watcher.js';
import { AzureWatcher } from '../../../agent/spot/azure-watcher.js';
import { GcpWatcher } from '../../../agent/spot/gcp-watcher.js';
import type { SpotWatcher } from '../../../agent/spot/spot-watcher.js';
import type { Logger } from '../../../src/log/logger.js';
import { AwsEmulator } from './aws-emulator.js';
import { AzureEmulator } from './azure-emulator.js';
import { GcpEmulator } from './gcp-emulator.js';
import type { HttpEmulator } from './http-emulator.js';
import { captureLog, collect, deadPort, INFO, startWatcher, WARN } from './harness.js';
import { ManualClock } from './manual-clock.js';

/** What the shared tests need from one provider: its emulator's knobs and its timings. */
interface Provider {
  name: string;
  start(clock: ManualClock, port?: number): Promise<{ emu: HttpEmulator; raise(): void; garbage(): void; wrongShape(): void; heal(): void; stall(on: boolean): void }>;
  make(endpoint: string, clock: ManualClock, log: Logger): SpotWatcher;
  poll: number;
  /** A request timeout distinct from every poll and back-off value, so sleeps can be told apart. */
  timeout: number;
  /** Expected waits after 1, 2, 3, 4, 5 consecutive failures. */
  backoffs: number[];
}

const PROVIDERS: Provider[] = [
  {
    name: 'aws',
    async start(clock, port) {
      const a = await AwsEmulator.start({ clock, ...(port === undefined ? {} : { port }) });
      return {
        emu: a.emu,
        raise: () => { a.instanceAction = JSON.stringify({ action: 'terminate', time: new Date(clock.nowWall() + 120_000).toISOString() }); },
        garbage: () => { a.instanceAction = '{"action": "terminate", "ti'; },
        wrongShape: () => { a.instanceAction = JSON.stringify({ action: 'party', time: 'soon' }); },
        heal: () => { a.instanceAction = null; },
        stall: (on) => { a.stall = on; },
      };
    },
    make: (endpoint, clock, log) => new AwsWatcher({ endpoint, clock, log }),
    poll: 5_000,
    timeout: 2_000,
    backoffs: [5_000, 10_000, 20_000, 20_000, 20_000],
  },
  {
    // Plain-poll mode (no ETags) so "one more poll" means the same here as for the others; the hanging-GET paths
    // have their own tests in gcp-watcher.test.ts.
    name: 'gcp',
    async start(clock, port) {
      const g = await GcpEmulator.start({ clock, ...(port === undefined ? {} : { port }) });
      g.etags = false;
      return { emu: g.emu, raise: () => g.set('TRUE'), garbage: () => g.set('<html>captive portal</html>'), wrongShape: () => g.set('1'), heal: () => g.set('FALSE'), stall: (on) => { g.stall = on; } };
    },
    make: (endpoint, clock, log) => new GcpWatcher({ endpoint, clock, log, timeoutMs: 1_500 }),
    poll: 1_000,
    timeout: 1_500,
    backoffs: [1_000, 2_000, 4_000, 5_000, 5_000],
  },
  {
    name: 'azure',
    async start(clock, port) {
      const z = await AzureEmulator.start(port === undefined ? {} : { port });
      return {
        emu: z.emu,
        raise: () => z.setEvents([{ EventId: 'P1', EventType: 'Preempt', Resources: ['vm-1'], EventStatus: 'Scheduled', NotBefore: new Date(clock.nowWall() + 30_000).toUTCString() }]),
        garbage: () => { z.raw = '{"DocumentIncarnation": 7, "Events": ['; },
        wrongShape: () => { z.raw = JSON.stringify({ DocumentIncarnation: 'seven', Events: {} }); },
        heal: () => { z.raw = null; },
        stall: (on) => { z.stall = on; },
      };
    },
    make: (endpoint, clock, log) => new AzureWatcher({ endpoint, clock, log, vmName: 'vm-1', timeoutMs: 1_500 }),
    poll: 1_000,
    timeout: 1_500,
    backoffs: [1_000, 2_000, 4_000, 5_000, 5_000],
  },
];

describe.each(PROVIDERS)('$name watcher resilience', (p) => {
  it('an unreachable endpoint: one warning, capped exponential back-off, one info and the notice once it is up', async () => {
    const clock = new ManualClock();
    const port = await deadPort();
    const { log, at } = captureLog();
    const w = p.make(`http://127.0.0.1:${port}`, clock, log);
    const q = collect(w);
    startWatcher(w);
    const [b1, b2, b3, b4, b5] = p.backoffs as [number, number, number, number, number];
    await clock.whenSleeping((ms) => ms === b1);
    await clock.tick(b1, b2);
    await clock.tick(b2, b3);
    await clock.tick(b3, b4);
    await clock.tick(b4, b5);
    expect(at(WARN)).toHaveLength(1);
    expect(at(WARN)[0]).toMatchObject({ provider: p.name, code: 'E_UNAVAILABLE' });
    expect(String(at(WARN)[0]!['err'])).toContain('ECONNREFUSED');
    // The metadata service comes up (on the same port) with a notice waiting.
    const emu = await p.start(clock, port);
    onTestFinished(() => emu.emu.close());
    emu.raise();
    await clock.tick(b5, p.poll);
    expect(await q.next()).toMatchObject({ provider: p.name });
    expect(at(WARN)).toHaveLength(1);
    expect(at(INFO).filter((l) => l.msg.includes('reachable again'))).toHaveLength(1);
    expect(at(INFO).find((l) => l.msg.includes('reachable again'))).toMatchObject({ failedAttempts: 5 });
  });

  it('malformed responses: ignored at the normal poll rate, one warning per distinct problem, no crash', async () => {
    const clock = new ManualClock();
    const emu = await p.start(clock);
    onTestFinished(() => emu.emu.close());
    const { log, at, lines } = captureLog();
    const w = p.make(emu.emu.url, clock, log);
    const q = collect(w);
    const run = startWatcher(w);
    await clock.whenSleeping((ms) => ms === p.poll);
    emu.garbage();
    for (let i = 0; i < 3; i++) await clock.tick(p.poll);
    expect(at(WARN)).toHaveLength(1);
    emu.wrongShape();
    for (let i = 0; i < 3; i++) await clock.tick(p.poll);
    expect(at(WARN)).toHaveLength(2);
    expect(at(WARN).every((l) => l['code'] === 'E_PROTOCOL')).toBe(true);
    expect(q.notices).toEqual([]);
    emu.heal();
    emu.raise();
    await clock.tick(p.poll);
    expect(await q.next()).toMatchObject({ provider: p.name });
    expect(lines.some((l) => l.msg.includes('unreachable'))).toBe(false);
    // Still polling, still one run.
    await clock.tick(p.poll);
    await run.stop();
  });

  it('abort in the middle of a request: run() resolves, the socket is closed, no timer or listener is left', async () => {
    const clock = new ManualClock();
    const emu = await p.start(clock);
    onTestFinished(() => emu.emu.close());
    const w = p.make(emu.emu.url, clock, captureLog().log);
    const run = startWatcher(w);
    // Many polls: per-request abort listeners must not pile up on the caller's signal.
    for (let i = 0; i < 20; i++) await clock.tick(p.poll);
    expect(getEventListeners(run.signal, 'abort')).toHaveLength(1);
    emu.stall(true);
    clock.advance(p.poll);
    await clock.whenSleeping((ms) => ms === p.timeout);
    const held = emu.emu.requests.length;
    await run.stop();
    await emu.emu.idle();
    expect(clock.pending()).toEqual([]);
    expect(emu.emu.requests.length).toBe(held);
  });

  it('abort while sleeping between polls ends run() without any time passing', async () => {
    const clock = new ManualClock();
    const emu = await p.start(clock);
    onTestFinished(() => emu.emu.close());
    const w = p.make(emu.emu.url, clock, captureLog().log);
    const run = startWatcher(w);
    await clock.whenSleeping((ms) => ms === p.poll);
    const mono = clock.nowMono();
    await run.stop();
    expect(clock.nowMono()).toBe(mono);
    expect(clock.pending()).toEqual([]);
    await emu.emu.idle();
  });
});
