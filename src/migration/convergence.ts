// The pre-copy convergence policy (pure): after each round, decide between another round and the final freeze, and say why.

import { FerryError } from '../protocol/errors.js';

/** Bytes of one page as the tracker reports and the stream sends them (x86-64). */
const PAGE_BYTES = 4096;
const GiB = 2 ** 30;

/** Auto-converge levels: the fraction of the container's CPU quota taken away, one step per stalled round (QEMU's cpu-throttle-initial/increment). */
export const THROTTLE_STEPS: readonly number[] = Object.freeze([0.3, 0.5, 0.7, 0.9]);
/** No throttle step may take more than this: the container must keep running, if slowly. */
export const MAX_THROTTLE = 0.9;
/** A round counts as progress when it cuts the dirty set by at least this fraction of the smallest set seen before. */
export const DEFAULT_MIN_SHRINK = 0.2;
/** Rounds in a row without progress after which the policy stops with `not-converging`. */
export const DEFAULT_STALL_ROUNDS = 2;

/** Limits of one pre-copy; the caller resolves CLI flags into it. */
export interface ConvergenceConfig {
  /** The freeze to aim for (`--max-downtime`), ms. Stop as soon as the predicted freeze is at most this. */
  maxDowntimeMs: number;
  /** Rounds at most, round 0 (the full copy) included. The policy stops at the latest after round `maxRounds - 1`. */
  maxRounds: number;
  /** Pre-copy time at most, ms: stop once it is spent, or when the next round is predicted to end past it. */
  maxTotalMs: number;
  /** Throttle the container's CPU in steps while it writes faster than the link moves pages (`--auto-converge`). */
  autoConverge: boolean;
  /** Fraction by which a round must shrink the dirty set, against the smallest set so far, to count as progress. Default 0.2. */
  minShrink?: number | undefined;
  /** Rounds in a row without progress (and no throttle step left to try) before stopping. Default 2. */
  stallRounds?: number | undefined;
  /** Strictly increasing throttle levels in (0, MAX_THROTTLE]. Default THROTTLE_STEPS. */
  throttleSteps?: readonly number[] | undefined;
}

/**
 * What the freeze costs besides moving the remaining dirty pages: CRIU still dumps every page in the final
 * phase (../shared/platform/criu.md §3, §8), so the overhead grows with RSS: `fixedMs + msPerGiBDump × RSS/GiB`.
 */
export interface FreezeModel {
  /** Freezer, final scan, Docker/runc start, lazy restore, round trips, ms. */
  fixedMs: number;
  /** Final CRIU dump per GiB of RSS, ms. */
  msPerGiBDump: number;
}

/**
 * First guess for this machine's kind, to be refined from pre-copy runs: Ferry's stop-and-copy freeze is
 * about 0.45 s plus a per-GiB part (README "Measured"); CRIU's dump alone costs 0.55–0.8 s/GiB (criu.md §8),
 * rounded up for the slower memory of these VMs. With it a 100 ms target cannot fit, and the policy then
 * stops when rounds stop helping.
 */
export const DEFAULT_FREEZE_MODEL: FreezeModel = Object.freeze({ fixedMs: 450, msPerGiBDump: 1_000 });

/** What one round did, as the source measured it. */
export interface RoundSample {
  /** 0 for the full copy, then 1, 2, … with no gap. */
  round: number;
  /** Pages the round's scan reported written since the previous scan (round 0: every page holding data). */
  dirtyPages: number;
  /** Pages the round sent. */
  pages: number;
  /** Bytes the round sent. */
  bytes: number;
  /** Scan + read + send, ms. */
  durationMs: number;
  /** Time since pre-copy began, at the end of this round, ms. Never goes back. */
  sinceStartMs: number;
  /**
   * Time between this round's scan and the previous one, ms: the window in which `dirtyPages` were written.
   * When absent (or 0), it is taken as the time between the two rounds' starts (`sinceStartMs - durationMs`).
   */
  intervalMs?: number | undefined;
  /**
   * Pages written during this round, if the source counted them with a scan as the round ended (the pages
   * stay owed to the next round). The freeze's dirty set is then known rather than estimated.
   */
  dirtyPagesNext?: number | undefined;
}

export type StopReason =
  /** The predicted freeze is within `maxDowntimeMs`. */
  | 'fits'
  /** The last scan found nothing written: another round has nothing to send, yet the overhead alone exceeds the target. */
  | 'nothing-dirty'
  /**
   * The set did not shrink by `minShrink` and the rates say the next round will not either: the container
   * rewrites pages about as fast as the link moves them (and no throttle step is left, or worth it).
   */
  | 'diverging'
  /** `stallRounds` rounds in a row did not shrink the dirty set by `minShrink`. */
  | 'not-converging'
  | 'max-rounds'
  | 'time-cap';

