// Capped exponential back-off, by example and by property.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../../agent/spot/backoff.js';

describe('backoffDelay', () => {
  it('doubles from the initial wait up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6].map((f) => backoffDelay(f, { initialMs: 5_000, maxMs: 20_000 }))).toEqual([5_000, 10_000, 20_000, 20_000, 20_000, 20_000]);
  });

  it('never shrinks as failures accumulate, never exceeds the cap, never falls below the first wait', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 60_000 }), fc.integer({ min: 1, max: 600_000 }), fc.integer({ min: 1, max: 10_000 }), (initialMs, extra, failures) => {
      const b = { initialMs, maxMs: initialMs + extra };
      const d = backoffDelay(failures, b);
      expect(d).toBeGreaterThanOrEqual(initialMs);
      expect(d).toBeLessThanOrEqual(b.maxMs);
      expect(Number.isFinite(d)).toBe(true);
      expect(backoffDelay(failures + 1, b)).toBeGreaterThanOrEqual(d);
    }));
  });
});
