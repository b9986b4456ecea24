import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FREEZE_MODEL, MAX_THROTTLE, THROTTLE_STEPS, afterRound, startConvergence,
  type ConvergenceConfig, type ConvergenceState, type Decision, type FreezeModel, type RoundSample,
} from '../../../src/migration/convergence.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const cfg = (o: Partial<ConvergenceConfig> = {}): ConvergenceConfig => ({ maxDowntimeMs: 100, maxRounds: 30, maxTotalMs: 300_000, autoConverge: false, ...o });
/** A freeze model whose overhead leaves room under 100 ms. */
const cheap: FreezeModel = { fixedMs: 20, msPerGiBDump: 0 };

/** A container for the simulator: RSS, how fast it writes (distinct pages/s, capped by its hot set), how CPU throttling slows it. */
interface Workload {
  rssPages: number;
  writePagesPerS: number;
  hotPages: number;
  /** Bytes/s of the page stream. */
  linkBps: number;
  /** Scan, round trips: per round, ms. */
  roundFixedMs: number;
  /** How much of the write rate survives a throttle t (default: 1 - t). */
  underThrottle?: (t: number) => number;
}

interface Run { decisions: Decision[]; samples: RoundSample[]; final: Decision & { action: 'stop' }; state: ConvergenceState }

/** Runs pre-copy rounds against a simulated container until the policy stops, the way the migration runner does. */
function simulate(w: Workload, config: ConvergenceConfig, model: FreezeModel = cheap, limit = 1000): Run {
  let st = startConvergence(config, model, w.rssPages * PAGE);
  const decisions: Decision[] = [];
  const samples: RoundSample[] = [];
  let throttle = 0; // for the coming round; the agent applies it just before the round's scan
  let sinceStart = 0;
  let prevDuration = 0;
  let prevThrottle = 0; // in effect while this round's dirty pages were written (during the previous round)
  for (let round = 0; round < limit; round++) {
    const rate = w.writePagesPerS * (w.underThrottle ?? ((t: number) => 1 - t))(prevThrottle);
    const dirty = round === 0 ? w.rssPages : Math.min(w.hotPages, Math.round((rate * prevDuration) / 1000));
    const bytes = dirty * PAGE;
    const durationMs = w.roundFixedMs + (bytes * 1000) / w.linkBps;
    sinceStart += durationMs;
    const sample: RoundSample = { round, dirtyPages: dirty, pages: dirty, bytes, durationMs, sinceStartMs: sinceStart, intervalMs: round === 0 ? 0 : prevDuration };
    const r = afterRound(st, sample, bytes > 0 ? bytes / (durationMs / 1000) : 0);
    samples.push(sample);
    decisions.push(r.decision);
    st = r.state;
    prevDuration = durationMs;
    prevThrottle = throttle;
    if (r.decision.action === 'stop') return { decisions, samples, final: r.decision, state: st };
    throttle = r.decision.throttle;
  }
  throw new Error('the policy never stopped');
}

/** Feeds hand-made rounds; throughput is bytes ÷ duration unless given. */
function feed(state: ConvergenceState, rounds: (Omit<RoundSample, 'round' | 'pages' | 'bytes'> & { tp?: number })[]): { state: ConvergenceState; decisions: Decision[] } {
  let st = state;
  const decisions: Decision[] = [];
  for (const r of rounds) {
    const round = st.nextRound;
    const bytes = r.dirtyPages * PAGE;
    const out = afterRound(st, { round, dirtyPages: r.dirtyPages, pages: r.dirtyPages, bytes, durationMs: r.durationMs, sinceStartMs: r.sinceStartMs, intervalMs: r.intervalMs, dirtyPagesNext: r.dirtyPagesNext },
      r.tp ?? (bytes > 0 ? bytes / (r.durationMs / 1000) : 0));
    st = out.state;
    decisions.push(out.decision);
  }
  return { state: st, decisions };
}

const stopOf = (d: Decision) => (d.action === 'stop' ? d.reason : null);