/** The policy's view after a round, for logs, reports and tests. */
export interface Estimate {
  /** Distinct pages written per second over the last window; null after round 0 (no window yet). */
  dirtyPagesPerS: number | null;
  /** Throughput of the page stream over all rounds so far (bytes-weighted), bytes/s; null until a round moved bytes. */
  throughputBytesPerS: number | null;
  /**
   * Dirty rate in bytes/s ÷ throughput: about the factor by which each round shrinks the set. Near or above
   * 1 − minShrink, another round will not help. (Counting distinct pages, it cannot show much above 1: a
   * set rewritten faster than the link saturates at the hot pages, and reads as ≈ 1.)
   */
  linkRatio: number | null;
  /**
   * Pages predicted dirty if the freeze started now. After round 0: every page sent (the worst case). Later:
   * `dirtyPagesNext` when given; otherwise the last window's pages, scaled up when this round ran longer than
   * that window. Distinct pages written grow with time but never faster than linearly, so for a steady
   * workload this is an upper bound; scaling *down* (rate × a shorter round) would underestimate any
   * workload with a hot set, and stop too early.
   */
  remainingPages: number;
  /** Moving `remainingPages` at the measured throughput, ms; null when no throughput is known yet. */
  transferMs: number | null;
  /** The freeze's cost besides the pages (FreezeModel at this RSS), ms. */
  overheadMs: number;
}

export type Decision =
  | { action: 'continue'; throttle: number; predictedFreezeMs: number; explain: string; estimate: Estimate }
  | { action: 'stop'; reason: StopReason; predictedFreezeMs: number; throttle: number; explain: string; estimate: Estimate };

/** `ConvergenceConfig` with every default filled in. */
export interface ResolvedConvergenceConfig {
  readonly maxDowntimeMs: number;
  readonly maxRounds: number;
  readonly maxTotalMs: number;
  readonly autoConverge: boolean;
  readonly minShrink: number;
  readonly stallRounds: number;
  readonly throttleSteps: readonly number[];
}

/** Immutable; made by `startConvergence`, advanced only by `afterRound`. */
export interface ConvergenceState {
  readonly config: ResolvedConvergenceConfig;
  readonly model: Readonly<FreezeModel>;
  readonly rssBytes: number;
  /** `model` at `rssBytes`, ms. */
  readonly overheadMs: number;
  /** The round `afterRound` expects next. */
  readonly nextRound: number;
  /** The throttle in effect for the next round (never decreases). */
  readonly throttle: number;
  /** Rounds in a row without progress. */
  readonly stalled: number;
  /** The throttle just went up: the next round's dirty count was written before it applied, so it does not count. */
  readonly settling: boolean;
  /** Smallest `dirtyPages` of any round so far. */
  readonly bestDirtyPages: number | null;
  /** Upper bound on pages that can be dirty (RSS or the most pages seen). */
  readonly maxPages: number;
  /** Bytes that moved, and the seconds they took at each round's measured throughput. */
  readonly sentBytes: number;
  readonly sendSeconds: number;
  /** Round-trip, scan and other time of the last round beyond its bytes at its throughput, ms. */
  readonly roundFixedMs: number;
  readonly last: { readonly sinceStartMs: number; readonly durationMs: number } | null;
  readonly stopped: StopReason | null;
}

export interface RoundOutcome { state: ConvergenceState; decision: Decision }

function invalid(what: string, v: unknown, want: string): never {
  throw new FerryError('E_INVALID_ARGUMENT', `convergence: ${what} must be ${want}, got ${String(v)}`, { details: { field: what } });
}
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
function nonNegative(what: string, v: unknown): number {
  if (!finite(v) || v < 0) invalid(what, v, 'a finite number ≥ 0');
  return v;
}
function positive(what: string, v: unknown): number {
  if (!finite(v) || v <= 0) invalid(what, v, 'a finite number > 0');
  return v;
}
function count(what: string, v: unknown, min = 0): number {
  if (!Number.isSafeInteger(v) || (v as number) < min) invalid(what, v, `an integer ≥ ${min}`);
  return v as number;
}

