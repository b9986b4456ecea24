import { describe, expect, it } from 'vitest';
import { DEFAULT_MODEL, estimateMs, learn, planDrain } from '../../../src/migration/drain-plan.js';

const GiB = 2 ** 30;
const model = { fixedMs: 1000, msPerGiB: 4000 };

describe('drain planning', () => {
  it('moves everything when there is time, spreading destinations', () => {
    const p = planDrain({ items: [{ container: 'a', rssBytes: GiB / 4, priority: 0 }, { container: 'b', rssBytes: GiB / 4, priority: 0 }], destinations: ['x', 'y'], remainingMs: 120_000, concurrency: 2, model });
    expect(p.every((m) => m.fits)).toBe(true);
    expect(new Set(p.map((m) => m.to))).toEqual(new Set(['x', 'y']));
  });

  it('puts priority first, then the quickest, and says honestly what cannot make it', () => {
    const p = planDrain({
      items: [
        { container: 'big-low', rssBytes: 4 * GiB, priority: 0 },
        { container: 'small-low', rssBytes: GiB / 8, priority: 0 },
        { container: 'db', rssBytes: 2 * GiB, priority: 10 },
      ],
      destinations: ['x'], remainingMs: 15_000, concurrency: 1, model, marginMs: 1000,
    });
    expect(p.map((m) => m.container)).toEqual(['db', 'small-low', 'big-low']);
    // db: 1 + 8 = 9 s; small-low: 9 → 10.5 s; big-low: would end at 27.5 s > 14 s usable.
    expect(p.map((m) => m.fits)).toEqual([true, true, false]);
    expect(p[2]!.to).toBeNull();
    expect(p[2]!.reason).toMatch(/usable/);
  });

  it('runs lanes in parallel within the concurrency limit', () => {
    const items = [1, 2, 3, 4].map((n) => ({ container: `c${n}`, rssBytes: GiB, priority: 0 }));
    const p = planDrain({ items, destinations: ['x', 'y'], remainingMs: null, concurrency: 2, model });
    expect(p.map((m) => m.startsAtMs)).toEqual([0, 0, 5000, 5000]);
  });

  it('with no receiving host nothing fits, and it says why', () => {
    const p = planDrain({ items: [{ container: 'a', rssBytes: 1, priority: 0 }], destinations: [], remainingMs: 60_000, concurrency: 2, model });
    expect(p[0]).toMatchObject({ fits: false, to: null, reason: 'no host can receive it' });
  });

  it('learns the per-GiB cost from real runs, smoothly', () => {
    const m = learn(model, GiB, 1000 + 2000);
    expect(m.msPerGiB).toBe(Math.round(0.7 * 4000 + 0.3 * 2000));
    expect(learn(model, 1024, 50_000)).toEqual(model);
    expect(estimateMs(DEFAULT_MODEL, 0)).toBe(DEFAULT_MODEL.fixedMs);
  });
});
