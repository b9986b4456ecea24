import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_LINK_BYTES_PER_SEC, DEFAULT_MODE_MODEL, chooseMode, observedLinkRate, type ModeInputs } from '../../../src/migration/mode-choice.js';
import type { MigrationReport } from '../../../src/protocol/index.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** The benchmark's rates: 10 MB/s and 100 MB/s of random 4 KiB pages. */
const TEN_MBS = 2_441;
const HUNDRED_MBS = 24_414;
const base = (o: Partial<ModeInputs> = {}): ModeInputs => ({
  rssBytes: GiB, dirtyPagesPerSec: 0, linkBytesPerSec: DEFAULT_LINK_BYTES_PER_SEC, maxDowntimeMs: 100, deadlineMs: 600_000, uffd: true, ...o,
});

describe('chooseMode', () => {
  it('picks pre-copy where the benchmark measured it shortening the stall (≤ 10 MB/s at 256 MiB and 1 GiB)', () => {
    for (const rssBytes of [256 * MiB, GiB]) {
      for (const dirtyPagesPerSec of [0, TEN_MBS]) {
        const c = chooseMode(base({ rssBytes, dirtyPagesPerSec }));
        expect(c, JSON.stringify(c)).toMatchObject({ mode: 'precopy', reason: 'shorter-freeze' });
        expect(c.predictedPrecopyFreezeMs!).toBeLessThan(c.predictedStopCopyFreezeMs);
      }
    }
  });

  it('picks stop-and-copy for a 100 MB/s random writer, where the lazy restore stalled for seconds', () => {
    const c = chooseMode(base({ dirtyPagesPerSec: HUNDRED_MBS }));
    expect(c).toMatchObject({ mode: 'stop-and-copy', reason: 'heavy-writer', predictedPrecopyFreezeMs: null });
    expect(c.explain).toContain('24414 pages/s');
  });

  it('picks stop-and-copy when the writer outruns a slow link even below the fault limit', () => {
    const c = chooseMode(base({ dirtyPagesPerSec: 4_000, linkBytesPerSec: 20 * MiB }));
    expect(c).toMatchObject({ mode: 'stop-and-copy', reason: 'outruns-link' });
  });

  it('picks stop-and-copy when pre-copy cannot finish before the deadline and stop-and-copy can', () => {
    // 1 GiB at 100 MiB/s: round 0 alone is ~10 s.
    const c = chooseMode(base({ deadlineMs: 5_000 }));
    expect(c).toMatchObject({ mode: 'stop-and-copy', reason: 'deadline' });
    expect(c.predictedPrecopyTotalMs!).toBeGreaterThan(5_000);
    expect(c.predictedStopCopyFreezeMs).toBeLessThan(5_000);
  });

  it('picks stop-and-copy when its freeze already fits --max-downtime', () => {
    expect(chooseMode(base({ rssBytes: 256 * MiB, maxDowntimeMs: 2_000 }))).toMatchObject({ mode: 'stop-and-copy', reason: 'fits-downtime' });
  });

  it('picks stop-and-copy for tiny containers, where pre-copy has nothing to gain', () => {
    // A near-tie (fixed costs alone) is no reason for pre-copy's extra bytes and tracking.
    const tie = chooseMode(base({ rssBytes: 4 * MiB, dirtyPagesPerSec: 114 }));
    expect(tie).toMatchObject({ mode: 'stop-and-copy', reason: 'no-gain' });
    expect(tie.predictedPrecopyFreezeMs!).toBeLessThan(tie.predictedStopCopyFreezeMs);
    // From 64 MiB the lazy final phase wins clearly (measured 0.23 s against 0.42 s).
    expect(chooseMode(base({ rssBytes: 64 * MiB }))).toMatchObject({ mode: 'precopy', reason: 'shorter-freeze' });
  });

  it('picks post-copy for a large quiet container where the destination can run it lazily', () => {
    const c = chooseMode(base({ rssBytes: GiB, dirtyPagesPerSec: 3, postcopy: true }));
    expect(c, JSON.stringify(c)).toMatchObject({ mode: 'postcopy', reason: 'quiet-postcopy' });
    expect(c.predictedPostcopyFreezeMs!).toBeLessThan(c.predictedPrecopyFreezeMs! * (1 - DEFAULT_MODE_MODEL.minGain));
    expect(c.explain).toContain('loses it');
    // The same container where post-copy is not possible (a pod, no userfaultfd on the destination) goes by pre-copy.
    expect(chooseMode(base({ rssBytes: GiB, dirtyPagesPerSec: 3, postcopy: false }))).toMatchObject({ mode: 'precopy', reason: 'shorter-freeze', predictedPostcopyFreezeMs: null });
  });

  it('never picks post-copy for a writer, for a container where it gains too little, or when its fill would miss the deadline', () => {
    // 10 MB/s: every write to a page not arrived yet waits for the source (stall 0.74–1.8 s measured).
    expect(chooseMode(base({ rssBytes: GiB, dirtyPagesPerSec: TEN_MBS, postcopy: true }))).toMatchObject({ mode: 'precopy', predictedPostcopyFreezeMs: null });
    // 256 MiB: 0.30 s against pre-copy's 0.33 s is a near-tie.
    expect(chooseMode(base({ rssBytes: 256 * MiB, dirtyPagesPerSec: 0, postcopy: true }))).toMatchObject({ mode: 'precopy' });
    // 4 GiB quiet, 20 s left: the freeze would be short, but the memory needs ~32 s to follow.
    expect(chooseMode(base({ rssBytes: 4 * GiB, dirtyPagesPerSec: 0, postcopy: true, deadlineMs: 20_000 })).mode).not.toBe('postcopy');
  });

  it('never picks pre-copy without write tracking or without a measurement', () => {
    expect(chooseMode(base({ uffd: false }))).toMatchObject({ mode: 'stop-and-copy', reason: 'no-uffd' });
    expect(chooseMode(base({ dirtyPagesPerSec: null }))).toMatchObject({ mode: 'stop-and-copy', reason: 'not-measured' });
  });

  it('pre-copy only ever for a tracked, measured writer under the fault limit, with a freeze shorter than stop-and-copy; post-copy only for a quiet one, clearly shorter than both', () => {
    fc.assert(fc.property(
      fc.record({
        rssBytes: fc.integer({ min: 0, max: 64 * GiB }),
        dirtyPagesPerSec: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true })),
        linkBytesPerSec: fc.double({ min: 1e5, max: 1e11, noNaN: true }),
        maxDowntimeMs: fc.integer({ min: 1, max: 3_600_000 }),
        deadlineMs: fc.integer({ min: 1_000, max: 86_400_000 }),
        uffd: fc.boolean(),
        postcopy: fc.boolean(),
      }),
      (i) => {
        const c = chooseMode(i);
        if (c.mode === 'postcopy') {
          expect(i.postcopy && i.uffd).toBe(true);
          expect(i.dirtyPagesPerSec!).toBeLessThanOrEqual(DEFAULT_MODE_MODEL.postcopyMaxPagesPerSec);
          expect(c.predictedPostcopyFreezeMs!).toBeLessThan(Math.min(c.predictedPrecopyFreezeMs!, c.predictedStopCopyFreezeMs) * (1 - DEFAULT_MODE_MODEL.minGain));
          expect(c.predictedPostcopyFreezeMs! + (i.rssBytes / DEFAULT_MODE_MODEL.postcopyFillBytesPerSec) * 1000).toBeLessThanOrEqual(i.deadlineMs);
        }
        expect(c.explain.length).toBeGreaterThan(0);
        expect(c.predictedStopCopyFreezeMs).toBeGreaterThanOrEqual(0);
        if (c.mode === 'precopy') {
          expect(i.uffd).toBe(true);
          expect(i.dirtyPagesPerSec).not.toBeNull();
          expect(i.dirtyPagesPerSec!).toBeLessThanOrEqual(DEFAULT_MODE_MODEL.lazyFaultLimitPagesPerSec);
          expect(c.predictedPrecopyFreezeMs!).toBeLessThan(c.predictedStopCopyFreezeMs * (1 - DEFAULT_MODE_MODEL.minGain));
        }
      },
    ));
  });
});