/** Validates the limits and the model; throws E_INVALID_ARGUMENT on anything negative, NaN, infinite or out of range. */
export function startConvergence(config: ConvergenceConfig, model: FreezeModel, rssBytes: number): ConvergenceState {
  positive('maxDowntimeMs', config.maxDowntimeMs);
  count('maxRounds', config.maxRounds, 1);
  positive('maxTotalMs', config.maxTotalMs);
  if (typeof config.autoConverge !== 'boolean') invalid('autoConverge', config.autoConverge, 'a boolean');
  const minShrink = config.minShrink ?? DEFAULT_MIN_SHRINK;
  if (!finite(minShrink) || minShrink < 0 || minShrink >= 1) invalid('minShrink', minShrink, 'a fraction in [0, 1)');
  const stallRounds = count('stallRounds', config.stallRounds ?? DEFAULT_STALL_ROUNDS, 1);
  const steps = config.throttleSteps ?? THROTTLE_STEPS;
  steps.forEach((t, i) => {
    if (!finite(t) || t <= 0 || t > MAX_THROTTLE || (i > 0 && t <= steps[i - 1]!)) invalid('throttleSteps', steps.join(','), `strictly increasing, each in (0, ${MAX_THROTTLE}]`);
  });
  nonNegative('model.fixedMs', model.fixedMs);
  nonNegative('model.msPerGiBDump', model.msPerGiBDump);
  nonNegative('rssBytes', rssBytes);
  return Object.freeze({
    config: Object.freeze({
      maxDowntimeMs: config.maxDowntimeMs, maxRounds: config.maxRounds, maxTotalMs: config.maxTotalMs, autoConverge: config.autoConverge,
      minShrink, stallRounds, throttleSteps: Object.freeze([...steps]),
    }),
    model: Object.freeze({ fixedMs: model.fixedMs, msPerGiBDump: model.msPerGiBDump }),
    rssBytes,
    overheadMs: model.fixedMs + (rssBytes / GiB) * model.msPerGiBDump,
    nextRound: 0, throttle: 0, stalled: 0, settling: false, bestDirtyPages: null,
    maxPages: Math.floor(rssBytes / PAGE_BYTES), sentBytes: 0, sendSeconds: 0, roundFixedMs: 0, last: null, stopped: null,
  });
}

function validateSample(s: ConvergenceState, x: RoundSample, throughput: number): void {
  if (x.round !== s.nextRound) {
    throw new FerryError('E_INVALID_ARGUMENT', `convergence: expected round ${s.nextRound}, got ${String(x.round)}`, { details: { field: 'round' } });
  }
  count('dirtyPages', x.dirtyPages);
  count('pages', x.pages);
  count('bytes', x.bytes);
  nonNegative('durationMs', x.durationMs);
  nonNegative('sinceStartMs', x.sinceStartMs);
  if (x.intervalMs !== undefined) nonNegative('intervalMs', x.intervalMs);
  if (x.dirtyPagesNext !== undefined) count('dirtyPagesNext', x.dirtyPagesNext);
  if (s.last && x.sinceStartMs < s.last.sinceStartMs) invalid('sinceStartMs', x.sinceStartMs, `≥ the previous round's ${s.last.sinceStartMs}`);
  nonNegative('throughput', throughput);
  // A round that moved bytes took time to move them; 0 is only "not measured" for a round that sent nothing.
  if (x.bytes > 0 && throughput === 0) invalid('throughput', throughput, '> 0 for a round that sent bytes');
}

/** The window in which this round's dirty pages were written, ms (never below 1 ms, so a rate is always finite). */
function windowMs(s: ConvergenceState, x: RoundSample): number {
  if (x.intervalMs !== undefined && x.intervalMs > 0) return x.intervalMs;
  const last = s.last!;
  const between = (x.sinceStartMs - x.durationMs) - (last.sinceStartMs - last.durationMs);
  return Math.max(1, between > 0 ? between : last.durationMs);
}

/**
 * Feeds one finished round to the policy. `measuredThroughputBytesPerS` is the page stream's rate in that
 * round (0 only for a round that sent nothing). Checks, in order: the freeze fits; nothing is dirty; the set
 * is diverging (it did not shrink and the rates say it will not); `stallRounds` rounds in a row without
 * progress; the round cap; the time cap. When auto-converge is on, a round
 * without progress first steps the throttle up, and the round after a step does not count (its dirty pages
 * were written before the step applied). Throws E_INVALID_ARGUMENT on nonsense input and
 * E_ILLEGAL_TRANSITION when called again after a stop.
 */