describe('convergence policy: stop reasons', () => {
  it('a converging workload stops as soon as the predicted freeze fits', () => {
    // 256 MiB, 2 000 pages/s (8 MiB/s) over a 100 MiB/s link.
    const r = simulate({ rssPages: 65_536, writePagesPerS: 2_000, hotPages: 60_000, linkBps: 100 * MiB, roundFixedMs: 2 }, cfg());
    expect(r.final.reason).toBe('fits');
    expect(r.final.predictedFreezeMs).toBeLessThanOrEqual(100);
    expect(r.final.throttle).toBe(0);
    expect(r.decisions.length).toBeGreaterThan(1);
    expect(r.decisions.length).toBeLessThan(6);
    // The dirty set shrank every round on the way.
    const dirty = r.samples.map((s) => s.dirtyPages);
    for (let i = 1; i < dirty.length; i++) expect(dirty[i]!).toBeLessThan(dirty[i - 1]!);
  });

  it('fits exactly at the target, and not a hair above it', () => {
    // link 2^22 B/s = 1 024 pages/s; the last scan found 64 pages: 62.5 ms to move at the freeze.
    const at = (fixedMs: number) => feed(startConvergence(cfg(), { fixedMs, msPerGiBDump: 0 }, 0), [
      { dirtyPages: 1024, durationMs: 1000, sinceStartMs: 1000, tp: 2 ** 22 },
      { dirtyPages: 64, durationMs: 62.5, sinceStartMs: 1062.5, intervalMs: 1000, tp: 2 ** 22 },
    ]).decisions[1]!;
    const exact = at(37.5);
    expect(exact).toMatchObject({ action: 'stop', reason: 'fits', predictedFreezeMs: 100 });
    expect(exact.explain).toMatch(/^round 1: .*predicted freeze 100 ms ≤ 100 ms/);
    const above = at(37.5 + 1e-9);
    expect(above.action).toBe('continue');
    expect(above.predictedFreezeMs).toBeGreaterThan(100);
  });

  it('a tiny container stops after round 0 when even rewriting every page would fit', () => {
    const { decisions } = feed(startConvergence(cfg(), cheap, 256 * PAGE), [{ dirtyPages: 256, durationMs: 10, sinceStartMs: 10 }]);
    expect(decisions[0]).toMatchObject({ action: 'stop', reason: 'fits' });
    expect(decisions[0]!.explain).toMatch(/if every page were rewritten/);
  });

  it('nothing-dirty: the scan found no writes, but the overhead alone misses the target', () => {
    const st = startConvergence(cfg(), DEFAULT_FREEZE_MODEL, GiB);
    const { decisions } = feed(st, [
      { dirtyPages: GiB / PAGE, durationMs: 2000, sinceStartMs: 2000 },
      { dirtyPages: 0, durationMs: 3, sinceStartMs: 2003 },
    ]);
    expect(decisions[1]).toMatchObject({ action: 'stop', reason: 'nothing-dirty', predictedFreezeMs: DEFAULT_FREEZE_MODEL.fixedMs + DEFAULT_FREEZE_MODEL.msPerGiBDump });
    expect(decisions[1]!.estimate.remainingPages).toBe(0);
  });

  it('an idle container whose overhead fits stops with fits, not nothing-dirty', () => {
    const { decisions } = feed(startConvergence(cfg(), cheap, 64 * MiB), [
      { dirtyPages: 16_384, durationMs: 700, sinceStartMs: 700 },
      { dirtyPages: 0, durationMs: 2, sinceStartMs: 702 },
    ]);
    expect(decisions[1]).toMatchObject({ action: 'stop', reason: 'fits', predictedFreezeMs: cheap.fixedMs });
  });

  it('diverging: writes outrun the link, so it stops at round 1 without auto-converge', () => {
    // 40 MiB/s of writes (10 240 pages/s) all over 256 MiB, into a 20 MiB/s link: round 1 finds every page rewritten.
    const r = simulate({ rssPages: 65_536, writePagesPerS: 10_240, hotPages: 65_536, linkBps: 20 * MiB, roundFixedMs: 2 }, cfg());
    expect(r.final.reason).toBe('diverging');
    expect(r.decisions).toHaveLength(2);
    expect(r.final.estimate.linkRatio).toBeGreaterThan(0.99);
    expect(r.final.throttle).toBe(0);
    expect(r.final.explain).toMatch(/auto-converge is off/);
  });

  it('not-converging: a steady hot set stops after stallRounds rounds, long before the round cap', () => {
    // The default model (0.45 s + 1 s/GiB) can never fit 100 ms; 300 hot pages rewritten every round.
    const r = simulate({ rssPages: 65_536, writePagesPerS: 100_000, hotPages: 300, linkBps: 200 * MiB, roundFixedMs: 5 }, cfg({ maxRounds: 30 }), DEFAULT_FREEZE_MODEL);
    expect(r.final.reason).toBe('not-converging');
    // round 1 shrinks from the full copy; rounds 2 and 3 stall.
    expect(r.decisions).toHaveLength(4);
    expect(r.decisions.slice(0, 3).every((d) => d.action === 'continue')).toBe(true);
    expect(r.final.explain).toMatch(/overhead alone/);
  });

  it('an impossible target stops once the set stops shrinking, even with auto-converge on', () => {
    // Geometric shrink (ratio 0.25) down to the per-round floor, then a stall; no throttle (it could not make 100 ms fit).
    const r = simulate({ rssPages: 262_144, writePagesPerS: 6_400, hotPages: 262_144, linkBps: 100 * MiB, roundFixedMs: 5 }, cfg({ autoConverge: true }), DEFAULT_FREEZE_MODEL);
    expect(r.final.reason).toBe('not-converging');
    expect(r.decisions.length).toBeGreaterThan(4);
    expect(r.decisions.length).toBeLessThan(12);
    expect(r.decisions.every((d) => d.throttle === 0)).toBe(true);
    expect(r.final.predictedFreezeMs).toBeGreaterThan(DEFAULT_FREEZE_MODEL.fixedMs);
  });

  it('max-rounds: stops after round maxRounds - 1', () => {
    // Shrinks by a third each round: converging, but slowly.
    const r = simulate({ rssPages: 262_144, writePagesPerS: 8_533, hotPages: 262_144, linkBps: 50 * MiB, roundFixedMs: 1 }, cfg({ maxRounds: 3 }));
    expect(r.final.reason).toBe('max-rounds');
    expect(r.samples.at(-1)!.round).toBe(2);
    expect(r.final.explain).toMatch(/round cap 3/);
  });

  it('maxRounds 1 means the full copy only', () => {
    const { decisions } = feed(startConvergence(cfg({ maxRounds: 1 }), cheap, GiB), [{ dirtyPages: GiB / PAGE, durationMs: 5000, sinceStartMs: 5000 }]);
    expect(decisions[0]).toMatchObject({ action: 'stop', reason: 'max-rounds' });
  });

  it('time-cap: stops once the pre-copy time is spent', () => {
    const { decisions } = feed(startConvergence(cfg({ maxTotalMs: 4000 }), cheap, GiB), [{ dirtyPages: GiB / PAGE, durationMs: 4000, sinceStartMs: 4000 }]);
    expect(decisions[0]).toMatchObject({ action: 'stop', reason: 'time-cap' });
  });

  it('time-cap: does not start a round predicted to end past the cap', () => {
    const st = startConvergence(cfg({ maxTotalMs: 16_000 }), cheap, GiB);
    const { decisions } = feed(st, [
      { dirtyPages: 262_144, durationMs: 10_000, sinceStartMs: 10_000 }, // 1 GiB in 10 s
      // 131 072 pages (512 MiB) written in the 10 s between the rounds' starts: 5 s more to move them,
      // so the next round would end at 20 s, past the 16 s cap.
      { dirtyPages: 131_072, durationMs: 5_000, sinceStartMs: 15_000 },
    ]);
    expect(decisions[1]!.estimate.remainingPages).toBe(131_072);
    expect(decisions[1]).toMatchObject({ action: 'stop', reason: 'time-cap' });
    expect(decisions[1]!.explain).toMatch(/next round/);
  });

  it('round 0 never stops for lack of convergence, however bad it looks', () => {
    const { decisions } = feed(startConvergence(cfg({ stallRounds: 1 }), DEFAULT_FREEZE_MODEL, 8 * GiB), [
      { dirtyPages: 2 * 2 ** 20, durationMs: 80_000, sinceStartMs: 80_000 },
    ]);
    expect(decisions[0]).toMatchObject({ action: 'continue', throttle: 0 });
    expect(decisions[0]!.estimate.dirtyPagesPerS).toBeNull();
  });
});