describe('observedLinkRate', () => {
  const report = (o: Partial<MigrationReport>): MigrationReport => ({
    migrationId: 'm-1', container: 'c', source: 'a', destination: 'b', strategy: 'stop-and-copy', result: 'succeeded',
    downtimeMs: 1, totalMs: 1, bytesTotal: 0, phases: {}, error: null, ...o,
  });
  const round = (bytes: number, durationMs: number) => ({ round: 0, dirtyPages: 0, pages: bytes / 4096, bytes, records: 1, scanMs: 0, intervalMs: 0, durationMs, processes: 1, receiveMs: durationMs, throttle: 0 });

  it('takes pre-copy rounds over the whole report, stop-and-copy its transfer phase', () => {
    expect(observedLinkRate(report({ strategy: 'precopy', rounds: [round(256 * MiB, 2_000), round(MiB, 100)], bytesTotal: 257 * MiB }))).toBeCloseTo((257 * MiB) / 2.1, 0);
    expect(observedLinkRate(report({ bytesTotal: 64 * MiB, phases: { transfer: 500 } }))).toBeCloseTo(128 * MiB, 0);
  });

  it('learns nothing from failures or from transfers too small to measure a rate', () => {
    expect(observedLinkRate(report({ result: 'rolled_back', bytesTotal: 64 * MiB, phases: { transfer: 500 } }))).toBeNull();
    expect(observedLinkRate(report({ bytesTotal: MiB, phases: { transfer: 5 } }))).toBeNull();
    expect(observedLinkRate(report({ bytesTotal: 64 * MiB, phases: {} }))).toBeNull();
  });
});