export function afterRound(state: ConvergenceState, sample: RoundSample, measuredThroughputBytesPerS: number): RoundOutcome {
  const s = state;
  if (s.stopped) throw new FerryError('E_ILLEGAL_TRANSITION', `convergence: round ${String(sample.round)} reported after the policy stopped (${s.stopped})`);
  validateSample(s, sample, measuredThroughputBytesPerS);
  const c = s.config;
  const x = sample;
  const n = x.round;
  const tp = measuredThroughputBytesPerS;

  // Throughput: bytes-weighted over every round, so a small round dominated by scan and round-trip time does not swing it.
  const moved = x.bytes > 0;
  const sentBytes = s.sentBytes + (moved ? x.bytes : 0);
  const sendSeconds = s.sendSeconds + (moved ? x.bytes / tp : 0);
  const link = sendSeconds > 0 ? sentBytes / sendSeconds : null;
  const roundFixedMs = moved ? Math.max(0, x.durationMs - (x.bytes * 1000) / tp) : x.durationMs;
  const maxPages = Math.max(s.maxPages, x.dirtyPages, x.pages, x.dirtyPagesNext ?? 0);

  // Dirty set at a freeze now (see Estimate.remainingPages). The scan opens a round, so the round's length is
  // how long the pages have been exposed to writes since.
  let rate: number | null = null;
  let win = 0;
  let remaining = x.dirtyPagesNext ?? x.dirtyPages;
  if (n > 0) {
    win = windowMs(s, x);
    rate = (x.dirtyPages * 1000) / win;
    if (x.dirtyPagesNext === undefined) remaining = Math.min(maxPages, x.durationMs > win ? (x.dirtyPages * x.durationMs) / win : x.dirtyPages);
  }
  const transferMs = remaining === 0 ? 0 : link === null ? null : (remaining * PAGE_BYTES * 1000) / link;
  const predicted = s.overheadMs + (transferMs ?? 0);
  const linkRatio = rate !== null && link !== null ? (rate * PAGE_BYTES) / link : null;
  const estimate: Estimate = Object.freeze({ dirtyPagesPerS: rate, throughputBytesPerS: link, linkRatio, remainingPages: remaining, transferMs, overheadMs: s.overheadMs });

  const fits = transferMs !== null && predicted <= c.maxDowntimeMs;
  // Two signals: the set seen did not shrink enough; the rates say the next round will not shrink it enough.
  const shrank = s.bestDirtyPages === null || x.dirtyPages <= (1 - c.minShrink) * s.bestDirtyPages;
  const slow = linkRatio !== null && linkRatio > 1 - c.minShrink;
  // Round 0 has nothing to compare with; the round after a throttle step measured the old throttle.
  const judged = n > 0 && !s.settling;
  const noProgress = judged && (!shrank || slow);
  // When both agree, another round is known not to help: no need to wait stallRounds (rounds are long then).
  const diverging = judged && !shrank && slow;
  // Throttling costs the workload; only worth it when it can make the freeze fit, or the pages alone cost more than the whole target.
  const worthThrottling = s.overheadMs < c.maxDowntimeMs || (transferMs ?? 0) >= c.maxDowntimeMs;
  const step = c.autoConverge ? c.throttleSteps.find((t) => t > s.throttle) : undefined;
  const escalate = noProgress && !fits && step !== undefined && worthThrottling;
  const stalled = escalate ? 0 : noProgress ? s.stalled + 1 : judged ? 0 : s.stalled;
  const nextRoundMs = transferMs === null ? null : transferMs + roundFixedMs;

  let reason: StopReason | null = null;
  let why = '';
  if (fits) reason = 'fits';
  else if (remaining === 0) {
    reason = 'nothing-dirty';
    why = `no dirty pages are left to send; the dump/restore overhead alone is ${fmtMs(s.overheadMs)} at ${fmtBytes(s.rssBytes)} RSS`;
  } else if (diverging && !escalate) {
    reason = 'diverging';
    why = `the container rewrites pages about as fast as the link moves them (ratio ${linkRatio!.toFixed(2)}), so another round will not shrink the set; ${throttleNote(s, step, worthThrottling)}`;
  } else if (stalled >= c.stallRounds) {
    reason = 'not-converging';
    why = `the dirty set has not shrunk by ${pct(c.minShrink)} below ${fmtInt(s.bestDirtyPages ?? 0)} pages for ${stalled} round${stalled === 1 ? '' : 's'}`
      + (s.overheadMs > c.maxDowntimeMs ? `; the dump/restore overhead alone is ${fmtMs(s.overheadMs)}, above the target` : `; ${throttleNote(s, step, worthThrottling)}`);
  } else if (n + 1 >= c.maxRounds) {
    reason = 'max-rounds';
    why = `round cap ${c.maxRounds} reached`;
  } else if (x.sinceStartMs >= c.maxTotalMs) {
    reason = 'time-cap';
    why = `${fmtMs(x.sinceStartMs)} of pre-copy, the cap is ${fmtMs(c.maxTotalMs)}`;
  } else if (n > 0 && nextRoundMs !== null && x.sinceStartMs + nextRoundMs > c.maxTotalMs) {
    reason = 'time-cap';
    why = `the next round (~${fmtMs(nextRoundMs)}) would end past the ${fmtMs(c.maxTotalMs)} cap`;
  }

  const head = headline(n, x, rate, win, link, remaining, predicted, transferMs, c.maxDowntimeMs);
  const base = {
    config: c, model: s.model, rssBytes: s.rssBytes, overheadMs: s.overheadMs, nextRound: n + 1,
    bestDirtyPages: s.bestDirtyPages === null ? x.dirtyPages : Math.min(s.bestDirtyPages, x.dirtyPages),
    maxPages, sentBytes, sendSeconds, roundFixedMs, last: Object.freeze({ sinceStartMs: x.sinceStartMs, durationMs: x.durationMs }),
  };
  if (reason !== null) {
    const decision: Decision = Object.freeze({
      action: 'stop', reason, predictedFreezeMs: predicted, throttle: s.throttle, estimate,
      explain: `${head}${why ? `; ${why}` : ''}`,
    });
    return { state: Object.freeze({ ...base, throttle: s.throttle, stalled, settling: s.settling, stopped: reason }), decision };
  }
  const throttle = escalate ? step! : s.throttle;
  let tail = 'another round';
  if (escalate) tail = `${slow ? `writes keep up with the link (ratio ${linkRatio!.toFixed(2)})` : `no ${pct(c.minShrink)} shrink`}: throttling the CPU ${pct(s.throttle)} → ${pct(throttle)}`;
  else if (noProgress) tail = `another round (no progress ${stalled}/${c.stallRounds})`;
  else if (s.settling && n > 0) tail = `another round (this count predates the ${pct(s.throttle)} throttle)`;
  if (transferMs === null) tail += '; no throughput measured yet';
  const decision: Decision = Object.freeze({ action: 'continue', throttle, predictedFreezeMs: predicted, estimate, explain: `${head}; ${tail}` });
  return { state: Object.freeze({ ...base, throttle, stalled, settling: escalate, stopped: null }), decision };
}

