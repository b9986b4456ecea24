import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { AwsWatcher } from '../../../agent/spot/aws.js';
import { GcpWatcher } from '../../../agent/spot/gcp.js';
import { AzureWatcher } from '../../../agent/spot/azure.js';
import type { Clock, Notice } from '../../../agent/spot/notice.js';
import type { Watcher } from '../../../agent/spot/watcher.js';
import { AwsEmulator, AzureEmulator, GcpEmulator } from './emulators.js';

/** A logger whose lines the test can read. */
function capturingLog() {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write(c: Buffer, _e, cb) { lines.push(JSON.parse(c.toString())); cb(); } }));
  return { log, lines };
}

/** Runs a watcher and hands out its notices one by one, in order. */
function start(make: (onNotice: (n: Notice) => void) => Watcher) {
  const notices: Notice[] = [];
  let wake: (() => void) | null = null;
  const w = make((n) => { notices.push(n); wake?.(); });
  const ac = new AbortController();
  const done = w.run(ac.signal);
  const next = async (k: number): Promise<Notice> => {
    while (notices.length < k) await new Promise<void>((r) => { wake = r; });
    return notices[k - 1]!;
  };
  return { w, notices, next, stop: async () => { ac.abort(); await done; } };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

// The wall clock of the host is off by `skew`; deadlines must not depend on it more than once.
const skewed = (skewMs: number): Clock => ({ nowWall: () => Date.now() + skewMs, nowMono: () => performance.now() });

describe('AWS IMDSv2 watcher', () => {
  it.each([0, 10 * 60_000, -10 * 60_000])('turns instance-action into a deadline read once against the local clock (skew %d ms)', async (skew) => {
    const aws = await AwsEmulator.start();
    cleanups.push(() => aws.emu.close());
    const { log } = capturingLog();
    const s = start((onNotice) => new AwsWatcher({ endpoint: aws.emu.url, pollMs: 5, timeoutMs: 1000, log, onNotice }, skewed(skew)));
    cleanups.push(s.stop);
    // 404 until the notice: nothing is reported.
    while (!aws.emu.requests.some((r) => r.includes('instance-action'))) await new Promise((r) => setTimeout(r, 1));
    expect(s.notices).toEqual([]);
    // The notice's time is 120 s ahead of the host's (skewed) wall clock, as IMDS would set it for that host.
    const at = new Date(Date.now() + skew + 120_000).toISOString();
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: at });
    const n = await s.next(1);
    expect(n).toMatchObject({ provider: 'aws', kind: 'termination' });
    expect(n.deadlineMono! - n.receivedAtMono).toBeGreaterThan(119_000);
    expect(n.deadlineMono! - n.receivedAtMono).toBeLessThanOrEqual(120_000);
  });

  it('reports a rebalance recommendation before the termination, each once', async () => {
    const aws = await AwsEmulator.start();
    cleanups.push(() => aws.emu.close());
    const s = start((onNotice) => new AwsWatcher({ endpoint: aws.emu.url, pollMs: 5, timeoutMs: 1000, log: capturingLog().log, onNotice }));
    cleanups.push(s.stop);
    aws.rebalance = JSON.stringify({ noticeTime: '2026-11-22T10:00:00Z' });
    expect(await s.next(1)).toMatchObject({ kind: 'rebalance', deadlineMono: null });
    aws.instanceAction = JSON.stringify({ action: 'stop', time: new Date(Date.now() + 60_000).toISOString() });
    expect(await s.next(2)).toMatchObject({ kind: 'termination' });
    // Polled many times since; still two notices.
    const polls = aws.emu.requests.length;
    while (aws.emu.requests.length < polls + 10) await new Promise((r) => setTimeout(r, 1));
    expect(s.notices).toHaveLength(2);
  });

  it('gets a new token when the old one expires', async () => {
    const aws = await AwsEmulator.start();
    cleanups.push(() => aws.emu.close());
    const s = start((onNotice) => new AwsWatcher({ endpoint: aws.emu.url, pollMs: 5, timeoutMs: 1000, log: capturingLog().log, onNotice }));
    cleanups.push(s.stop);
    while (!aws.emu.requests.some((r) => r.includes('instance-action'))) await new Promise((r) => setTimeout(r, 1));
    aws.expireTokens();
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: new Date(Date.now() + 60_000).toISOString() });
    expect(await s.next(1)).toMatchObject({ kind: 'termination' });
    expect(aws.emu.requests.filter((r) => r === 'PUT /latest/api/token').length).toBeGreaterThanOrEqual(2);
  });

  it('an unreachable endpoint is reported once, retried, and picked up when it comes back', async () => {
    // Take a free port, then close it: connections are refused until the emulator starts there.
    const probe = await AwsEmulator.start();
    const port = Number(new URL(probe.emu.url).port);
    await probe.emu.close();
    const { log, lines } = capturingLog();
    const s = start((onNotice) => new AwsWatcher({ endpoint: `http://127.0.0.1:${port}`, pollMs: 2, timeoutMs: 500, log, onNotice }));
    cleanups.push(s.stop);
    while (lines.filter((l) => l.level === 40).length === 0) await new Promise((r) => setTimeout(r, 5));
    const aws = await AwsEmulator.start(port);
    cleanups.push(() => aws.emu.close());
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: new Date(Date.now() + 60_000).toISOString() });
    expect(await s.next(1)).toMatchObject({ kind: 'termination' });
    expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
    expect(lines.some((l) => l.msg.includes('reachable again'))).toBe(true);
  });

  it('ignores malformed responses without crashing, and recovers', async () => {
    const aws = await AwsEmulator.start();
    cleanups.push(() => aws.emu.close());
    const { log, lines } = capturingLog();
    const s = start((onNotice) => new AwsWatcher({ endpoint: aws.emu.url, pollMs: 2, timeoutMs: 1000, log, onNotice }));
    cleanups.push(s.stop);
    aws.instanceAction = '{"action": "explode"';
    while (!lines.some((l) => l.level === 40)) await new Promise((r) => setTimeout(r, 2));
    aws.instanceAction = JSON.stringify({ action: 'party', time: 'soon' });
    const polls = aws.emu.requests.length;
    while (aws.emu.requests.length < polls + 6) await new Promise((r) => setTimeout(r, 2));
    expect(s.notices).toEqual([]);
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: new Date(Date.now() + 60_000).toISOString() });
    expect(await s.next(1)).toMatchObject({ kind: 'termination' });
  });
});

