// GCP preempted watcher against the emulator: ETag long-polling, server timeouts, fallbacks, abort mid-hang.

import { describe, expect, it, onTestFinished } from 'vitest';
import { GCP_PREEMPTION_BUDGET_MS, GcpWatcher } from '../../../agent/spot/gcp-watcher.js';
import { GcpEmulator } from './gcp-emulator.js';
import { captureLog, collect, startWatcher, WARN } from './harness.js';
import { ManualClock } from './manual-clock.js';

const GAP = 1_000; // default pollMs: the minimum gap between two requests
const HANG = 65_000; // client timeout of a hanging GET: timeout_sec 60 + 5 s grace
const isHanging = (r: { url: string }): boolean => r.url.includes('wait_for_change=true');

async function setUp(clock = new ManualClock()) {
  const gcp = await GcpEmulator.start({ clock });
  onTestFinished(() => gcp.emu.close());
  const cap = captureLog();
  const w = new GcpWatcher({ endpoint: gcp.emu.url, log: cap.log, clock });
  const q = collect(w);
  const run = startWatcher(w);
  return { clock, gcp, w, q, run, ...cap };
}

/**
 * Lets the gap elapse until the `nth` hanging GET is held by the emulator. Both ends must be waited for: the
 * client arms its timeout before the request reaches the server, which arms the server-side timeout on receipt.
 */
async function untilHanging(clock: ManualClock, gcp: GcpEmulator, nth = 1): Promise<void> {
  await clock.tick(GAP, HANG);
  await gcp.emu.whenRequest(isHanging, nth);
}

describe('GcpWatcher (instance/preempted)', () => {
  it('the emulator, like the metadata server, refuses requests without Metadata-Flavor: Google', async () => {
    const gcp = await GcpEmulator.start();
    onTestFinished(() => gcp.emu.close());
    const res = await fetch(`${gcp.emu.url}/computeMetadata/v1/instance/preempted`, { headers: { connection: 'close' } });
    await res.text();
    expect(res.status).toBe(403);
  });

  it.each([-10 * 60_000, 0, 10 * 60_000])('long-polls with the ETag and reports TRUE as a 30 s preemption at once (skew %d ms)', async (skew) => {
    const base = new ManualClock();
    const { clock, gcp, q } = await setUp(new ManualClock({ wall: base.nowWall() + skew, mono: 1_000 }));
    await untilHanging(clock, gcp);
    const hanging = await gcp.emu.whenRequest(isHanging);
    expect(hanging.headers['metadata-flavor']).toBe('Google');
    const u = new URL(hanging.url, 'http://x');
    expect(u.searchParams.get('last_etag')).toBe(gcp.etag);
    expect(u.searchParams.get('timeout_sec')).toBe('60');
    expect(q.notices).toEqual([]);
    // No time passes: the hanging GET returns on the change itself.
    gcp.preempt();
    const n = await q.next();
    expect(n).toMatchObject({ provider: 'gcp', kind: 'preemption', id: 'gcp:preempted', raw: 'TRUE' });
    expect(n.receivedAtMono).toBe(1_000 + GAP);
    expect(n.deadlineMono).toBe(1_000 + GAP + GCP_PREEMPTION_BUDGET_MS);
  });

  it('reports a preemption that happened before it started, from the first plain GET', async () => {
    const clock = new ManualClock();
    const gcp = await GcpEmulator.start({ clock });
    onTestFinished(() => gcp.emu.close());
    gcp.preempt();
    const w = new GcpWatcher({ endpoint: gcp.emu.url, log: captureLog().log, clock });
    const q = collect(w);
    startWatcher(w);
    expect(await q.next()).toMatchObject({ kind: 'preemption', receivedAtMono: 1_000 });
    expect(isHanging(gcp.emu.requests[0]!)).toBe(false);
  });

  it('re-arms after the server-side timeout, and reports the preemption once however often it is re-read', async () => {
    const { clock, gcp, q, at } = await setUp();
    await untilHanging(clock, gcp);
    // timeout_sec elapses on the emulator (same clock): it answers FALSE with the same ETag; the watcher re-arms
    // at once (the gap is already spent) without a warning.
    clock.advance(60_000);
    await gcp.emu.whenRequest(isHanging, 2);
    expect(gcp.waiting()).toBe(1);
    gcp.preempt();
    expect(await q.next()).toMatchObject({ kind: 'preemption' });
    await untilHanging(clock, gcp, 3);
    clock.advance(60_000);
    await gcp.emu.whenRequest(isHanging, 4);
    expect(q.notices).toHaveLength(1);
    expect(at(WARN)).toEqual([]);
  });

  it('falls back to plain polling when the server sends no ETag', async () => {
    const clock = new ManualClock();
    const gcp = await GcpEmulator.start({ clock });
    onTestFinished(() => gcp.emu.close());
    gcp.etags = false;
    const w = new GcpWatcher({ endpoint: gcp.emu.url, log: captureLog().log, clock });
    const q = collect(w);
    startWatcher(w);
    await clock.tick(GAP);
    await clock.tick(GAP);
    gcp.preempt();
    await clock.tick(GAP);
    expect(await q.next()).toMatchObject({ kind: 'preemption' });
    expect(gcp.emu.requests.length).toBe(4);
    expect(gcp.emu.requests.some(isHanging)).toBe(false);
  });

  it('falls back to plain polling, with one warning, when a hanging GET is never answered', async () => {
    const { clock, gcp, q, at } = await setUp();
    gcp.honourTimeout = false;
    await untilHanging(clock, gcp);
    clock.advance(HANG);
    await clock.whenSleeping((ms) => ms === GAP);
    expect(at(WARN)).toHaveLength(1);
    gcp.preempt();
    await clock.tick(GAP);
    expect(await q.next()).toMatchObject({ kind: 'preemption' });
    expect(isHanging(gcp.emu.requests.at(-1)!)).toBe(false);
  });

  it('ignores a value that is neither TRUE nor FALSE, warning once, and still sees the real preemption', async () => {
    const { clock, gcp, q, at, lines } = await setUp();
    await untilHanging(clock, gcp);
    gcp.set('MAYBE');
    await untilHanging(clock, gcp, 2);
    // The same garbage again after a server-side timeout: no second warning.
    clock.advance(60_000);
    await gcp.emu.whenRequest(isHanging, 3);
    expect(at(WARN)).toHaveLength(1);
    expect(at(WARN)[0]).toMatchObject({ source: 'response', code: 'E_PROTOCOL' });
    gcp.preempt();
    expect(await q.next()).toMatchObject({ kind: 'preemption' });
    expect(lines.some((l) => l.msg.includes('unreachable'))).toBe(false);
  });

  it('abort ends a hanging GET: run() resolves, the connection is closed, no timer is left', async () => {
    const { clock, gcp, run } = await setUp();
    await untilHanging(clock, gcp);
    expect(gcp.waiting()).toBe(1);
    await run.stop();
    await gcp.emu.idle();
    expect(gcp.waiting()).toBe(0);
    expect(clock.pending()).toEqual([]);
  });
});