describe('convergence policy: auto-converge', () => {
  // 40 MiB/s of writes all over 256 MiB into a 20 MiB/s link; throttling scales the writes by (1 - t).
  const heavy: Workload = { rssPages: 65_536, writePagesPerS: 10_240, hotPages: 65_536, linkBps: 20 * MiB, roundFixedMs: 2 };

  it('steps the throttle 0.3 → 0.5 → 0.7 → 0.9, a round apart to see each step, then gives up', () => {
    const r = simulate({ ...heavy, underThrottle: () => 1 }, cfg({ autoConverge: true })); // a throttle that does not help
    expect(r.decisions.map((d) => d.throttle)).toEqual([0, 0.3, 0.3, 0.5, 0.5, 0.7, 0.7, 0.9, 0.9, 0.9]);
    expect(r.final.reason).toBe('diverging');
    expect(r.final.throttle).toBe(MAX_THROTTLE);
    expect(r.final.explain).toMatch(/already throttled 90 %/);
    expect(r.decisions[1]!.explain).toMatch(/throttling the CPU 0 % → 30 %/);
    expect(r.decisions[2]!.explain).toMatch(/predates the 30 % throttle/);
  });

  it('stops climbing once the throttle makes pre-copy converge, and reports the level in effect', () => {
    const r = simulate(heavy, cfg({ autoConverge: true }));
    expect(r.final.reason).toBe('fits');
    const levels = r.decisions.map((d) => d.throttle);
    expect(Math.max(...levels)).toBeGreaterThan(0);
    expect(Math.max(...levels)).toBeLessThan(MAX_THROTTLE);
    expect(r.final.throttle).toBe(levels.at(-2));
  });

  it('custom steps are used in order and never exceeded', () => {
    const r = simulate({ ...heavy, underThrottle: () => 1 }, cfg({ autoConverge: true, throttleSteps: [0.2, 0.4] }));
    expect([...new Set(r.decisions.map((d) => d.throttle))]).toEqual([0, 0.2, 0.4]);
    expect(r.final.reason).toBe('diverging');
  });

  it('a set that stops shrinking (not diverging) is throttled too, then stops after stallRounds', () => {
    // 300 hot pages rewritten in any window: 59 ms on a 20 MiB/s link, on top of a 60 ms overhead; slow rounds (50 ms each).
    const w: Workload = { rssPages: 65_536, writePagesPerS: 1e6, hotPages: 300, linkBps: 20 * MiB, roundFixedMs: 50, underThrottle: () => 1 };
    const r = simulate(w, cfg({ autoConverge: true }), { fixedMs: 60, msPerGiBDump: 0 });
    expect(r.decisions.map((d) => d.throttle)).toEqual([0, 0, 0.3, 0.3, 0.5, 0.5, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9]);
    expect(r.final.reason).toBe('not-converging');
    expect(r.final.estimate.linkRatio).toBeLessThan(0.8);
  });

  it('without auto-converge the throttle is always 0', () => {
    const r = simulate(heavy, cfg({ autoConverge: false }));
    expect(r.decisions.every((d) => d.throttle === 0)).toBe(true);
  });
});

