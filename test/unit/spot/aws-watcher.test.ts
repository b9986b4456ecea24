// AWS IMDSv2 watcher against the emulator: deadlines under skew, dedupe, rebalance, token renewal and 401s.

import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { Notice } from '../../../agent/spot/notice.js';
import { AwsWatcher, type AwsWatcherOptions } from '../../../agent/spot/aws-watcher.js';
import { AwsEmulator } from './aws-emulator.js';
import { captureLog, collect, startWatcher, WARN } from './harness.js';
import { ManualClock } from './manual-clock.js';

const POLL = 5_000; // the default; request timeouts (2 s) never collide with it in whenSleeping()

async function setUp(o: { clock?: ManualClock; watcher?: Partial<AwsWatcherOptions> } = {}) {
  const clock = o.clock ?? new ManualClock();
  const aws = await AwsEmulator.start({ clock });
  onTestFinished(() => aws.emu.close());
  const cap = captureLog();
  const w = new AwsWatcher({ endpoint: aws.emu.url, log: cap.log, clock, ...o.watcher });
  const q = collect(w);
  const run = startWatcher(w);
  return { clock, aws, w, q, run, ...cap };
}

const inTwoMinutes = (clock: ManualClock): string => new Date(clock.nowWall() + 120_000).toISOString();

describe('AwsWatcher (IMDSv2)', () => {
  it.each([-10 * 60_000, 0, 10 * 60_000])('turns instance-action into a monotonic deadline independent of wall-clock skew (%d ms)', async (skew) => {
    const base = new ManualClock();
    const { clock, aws, q, lines } = await setUp({ clock: new ManualClock({ wall: base.nowWall() + skew, mono: 1_000 }) });
    // 404 while there is no notice: polls go on, nothing is reported, nothing is logged as a problem.
    await clock.tick(POLL);
    await clock.tick(POLL);
    expect(q.notices).toEqual([]);
    // IMDS stamps the action 2 minutes ahead on the instance's own (NTP-synced, here skewed) timeline.
    const time = inTwoMinutes(clock);
    aws.instanceAction = JSON.stringify({ action: 'terminate', time });
    await clock.tick(POLL);
    const n = await q.next();
    expect(n).toMatchObject({ provider: 'aws', kind: 'termination', id: `aws:terminate:${time}`, raw: { action: 'terminate', time } });
    // Identical for every skew. Stamped at mono 1 000 + 2 polls, read one poll later: the poll latency is
    // already spent, so 115 s remain.
    expect(n.receivedAtMono).toBe(1_000 + 3 * POLL);
    expect(n.deadlineMono).toBe(1_000 + 2 * POLL + 120_000);
    // Later wall-clock steps cannot move a deadline that lives on the monotonic clock.
    clock.stepWall(-skew);
    await clock.tick(POLL);
    expect(q.notices).toHaveLength(1);
    expect(lines.filter((l) => l.level >= WARN)).toEqual([]);
  });

  it('reports the same notice once however often it is polled', async () => {
    const { clock, aws, q } = await setUp();
    aws.instanceAction = JSON.stringify({ action: 'stop', time: inTwoMinutes(clock) });
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ kind: 'termination' });
    for (let i = 0; i < 5; i++) await clock.tick(POLL);
    await clock.whenSleeping((ms) => ms === POLL);
    expect(aws.emu.requests.filter((r) => r.url.endsWith('instance-action')).length).toBeGreaterThanOrEqual(7);
    expect(q.notices).toHaveLength(1);
  });

  it('reports a rebalance recommendation (no deadline) before the termination that follows it', async () => {
    const { clock, aws, q } = await setUp();
    await clock.tick(POLL);
    aws.rebalance = JSON.stringify({ noticeTime: new Date(clock.nowWall()).toISOString() });
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ provider: 'aws', kind: 'rebalance', deadlineMono: null });
    await clock.tick(POLL);
    aws.instanceAction = JSON.stringify({ action: 'hibernate', time: inTwoMinutes(clock) });
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ kind: 'termination', raw: { action: 'hibernate' } });
    await clock.tick(POLL);
    await clock.whenSleeping((ms) => ms === POLL);
    expect(q.notices.map((n) => n.kind)).toEqual(['rebalance', 'termination']);
  });

  it('renews the session token before it expires, so no request goes out with a stale one', async () => {
    const { clock, aws } = await setUp({ watcher: { tokenTtlS: 120 } });
    await clock.whenSleeping((ms) => ms === POLL);
    expect(aws.tokenPuts()).toBe(1);
    // TTL 120 s, renewed 60 s early: the poll at t = 60 s fetches a new token.
    for (let t = POLL; t <= 60_000; t += POLL) await clock.tick(POLL);
    await clock.whenSleeping((ms) => ms === POLL);
    expect(aws.tokenPuts()).toBe(2);
    for (let t = POLL; t <= 120_000; t += POLL) await clock.tick(POLL);
    await clock.whenSleeping((ms) => ms === POLL);
    expect(aws.tokenPuts()).toBe(4);
    expect(aws.unauthorized).toBe(0);
    expect(aws.emu.requests.find((r) => r.method === 'PUT')?.headers['x-aws-ec2-metadata-token-ttl-seconds']).toBe('120');
  });

  it('gets a fresh token on a 401 and still reads the notice in the same poll, without a warning', async () => {
    const { clock, aws, q, at } = await setUp();
    await clock.whenSleeping((ms) => ms === POLL);
    aws.revokeTokens();
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: inTwoMinutes(clock) });
    clock.advance(POLL);
    expect(await q.next()).toMatchObject({ kind: 'termination' });
    expect(aws.unauthorized).toBe(1);
    expect(aws.tokenPuts()).toBe(2);
    expect(at(WARN)).toEqual([]);
  });

  it('a throwing notice listener is logged and does not stop the watch', async () => {
    const { clock, aws, w, q, at } = await setUp();
    w.prependListener('notice', () => { throw new Error('consumer bug'); });
    const viaOnce = once(w, 'notice') as Promise<[Notice]>;
    aws.rebalance = JSON.stringify({ noticeTime: new Date(clock.nowWall()).toISOString() });
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ kind: 'rebalance' });
    // once() listeners are still honoured, and removed after their one call.
    expect((await viaOnce)[0]).toMatchObject({ kind: 'rebalance' });
    expect(w.listenerCount('notice')).toBe(2);
    expect(at(50)).toHaveLength(1);
    aws.instanceAction = JSON.stringify({ action: 'terminate', time: inTwoMinutes(clock) });
    await clock.tick(POLL);
    expect(await q.next()).toMatchObject({ kind: 'termination' });
    expect(at(WARN)).toEqual([]);
  });

  it('treats an oversized body as malformed, not as an outage', async () => {
    const { clock, aws, q, at } = await setUp();
    aws.instanceAction = 'x'.repeat(70 * 1024);
    await clock.tick(POLL);
    expect(at(WARN)).toHaveLength(1);
    expect(at(WARN)[0]).toMatchObject({ source: 'instance-action', code: 'E_PROTOCOL' });
    expect(q.notices).toEqual([]);
  });

  it('refuses a second concurrent run()', async () => {
    const { w } = await setUp();
    await expect(w.run(new AbortController().signal)).rejects.toMatchObject({ code: 'E_PRECONDITION' });
  });

  it('rejects an out-of-range token TTL as a configuration error', async () => {
    expect(() => new AwsWatcher({ endpoint: 'http://127.0.0.1:9', log: captureLog().log, tokenTtlS: 21_601 })).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
  });
});