describe('GCP watcher', () => {
  it('waits on the hanging GET and reports preemption with the 30 s budget', async () => {
    const gcp = await GcpEmulator.start();
    cleanups.push(() => gcp.emu.close());
    const s = start((onNotice) => new GcpWatcher({ endpoint: gcp.emu.url, pollMs: 1, timeoutMs: 1000, log: capturingLog().log, onNotice }));
    cleanups.push(s.stop);
    while (!gcp.emu.requests.some((r) => r.includes('wait_for_change=true'))) await new Promise((r) => setTimeout(r, 1));
    gcp.preempt();
    const n = await s.next(1);
    expect(n).toMatchObject({ provider: 'gcp', kind: 'preemption' });
    expect(n.deadlineMono! - n.receivedAtMono).toBe(30_000);
  });
});

describe('Azure Scheduled Events watcher', () => {
  it('reports Preempt with its NotBefore deadline, dedupes by EventId, and acknowledges', async () => {
    const az = await AzureEmulator.start();
    cleanups.push(() => az.emu.close());
    let watcher: AzureWatcher | null = null;
    const s = start((onNotice) => (watcher = new AzureWatcher({ endpoint: az.emu.url, pollMs: 5, timeoutMs: 1000, log: capturingLog().log, onNotice }, 'vm-1', skewed(-10 * 60_000))));
    cleanups.push(s.stop);
    const notBefore = new Date(Date.now() - 10 * 60_000 + 30_000).toUTCString();
    az.doc = { DocumentIncarnation: 2, Events: [
      { EventId: 'E1', EventType: 'Freeze', Resources: ['vm-1'], NotBefore: notBefore },
      { EventId: 'E2', EventType: 'Preempt', Resources: ['vm-2'], NotBefore: notBefore },
      { EventId: 'E3', EventType: 'Preempt', Resources: ['vm-1'], EventStatus: 'Scheduled', NotBefore: notBefore },
    ] };
    const n = await s.next(1);
    expect(n).toMatchObject({ provider: 'azure', kind: 'preemption', id: 'azure:E3' });
    // RFC 1123 dates have whole seconds: within one second of 30 s.
    expect(n.deadlineMono! - n.receivedAtMono).toBeGreaterThan(28_500);
    expect(n.deadlineMono! - n.receivedAtMono).toBeLessThanOrEqual(30_000);
    await watcher!.acknowledge(n.id, AbortSignal.timeout(1000));
    expect(az.acks).toEqual(['E3']);
    // A garbled document is ignored; the same event in a newer incarnation is not a new notice.
    az.raw = 'not json';
    let polls = az.emu.requests.length;
    while (az.emu.requests.length < polls + 3) await new Promise((r) => setTimeout(r, 1));
    az.raw = null;
    az.doc = { ...az.doc, DocumentIncarnation: 3 };
    polls = az.emu.requests.length;
    while (az.emu.requests.length < polls + 5) await new Promise((r) => setTimeout(r, 1));
    expect(s.notices).toHaveLength(1);
  });
});
