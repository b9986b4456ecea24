// Azure Scheduled Events watcher against the emulator: NotBefore deadlines, VM filtering, incarnations, acks.

import { describe, expect, it, onTestFinished } from 'vitest';
import { AZURE_PREEMPT_MIN_NOTICE_MS, AzureWatcher, type AzureWatcherOptions } from '../../../agent/spot/azure-watcher.js';
import { AzureEmulator, type AzureEvent } from './azure-emulator.js';
import { captureLog, collect, startWatcher, WARN } from './harness.js';
import { ManualClock } from './manual-clock.js';

const POLL = 1_000; // the documented once-per-second poll
const FIRST_CALL_TIMEOUT = 130_000;
const TIMEOUT = 10_000;

async function setUp(o: { clock?: ManualClock; watcher?: Partial<AzureWatcherOptions> } = {}) {
  const clock = o.clock ?? new ManualClock();
  const az = await AzureEmulator.start();
  onTestFinished(() => az.emu.close());
  const cap = captureLog();
  const w = new AzureWatcher({ endpoint: az.emu.url, log: cap.log, clock, ...o.watcher });
  const q = collect(w);
  const run = startWatcher(w);
  return { clock, az, w, q, run, ...cap };
}

/** RFC 1123, as Scheduled Events writes NotBefore. */
const rfc1123 = (ms: number): string => new Date(ms).toUTCString();