describe('convergence policy: measurements', () => {
  it('derives the dirty window from the rounds\' starts when intervalMs is absent', () => {
    const st = startConvergence(cfg(), cheap, GiB);
    const a = feed(st, [
      { dirtyPages: 10_000, durationMs: 1000, sinceStartMs: 1000 },
      { dirtyPages: 2_000, durationMs: 100, sinceStartMs: 1150 }, // started at 1 050: 1 050 ms after round 0 started
    ]).decisions[1]!;
    expect(a.estimate.dirtyPagesPerS).toBeCloseTo(2000 / 1.05, 6);
    const b = feed(st, [
      { dirtyPages: 10_000, durationMs: 1000, sinceStartMs: 1000 },
      { dirtyPages: 2_000, durationMs: 100, sinceStartMs: 1150, intervalMs: 500 },
    ]).decisions[1]!;
    expect(b.estimate.dirtyPagesPerS).toBeCloseTo(4000, 6);
  });

  it('weights throughput by bytes, so a small round does not swing it', () => {
    const st = startConvergence(cfg(), cheap, GiB);
    const { decisions } = feed(st, [
      { dirtyPages: 25_600, durationMs: 1000, sinceStartMs: 1000, tp: 100 * MiB },
      { dirtyPages: 10, durationMs: 40, sinceStartMs: 1040, tp: 1 * MiB },
    ]);
    expect(decisions[1]!.estimate.throughputBytesPerS! / MiB).toBeGreaterThan(95);
  });

  it('the predicted dirty set never exceeds the memory', () => {
    const st = startConvergence(cfg(), cheap, 1000 * PAGE);
    const { decisions } = feed(st, [
      { dirtyPages: 1000, durationMs: 1000, sinceStartMs: 1000, tp: 1000 * PAGE },
      { dirtyPages: 10, durationMs: 5000, sinceStartMs: 6000, intervalMs: 1, tp: 1000 * PAGE },
    ]);
    expect(decisions[1]!.estimate.remainingPages).toBe(1000);
  });

  it('does not scale a hot set down: pages seen in a long window are still owed after a short round', () => {
    // 3 000 pages rewritten over and over: round 1 saw them in a 12.8 s window and moved them in 0.6 s. Scaling the
    // rate down to 0.6 s would predict 138 pages (a 47 ms freeze) and stop; the same 3 000 pages are dirty again.
    const st = startConvergence(cfg(), cheap, 256 * MiB);
    const rounds = [
      { dirtyPages: 65_536, durationMs: 12_800, sinceStartMs: 12_800, tp: 20 * MiB },
      { dirtyPages: 3_000, durationMs: 588, sinceStartMs: 13_388, intervalMs: 12_800, tp: 20 * MiB },
    ];
    const { decisions } = feed(st, rounds);
    expect(decisions[1]!.estimate.remainingPages).toBe(3_000);
    expect(decisions[1]!.action).toBe('continue');
    // A source that counted the round's own writes (a scan as it ended) gives the set directly.
    const counted = feed(st, [rounds[0]!, { ...rounds[1]!, dirtyPagesNext: 150 }]).decisions[1]!;
    expect(counted).toMatchObject({ action: 'stop', reason: 'fits' });
    expect(counted.estimate.remainingPages).toBe(150);
  });

  it('accepts a zero throughput for a round that sent nothing', () => {
    const { state, decisions } = feed(startConvergence(cfg(), DEFAULT_FREEZE_MODEL, GiB), [{ dirtyPages: 1000, durationMs: 100, sinceStartMs: 100 }]);
    expect(decisions[0]!.action).toBe('continue');
    const out = afterRound(state, { round: 1, dirtyPages: 0, pages: 0, bytes: 0, durationMs: 1, sinceStartMs: 101 }, 0);
    expect(out.decision).toMatchObject({ action: 'stop', reason: 'nothing-dirty' });
    expect(out.decision.estimate.throughputBytesPerS).toBeCloseTo(1000 * PAGE * 10, 3); // round 0's, unchanged
  });

  it('is pure: the old state is unchanged and replays give the same decision', () => {
    const st = startConvergence(cfg({ autoConverge: true }), cheap, GiB);
    const s0: RoundSample = { round: 0, dirtyPages: 262_144, pages: 262_144, bytes: GiB, durationMs: 10_000, sinceStartMs: 10_000 };
    const a = afterRound(st, s0, GiB / 10);
    const b = afterRound(st, s0, GiB / 10);
    expect(a).toEqual(b);
    expect(st.nextRound).toBe(0);
    expect(Object.isFrozen(a.state)).toBe(true);
    expect(Object.isFrozen(a.decision)).toBe(true);
  });
});

