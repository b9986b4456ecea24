// The real clock's cancellable sleep.

import { describe, expect, it } from 'vitest';
import { realClock } from '../../../agent/spot/clock.js';

// The real clock is the one piece that must use real timers; these cases end by abort, never by waiting.
describe('realClock.sleep', () => {
  it('resolves at once when the signal is already aborted', async () => {
    await expect(realClock.sleep(3_600_000, AbortSignal.abort())).resolves.toBeUndefined();
  });

  it('resolves as soon as the signal aborts, and leaves no listener behind', async () => {
    const ac = new AbortController();
    const slept = realClock.sleep(3_600_000, ac.signal);
    ac.abort();
    await expect(slept).resolves.toBeUndefined();
  });

  it('keeps wall and monotonic time apart', () => {
    expect(Math.abs(realClock.nowWall() - Date.now())).toBeLessThan(1_000);
    expect(realClock.nowMono()).toBeLessThan(realClock.nowWall());
  });
});
