// Converting a provider wall-clock time into a monotonic deadline: skew cancels out, the past is "now".

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deadlineFromWall } from '../../../agent/spot/notice.js';
import { ManualClock } from './manual-clock.js';

describe('deadlineFromWall', () => {
  it('depends only on the remaining time, not on where the wall clock stands (skew cancels out)', () => {
    fc.assert(fc.property(fc.integer({ min: -86_400_000, max: 86_400_000 }), fc.integer({ min: 0, max: 3_600_000 }), fc.integer({ min: 0, max: 1e9 }), (skew, remaining, mono) => {
      const clock = new ManualClock({ wall: Date.UTC(2026, 10, 22) + skew, mono });
      expect(deadlineFromWall(clock, clock.nowWall() + remaining)).toBe(mono + remaining);
    }));
  });

  it('a provider time already past means no time left, never a deadline behind now', () => {
    const clock = new ManualClock({ mono: 42 });
    expect(deadlineFromWall(clock, clock.nowWall() - 60_000)).toBe(42);
  });
});