describe('convergence policy: input validation', () => {
  const bad = { code: 'E_INVALID_ARGUMENT' };
  it.each<[string, Partial<ConvergenceConfig>]>([
    ['zero downtime', { maxDowntimeMs: 0 }],
    ['negative downtime', { maxDowntimeMs: -5 }],
    ['NaN downtime', { maxDowntimeMs: Number.NaN }],
    ['zero rounds', { maxRounds: 0 }],
    ['fractional rounds', { maxRounds: 2.5 }],
    ['infinite time', { maxTotalMs: Number.POSITIVE_INFINITY }],
    ['minShrink 1', { minShrink: 1 }],
    ['negative minShrink', { minShrink: -0.1 }],
    ['stallRounds 0', { stallRounds: 0 }],
    ['throttle step above the max', { throttleSteps: [0.5, 0.95] }],
    ['throttle steps not increasing', { throttleSteps: [0.5, 0.3] }],
    ['zero throttle step', { throttleSteps: [0, 0.5] }],
  ])('rejects a config with %s', (_name, o) => {
    expect(() => startConvergence(cfg(o), cheap, GiB)).toThrow(expect.objectContaining(bad));
  });

  it.each<[string, FreezeModel, number]>([
    ['negative fixed overhead', { fixedMs: -1, msPerGiBDump: 0 }, GiB],
    ['NaN dump cost', { fixedMs: 0, msPerGiBDump: Number.NaN }, GiB],
    ['negative RSS', cheap, -1],
  ])('rejects %s', (_name, model, rss) => {
    expect(() => startConvergence(cfg(), model, rss)).toThrow(expect.objectContaining(bad));
  });

  const st = startConvergence(cfg(), cheap, GiB);
  const ok: RoundSample = { round: 0, dirtyPages: 100, pages: 100, bytes: 100 * PAGE, durationMs: 10, sinceStartMs: 10 };
  it.each<[string, Partial<RoundSample>, number]>([
    ['zero throughput for a round that sent bytes', {}, 0],
    ['negative throughput', {}, -1],
    ['NaN throughput', {}, Number.NaN],
    ['infinite throughput', {}, Number.POSITIVE_INFINITY],
    ['negative pages', { pages: -1 }, 1e6],
    ['fractional dirty pages', { dirtyPages: 1.5 }, 1e6],
    ['NaN bytes', { bytes: Number.NaN }, 1e6],
    ['negative duration', { durationMs: -1 }, 1e6],
    ['NaN since-start', { sinceStartMs: Number.NaN }, 1e6],
    ['negative interval', { intervalMs: -3 }, 1e6],
    ['fractional next dirty count', { dirtyPagesNext: 0.5 }, 1e6],
    ['a skipped round', { round: 1 }, 1e6],
  ])('rejects a round with %s', (_name, o, tp) => {
    expect(() => afterRound(st, { ...ok, ...o }, tp)).toThrow(expect.objectContaining(bad));
  });

  it('rejects time going backwards', () => {
    const { state } = afterRound(st, ok, 1e6);
    expect(() => afterRound(state, { ...ok, round: 1, sinceStartMs: 5 }, 1e6)).toThrow(expect.objectContaining(bad));
  });

  it('refuses rounds after it stopped', () => {
    const stopped = afterRound(startConvergence(cfg({ maxRounds: 1 }), cheap, GiB), ok, 1e6).state;
    expect(stopped.stopped).toBe('max-rounds');
    expect(() => afterRound(stopped, { ...ok, round: 1, sinceStartMs: 20 }, 1e6)).toThrow(expect.objectContaining({ code: 'E_ILLEGAL_TRANSITION' }));
  });
});

