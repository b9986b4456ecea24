// The manual (ferry drain) notice source: deadlines, idempotency, argument checks.

import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ManualNoticeSource } from '../../../agent/spot/manual.js';
import type { Notice } from '../../../agent/spot/notice.js';
import { ManualClock } from './manual-clock.js';

describe('ManualNoticeSource (ferry drain)', () => {
  it('emits a manual termination notice with a monotonic deadline', async () => {
    const clock = new ManualClock({ mono: 5_000 });
    const src = new ManualNoticeSource(clock);
    const emitted = once(src, 'notice') as Promise<[Notice]>;
    const n = src.trigger({ host: 'h-a', deadlineMs: 90_000, reason: 'kernel upgrade' });
    expect((await emitted)[0]).toBe(n);
    expect(n).toMatchObject({ provider: 'manual', kind: 'termination', host: 'h-a', receivedAtMono: 5_000, deadlineMono: 95_000, raw: { deadlineMs: 90_000, reason: 'kernel upgrade' } });
    expect(n.id).toMatch(/^manual:[0-9a-f-]{36}$/);
  });

  it('without a deadline, the notice has none', () => {
    expect(new ManualNoticeSource(new ManualClock()).trigger({ host: 'h-a' }).deadlineMono).toBeNull();
  });

  it('is idempotent per caller id (a retried CLI call) and distinct otherwise', () => {
    const src = new ManualNoticeSource(new ManualClock());
    const seen: Notice[] = [];
    src.on('notice', (n) => seen.push(n));
    const a = src.trigger({ host: 'h-a', id: 'req-1' });
    expect(src.trigger({ host: 'h-a', id: 'req-1', deadlineMs: 1 })).toBe(a);
    src.trigger({ host: 'h-a' });
    src.trigger({ host: 'h-a' });
    expect(seen.map((n) => n.id)).toHaveLength(3);
    expect(a.id).toBe('manual:req-1');
  });

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY])('rejects the deadline %d', (d) => {
    expect(() => new ManualNoticeSource(new ManualClock()).trigger({ deadlineMs: d })).toThrow(expect.objectContaining({ code: 'E_INVALID_ARGUMENT' }));
  });
});