describe('AzureWatcher (Scheduled Events)', () => {
  it('the emulator, like IMDS, answers Bad Request without the Metadata: true header', async () => {
    const az = await AzureEmulator.start();
    onTestFinished(() => az.emu.close());
    const res = await fetch(`${az.emu.url}/metadata/scheduledevents?api-version=2020-07-01`, { headers: { connection: 'close' } });
    await res.text();
    expect(res.status).toBe(400);
  });

  it.each([-10 * 60_000, 0, 10 * 60_000])('reports a Preempt for this VM with its NotBefore deadline, whatever the wall-clock skew (%d ms)', async (skew) => {
    const base = new ManualClock();
    const { clock, az, q } = await setUp({ clock: new ManualClock({ wall: base.nowWall() + skew, mono: 1_000 }) });
    await clock.tick(POLL);
    // Published 31 s ahead on the VM's (synced, here skewed) timeline, read one poll later: 30 s remain.
    const notBefore = rfc1123(clock.nowWall() + 31_000);
    az.setEvents([
      { EventId: 'A1B2C3D4-0000-4000-8000-000000000001', EventType: 'Freeze', ResourceType: 'VirtualMachine', Resources: ['vm-1'], EventStatus: 'Scheduled', NotBefore: notBefore },
      { EventId: 'A1B2C3D4-0000-4000-8000-000000000002', EventType: 'Preempt', ResourceType: 'VirtualMachine', Resources: ['vm-2'], EventStatus: 'Scheduled', NotBefore: notBefore },
      { EventId: 'A1B2C3D4-0000-4000-8000-000000000003', EventType: 'Preempt', ResourceType: 'VirtualMachine', Resources: ['VM-1'], EventStatus: 'Scheduled', NotBefore: notBefore, EventSource: 'Platform', DurationInSeconds: -1 },
    ]);
    await clock.tick(POLL);
    const n = await q.next();
    expect(n).toMatchObject({ provider: 'azure', kind: 'preemption', id: 'azure:A1B2C3D4-0000-4000-8000-000000000003:2', raw: { EventType: 'Preempt' } });
    expect(n.receivedAtMono).toBe(1_000 + 2 * POLL);
    expect(n.deadlineMono).toBe(1_000 + 2 * POLL + 30_000);
    expect(q.notices).toHaveLength(1);
  });

  it('learns its VM name from instance metadata once, and sends Metadata: true everywhere', async () => {
    const { clock, az, q } = await setUp();
    az.vmName = 'spot-worker-7';
    // The name is read on the first poll only: changing it now shows whether the watcher asks again.
    await clock.tick(POLL);
    az.setEvents([{ EventId: 'E-other', EventType: 'Preempt', Resources: ['spot-worker-8'], NotBefore: rfc1123(clock.nowWall() + 60_000) }]);
    await clock.tick(POLL);
    expect(q.notices).toEqual([]);
    az.setEvents([{ EventId: 'E-mine', EventType: 'Preempt', Resources: ['spot-worker-7'], NotBefore: rfc1123(clock.nowWall() + 60_000) }]);
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ id: 'azure:E-mine:3' });
    expect(az.emu.requests.filter((r) => r.url.startsWith('/metadata/instance/compute/name'))).toHaveLength(1);
    expect(az.emu.requests.every((r) => r.headers['metadata'] === 'true')).toBe(true);
  });

  it('dedupes by EventId across incarnations, and the acknowledgement does not re-announce the event', async () => {
    const { clock, az, w, q } = await setUp();
    await clock.whenSleeping((ms) => ms === POLL);
    az.setEvents([{ EventId: 'E1', EventType: 'Preempt', Resources: ['vm-1'], EventStatus: 'Scheduled', NotBefore: rfc1123(clock.nowWall() + 31_000) }]);
    await clock.tick(POLL);
    const n = await q.next();
    // The same document polled again, then a new incarnation with an unrelated event: still one notice.
    await clock.tick(POLL);
    az.setEvents([...az.doc.Events, { EventId: 'E2', EventType: 'Freeze', Resources: ['vm-1'], NotBefore: rfc1123(clock.nowWall() + 60_000) }]);
    await clock.tick(POLL);
    expect(q.notices).toHaveLength(1);
    // The caller says the drain has started: StartRequests is POSTed; the emulator starts the event (incarnation 4).
    await w.acknowledge(n.id);
    expect(az.acks).toEqual(['E1']);
    const post = az.emu.requests.find((r) => r.method === 'POST')!;
    expect(JSON.parse(post.body)).toEqual({ StartRequests: [{ EventId: 'E1' }] });
    expect(post.headers['metadata']).toBe('true');
    expect(az.doc).toMatchObject({ DocumentIncarnation: 4, Events: [{ EventId: 'E1', EventStatus: 'Started' }, { EventId: 'E2' }] });
    await clock.tick(POLL);
    await clock.tick(POLL);
    expect(q.notices).toHaveLength(1);
  });

  it('maps Terminate to termination, a Started event to "no time left", and an event without Resources to this VM', async () => {
    const { clock, az, q, at } = await setUp();
    await clock.tick(POLL);
    const now = clock.nowMono() + POLL; // when the next poll reads the document
    az.setEvents([
      { EventId: 'T1', EventType: 'Terminate', Resources: ['vm-1'], EventStatus: 'Scheduled', NotBefore: rfc1123(clock.nowWall() + 5 * 60_000 + POLL) },
      { EventId: 'P1', EventType: 'Preempt', Resources: ['vm-1'], EventStatus: 'Started', NotBefore: '' },
      { EventId: 'P2', EventType: 'Preempt', EventStatus: 'Scheduled', NotBefore: 'next Tuesday' },
    ]);
    await clock.tick(POLL);
    expect(q.notices.map((n) => [n.id, n.kind, n.deadlineMono])).toEqual([
      ['azure:T1:2', 'termination', now + 5 * 60_000],
      ['azure:P1:2', 'preemption', now],
      ['azure:P2:2', 'preemption', now + AZURE_PREEMPT_MIN_NOTICE_MS],
    ]);
    // The unreadable NotBefore is said, not hidden.
    expect(at(WARN)).toHaveLength(1);
  });

  it('skips a malformed event without losing the good one next to it', async () => {
    const { clock, az, q, at } = await setUp();
    await clock.tick(POLL);
    az.setEvents([
      { EventId: 'bad id with spaces', EventType: 'Preempt', Resources: ['vm-1'] },
      { EventId: 'G1', EventType: 'Preempt', Resources: ['vm-1'], NotBefore: rfc1123(clock.nowWall() + 40_000) },
    ] as AzureEvent[]);
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ id: 'azure:G1:2' });
    expect(at(WARN)).toHaveLength(1);
    expect(at(WARN)[0]).toMatchObject({ source: 'scheduledevents event', code: 'E_PROTOCOL' });
  });

  it('gives the first call two minutes (it switches the service on), later calls the normal timeout', async () => {
    const { clock, az } = await setUp({ watcher: { vmName: 'vm-1' } });
    az.stall = true;
    await clock.whenSleeping((ms) => ms === FIRST_CALL_TIMEOUT);
    az.stall = false;
    // The held request is given up on; the retry (after the first back-off, one poll interval) is answered.
    clock.advance(FIRST_CALL_TIMEOUT);
    await clock.tick(POLL);
    az.stall = true;
    clock.advance(POLL);
    expect(await clock.whenSleeping((ms) => ms === TIMEOUT || ms === FIRST_CALL_TIMEOUT)).toBe(TIMEOUT);
  });

  it('refuses to acknowledge an id that is not an Azure notice id', async () => {
    const { w } = await setUp();
    await expect(w.acknowledge('aws:terminate:2026-11-22T10:00:00Z')).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
  });
});