describe('convergence policy: properties', () => {
  const configArb = fc.record({
    maxDowntimeMs: fc.integer({ min: 1, max: 2000 }),
    maxRounds: fc.integer({ min: 1, max: 40 }),
    maxTotalMs: fc.integer({ min: 1, max: 600_000 }),
    autoConverge: fc.boolean(),
    minShrink: fc.option(fc.double({ min: 0, max: 0.9, noNaN: true }), { nil: undefined }),
    stallRounds: fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
  });
  const modelArb = fc.record({ fixedMs: fc.double({ min: 0, max: 2000, noNaN: true }), msPerGiBDump: fc.double({ min: 0, max: 3000, noNaN: true }) });
  /** Arbitrary, possibly erratic rounds: any dirty count, duration, throughput; more of them than any cap. */
  const roundArb = fc.record({
    dirtyPages: fc.integer({ min: 0, max: 3_000_000 }),
    durationMs: fc.double({ min: 0, max: 20_000, noNaN: true }),
    gapMs: fc.double({ min: 0, max: 1000, noNaN: true }),
    tp: fc.double({ min: 1, max: 1e10, noNaN: true }),
    intervalMs: fc.option(fc.double({ min: 0, max: 30_000, noNaN: true }), { nil: undefined }),
    dirtyPagesNext: fc.option(fc.integer({ min: 0, max: 3_000_000 }), { nil: undefined }),
  });

  type RoundIn = { dirtyPages: number; durationMs: number; gapMs: number; tp: number; intervalMs: number | undefined; dirtyPagesNext: number | undefined };
  /** Runs arbitrary rounds until the policy stops (it must, within maxRounds); returns every decision. */
  function run(config: ConvergenceConfig, model: FreezeModel, rss: number, rounds: RoundIn[]): { decisions: Decision[]; state: ConvergenceState; samples: RoundSample[] } {
    let st = startConvergence(config, model, rss);
    let since = 0;
    const decisions: Decision[] = [];
    const samples: RoundSample[] = [];
    for (const r of rounds) {
      since += r.gapMs + r.durationMs;
      const sample: RoundSample = { round: st.nextRound, dirtyPages: r.dirtyPages, pages: r.dirtyPages, bytes: r.dirtyPages * PAGE, durationMs: r.durationMs, sinceStartMs: since, intervalMs: r.intervalMs, dirtyPagesNext: r.dirtyPagesNext };
      const out = afterRound(st, sample, sample.bytes > 0 ? r.tp : 0);
      st = out.state;
      decisions.push(out.decision);
      samples.push(sample);
      if (out.decision.action === 'stop') break;
    }
    return { decisions, state: st, samples };
  }
  const rssArb = fc.integer({ min: 0, max: 16 * GiB });
  const roundsArb = fc.array(roundArb, { minLength: 41, maxLength: 41 });

  it('always stops within maxRounds, and the time cap is respected', () => {
    fc.assert(fc.property(configArb, modelArb, rssArb, roundsArb, (config, model, rss, rounds) => {
      const { decisions, samples } = run(config, model, rss, rounds);
      expect(decisions.at(-1)!.action).toBe('stop');
      expect(decisions.length).toBeLessThanOrEqual(config.maxRounds);
      decisions.forEach((d, i) => { if (samples[i]!.sinceStartMs >= config.maxTotalMs) expect(d.action).toBe('stop'); });
    }), { numRuns: 300 });
  });

  it('throttle never decreases, stays in [0, 0.9] on the configured steps, and is 0 without auto-converge', () => {
    fc.assert(fc.property(configArb, modelArb, rssArb, roundsArb, (config, model, rss, rounds) => {
      const { decisions } = run(config, model, rss, rounds);
      let prev = 0;
      for (const d of decisions) {
        expect(d.throttle).toBeGreaterThanOrEqual(prev);
        expect(d.throttle).toBeLessThanOrEqual(MAX_THROTTLE);
        expect([0, ...THROTTLE_STEPS]).toContain(d.throttle);
        if (!config.autoConverge) expect(d.throttle).toBe(0);
        prev = d.throttle;
      }
    }), { numRuns: 300 });
  });

  it('round 0 never stops for lack of convergence; "fits" exactly when the predicted freeze is known to be within the target', () => {
    fc.assert(fc.property(configArb, modelArb, rssArb, roundsArb, (config, model, rss, rounds) => {
      const { decisions, state } = run(config, model, rss, rounds);
      expect(['diverging', 'not-converging']).not.toContain(stopOf(decisions[0]!));
      for (const d of decisions) {
        expect(Number.isFinite(d.predictedFreezeMs)).toBe(true);
        expect(d.predictedFreezeMs).toBeGreaterThanOrEqual(state.overheadMs);
        // Without any throughput measured (nothing moved yet, pages owed) nothing can be known to fit.
        expect(stopOf(d) === 'fits').toBe(d.estimate.transferMs !== null && d.predictedFreezeMs <= config.maxDowntimeMs);
        expect(d.explain).toMatch(/^round \d+: /);
      }
    }), { numRuns: 300 });
  });

  it('on realistic workloads it stops by the cap and never predicts a set larger than memory', () => {
    const workloadArb = fc.record({
      rssPages: fc.integer({ min: 1, max: 1_000_000 }),
      writePagesPerS: fc.integer({ min: 0, max: 500_000 }),
      hotPages: fc.integer({ min: 0, max: 1_000_000 }),
      linkBps: fc.integer({ min: MiB, max: 2 * GiB }),
      roundFixedMs: fc.double({ min: 0.5, max: 50, noNaN: true }),
    });
    fc.assert(fc.property(workloadArb, configArb, modelArb, (w, config, model) => {
      const r = simulate(w, config, model, config.maxRounds);
      expect(r.decisions.length).toBeLessThanOrEqual(config.maxRounds);
      for (const d of r.decisions) expect(d.estimate.remainingPages).toBeLessThanOrEqual(Math.max(w.rssPages, w.hotPages));
    }), { numRuns: 200 });
  });
});
