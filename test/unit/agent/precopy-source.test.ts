import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_RECORD_PAGES, PAGE_BYTES, type PageRange } from '../../../src/protocol/pages.js';
import { batch, records, subtract } from '../../../agent/precopy/source.js';

const P = PAGE_BYTES;
const pagesOf = (rs: readonly PageRange[]): number[] => rs.flatMap(([s, e]) => Array.from({ length: (e - s) / P }, (_, i) => s / P + i));

/** Sorted, disjoint, page-aligned ranges. */
const rangesArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 1, max: 600 })), { maxLength: 30 }).map((xs) => {
  const out: PageRange[] = [];
  let at = 0;
  for (const [gap, len] of xs) { at += gap + 1; out.push([at * P, (at + len) * P]); at += len; }
  return out;
});

describe('pre-copy source: batching pages for reads and records', () => {
  it('batches cover exactly the ranges, in order, each within the byte budget', () => {
    fc.assert(fc.property(rangesArb, fc.integer({ min: 1, max: 300 }), (rs, maxPages) => {
      const bs = batch(rs, maxPages * P);
      expect(pagesOf(bs.flat())).toEqual(pagesOf(rs));
      for (const b of bs) expect(b.reduce((n, [s, e]) => n + e - s, 0)).toBeLessThanOrEqual(maxPages * P);
    }));
  });

  it('records cover exactly the ranges and never exceed one chunk', () => {
    fc.assert(fc.property(rangesArb, (rs) => {
      const recs = [...records(rs)];
      expect(pagesOf(recs.flatMap((r) => r.ranges))).toEqual(pagesOf(rs));
      for (const r of recs) {
        expect(r.pages).toBeLessThanOrEqual(MAX_RECORD_PAGES);
        expect(r.pages).toBe(pagesOf(r.ranges).length);
      }
    }));
  });

  it('subtracting what the tracker could not read leaves exactly the rest', () => {
    fc.assert(fc.property(rangesArb, fc.array(fc.boolean(), { maxLength: 20_000 }), (rs, drop) => {
      const all = pagesOf(rs);
      const missingPages = all.filter((_, i) => drop[i % Math.max(1, drop.length)] === true);
      // The tracker reports holes as merged page ranges.
      const holes: PageRange[] = [];
      for (const p of missingPages) {
        const last = holes.at(-1);
        if (last && last[1] === p * P) holes[holes.length - 1] = [last[0], (p + 1) * P];
        else holes.push([p * P, (p + 1) * P]);
      }
      const gone = new Set(missingPages);
      expect(pagesOf(subtract(rs, holes))).toEqual(all.filter((p) => !gone.has(p)));
    }));
  });
});