function throttleNote(s: ConvergenceState, step: number | undefined, worth: boolean): string {
  if (!s.config.autoConverge) return 'auto-converge is off';
  if (step === undefined) return `the CPU is already throttled ${pct(s.throttle)}, the most allowed`;
  if (!worth) return 'throttling cannot bring the freeze within the target';
  return `throttled ${pct(s.throttle)}`;
}

function headline(
  n: number, x: RoundSample, rate: number | null, win: number, link: number | null, remaining: number, predicted: number, transferMs: number | null, target: number,
): string {
  const within = transferMs !== null && predicted <= target;
  // Never print "100 ms > 100 ms": show the decimal that makes the comparison visible.
  const shown = fmtMs(predicted) === fmtMs(target) && predicted !== target ? `${predicted.toFixed(1)} ms` : fmtMs(predicted);
  const cmp = `${within ? '≤' : '>'} ${fmtMs(target)}`;
  const linkText = link === null ? '' : `, link ${fmtBytes(link)}/s`;
  if (n === 0) {
    return `round 0: ${fmtInt(x.pages)} pages (${fmtBytes(x.bytes)}) in ${fmtMs(x.durationMs)}${linkText} → predicted freeze ${transferMs === null ? 'at least' : 'at most'} ${shown}${transferMs === null ? '' : ' (if every page were rewritten)'} ${cmp}`;
  }
  return `round ${n}: ${fmtInt(x.dirtyPages)} dirty pages in ${fmtMs(win)} (${fmtBytes((rate ?? 0) * PAGE_BYTES)}/s${linkText})`
    + ` → ~${fmtInt(remaining)} left (${fmtBytes(remaining * PAGE_BYTES)}) → predicted freeze ${shown} ${cmp}`;
}

const fmtInt = (v: number): string => Math.round(v).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
const pct = (f: number): string => `${Math.round(f * 100)} %`;
function fmtMs(ms: number): string {
  if (ms < 10) return `${(Math.round(ms * 10) / 10).toString()} ms`;
  if (ms < 10_000) return `${fmtInt(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}
function fmtBytes(b: number): string {
  const [v, unit] = b < 1024 ? [b, 'B'] : b < 2 ** 20 ? [b / 1024, 'KiB'] : b < GiB ? [b / 2 ** 20, 'MiB'] : [b / GiB, 'GiB'];
  return `${unit !== 'B' && v < 10 ? v.toFixed(1) : fmtInt(v)} ${unit}`;
}
