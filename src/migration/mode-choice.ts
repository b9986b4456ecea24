// `--mode auto` (pure): pick stop-and-copy, pre-copy or post-copy from what was measured on the running
// container, and say why. The numbers are this machine's kind (README "Measured", docs/postcopy.md).

import type { MigrationMode, MigrationReport } from '../protocol/messages.js';

const GiB = 2 ** 30;
const PAGE_BYTES = 4096;

/** What the choice is made from. */
export interface ModeInputs {
  rssBytes: number;
  /** Pages the container wrote per second in a short sample (distinct pages); null when it could not be measured. */
  dirtyPagesPerSec: number | null;
  /** Page throughput between the two hosts, bytes/s (learned from earlier migrations, or the default). */
  linkBytesPerSec: number;
  /** `--max-downtime`, ms. */
  maxDowntimeMs: number;
  /** Time the whole migration may take (its timeout, or what a spot notice leaves), ms. */
  deadlineMs: number;
  /** The source can track writes (userfaultfd with write-protect). */
  uffd: boolean;
  /**
   * Post-copy is possible: the destination can run a task whose memory has not arrived (userfaultfd), and the
   * container is not a pod's (a pod moves by stop-and-copy or pre-copy). Absent: not considered.
   */
  postcopy?: boolean;
}

/** The costs the choice predicts with; each figure measured here (see the field comments). */
export interface ModeModel {
  /** Stop-and-copy freeze = fixed + per GiB of RSS. */
  stopCopyFixedMs: number;
  stopCopyMsPerGiB: number;
  /** Pre-copy's lazy final phase, besides the final delta and its per-GiB part: runc's dump, docker start, round trips. */
  precopyFixedMs: number;
  /**
   * Above this write rate pre-copy does not pay here: the rounds stop converging and the final delta
   * (read and shipped inside the freeze) makes the freeze no shorter than stop-and-copy's (1 GiB at
   * 24 k pages/s: pre-copy 3.4 s stall p50, stop-and-copy 2.9 s; at 2.4 k pages/s: 0.6 s against 2.8 s).
   * With criu lazy-pages the fill also crawled under such writers (3.5 min); ferry-lazyd fills it in 4.6 s.
   */
  lazyFaultLimitPagesPerSec: number;
  /** The part of pre-copy's lazy final phase that grows with memory: the dump still pipes every page, the last scan walks them. */
  precopyMsPerGiB: number;
  /** Post-copy's freeze: the same lazy dump with no last scan and no delta, then the restore (0.30 s at 256 MiB, 0.34 s at 1 GiB). */
  postcopyFixedMs: number;
  postcopyMsPerGiB: number;
  /**
   * Post-copy only for a container this quiet: after its freeze, each page it writes that has not arrived yet
   * is a round trip to the source (at 2 441 pages/s the stall grew from 0.30 s to 0.74–1.8 s here).
   */
  postcopyMaxPagesPerSec: number;
  /** How fast a post-copy's pages follow after the freeze (1 GiB in 6.4 s, 256 MiB in 2.1 s here). */
  postcopyFillBytesPerSec: number;
  /** Pre-copy only pays when the writer dirties less than this fraction of what the link moves. */
  maxDirtyToLink: number;
  /**
   * Pre-copy (and post-copy) must promise a freeze at least this fraction shorter: pre-copy moves more bytes,
   * takes longer and slows the writer while tracked, post-copy risks the container on the source's health
   * until its memory arrived, so a near-tie goes to the plainer mode (a 48 MiB Redis once predicted 600 ms
   * against 613 ms, and its client saw 1.7 s with pre-copy against 1.2 s with stop-and-copy).
   */
  minGain: number;
}

// Calibrated 2026-12-04 (bench/results/precopy-20261204-040201.json and -042432.json, after CRIU's kernel-probe
// cache and the faster release of the source): stop-and-copy 0.42 / 0.87 / 3.1 s at 64 / 256 / 1024 MiB,
// pre-copy 0.23 / 0.31–0.43 / 0.47–0.62 s, post-copy 0.30 / 0.34 s at 256 / 1024 MiB (idle, stall p50).
export const DEFAULT_MODE_MODEL: ModeModel = Object.freeze({
  stopCopyFixedMs: 300,
  stopCopyMsPerGiB: 2_600,
  precopyFixedMs: 250,
  precopyMsPerGiB: 300,
  postcopyFixedMs: 290,
  postcopyMsPerGiB: 50,
  postcopyMaxPagesPerSec: 100,
  postcopyFillBytesPerSec: 128 * 2 ** 20,
  lazyFaultLimitPagesPerSec: 5_000,
  maxDirtyToLink: 0.5,
  minGain: 0.2,
});

/** Without a measurement from an earlier migration between the two hosts: pre-copy's round 0 rate here under load. */
export const DEFAULT_LINK_BYTES_PER_SEC = 100 * 2 ** 20;

export type ModeReason = 'no-uffd' | 'not-measured' | 'heavy-writer' | 'outruns-link' | 'deadline' | 'fits-downtime' | 'quiet-postcopy' | 'shorter-freeze' | 'no-gain';

export interface ModeChoice {
  mode: MigrationMode;
  reason: ModeReason;
  explain: string;
  predictedStopCopyFreezeMs: number;
  /** Null when pre-copy was ruled out before its freeze could be predicted. */
  predictedPrecopyFreezeMs: number | null;
  predictedPrecopyTotalMs: number | null;
  /** Null when post-copy was not considered (not possible, or the container writes too much for it). */
  predictedPostcopyFreezeMs: number | null;
}

const r0 = (x: number): number => Math.round(x);
const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;

export function chooseMode(i: ModeInputs, m: ModeModel = DEFAULT_MODE_MODEL): ModeChoice {
  const stopCopy = m.stopCopyFixedMs + (i.rssBytes / GiB) * m.stopCopyMsPerGiB;
  const base = { predictedStopCopyFreezeMs: r0(stopCopy), predictedPrecopyFreezeMs: null, predictedPrecopyTotalMs: null, predictedPostcopyFreezeMs: null };
  const pick = (mode: MigrationMode, reason: ModeReason, explain: string, more: Partial<ModeChoice> = {}): ModeChoice => ({ ...base, ...more, mode, reason, explain });
  if (!i.uffd) return pick('stop-and-copy', 'no-uffd', 'the source has no userfaultfd write-protect: writes cannot be tracked, so memory moves inside the freeze');
  if (i.dirtyPagesPerSec === null) return pick('stop-and-copy', 'not-measured', 'the write rate could not be measured: pre-copy would run blind');
  const rate = i.dirtyPagesPerSec;
  if (rate > m.lazyFaultLimitPagesPerSec)
    return pick('stop-and-copy', 'heavy-writer', `writes ${r0(rate)} pages/s, above the ${m.lazyFaultLimitPagesPerSec} pages/s pre-copy's rounds can outpace here: its final delta would make the freeze no shorter than stop-and-copy's`);
  const ratio = (rate * PAGE_BYTES) / i.linkBytesPerSec;
  if (ratio >= m.maxDirtyToLink)
    return pick('stop-and-copy', 'outruns-link', `writes ${((rate * PAGE_BYTES) / 1e6).toFixed(1)} MB/s, ${(ratio * 100).toFixed(0)}% of the link's ${((i.linkBytesPerSec) / 1e6).toFixed(0)} MB/s: rounds would not converge`);
  // Rounds shrink geometrically by `ratio`; what is written during the last one travels inside the freeze.
  const round0Ms = (i.rssBytes / i.linkBytesPerSec) * 1000;
  const roundsMs = round0Ms / (1 - ratio);
  const lastRoundMs = Math.max(round0Ms * ratio ** 3, 50);
  const deltaBytes = rate * (lastRoundMs / 1000) * PAGE_BYTES;
  const deltaMs = (deltaBytes / i.linkBytesPerSec) * 1000;
  const precopy = m.precopyFixedMs + (i.rssBytes / GiB) * m.precopyMsPerGiB + deltaMs;
  const precopyTotal = roundsMs + precopy;
  const postcopy = i.postcopy && rate <= m.postcopyMaxPagesPerSec ? m.postcopyFixedMs + (i.rssBytes / GiB) * m.postcopyMsPerGiB : null;
  const more = { predictedPrecopyFreezeMs: r0(precopy), predictedPrecopyTotalMs: r0(precopyTotal), predictedPostcopyFreezeMs: postcopy === null ? null : r0(postcopy) };
  if (precopyTotal > i.deadlineMs && stopCopy < precopyTotal)
    return pick('stop-and-copy', 'deadline', `pre-copy of ${mib(i.rssBytes)} would take ~${r0(precopyTotal)} ms, past the ${r0(i.deadlineMs)} ms left; stop-and-copy takes ~${r0(stopCopy)} ms`, more);
  if (stopCopy <= i.maxDowntimeMs)
    return pick('stop-and-copy', 'fits-downtime', `stop-and-copy's ~${r0(stopCopy)} ms already fits --max-downtime ${i.maxDowntimeMs} ms, with fewer bytes moved and a shorter total than pre-copy`, more);
  if (postcopy !== null) {
    const fillMs = (i.rssBytes / m.postcopyFillBytesPerSec) * 1000;
    // Post-copy moves each page once, but the container is lost if the source fails before the last one
    // arrived: only worth that where it freezes clearly shorter than both others, and its fill fits the time.
    if (postcopy < Math.min(precopy, stopCopy) * (1 - m.minGain) && postcopy + fillMs <= i.deadlineMs)
      return pick('postcopy', 'quiet-postcopy', `writes ${r0(rate)} pages/s (≤ ${m.postcopyMaxPagesPerSec}): few faults will wait for the source; predicted freeze ${r0(postcopy)} ms with post-copy against ${r0(precopy)} ms with pre-copy and ${r0(stopCopy)} ms with stop-and-copy (${mib(i.rssBytes)}); its memory follows in ~${r0(fillMs)} ms, during which a failure of the source loses it`, more);
  }
  if (precopy < stopCopy * (1 - m.minGain))
    return pick('precopy', 'shorter-freeze', `predicted freeze ${r0(precopy)} ms with pre-copy against ${r0(stopCopy)} ms with stop-and-copy (${mib(i.rssBytes)}, ${r0(rate)} pages/s written)`, more);
  return pick('stop-and-copy', 'no-gain', `pre-copy would not shorten the freeze by ${Math.round(m.minGain * 100)}% (${r0(precopy)} ms against ${r0(stopCopy)} ms for ${mib(i.rssBytes)})`, more);
}

/**
 * What a finished migration says about its link: pre-copy's rounds (mostly round 0, the bulk copy while the
 * container runs), else the stop-and-copy transfer. Small transfers say more about round trips than
 * throughput and are ignored.
 */
export function observedLinkRate(r: MigrationReport): number | null {
  if (r.result !== 'succeeded') return null;
  if (r.rounds?.length) {
    const bytes = r.rounds.reduce((a, x) => a + x.bytes, 0);
    const ms = r.rounds.reduce((a, x) => a + x.durationMs, 0);
    return bytes >= 16 * 2 ** 20 && ms > 0 ? (bytes / ms) * 1000 : null;
  }
  const t = r.phases.transfer;
  return r.bytesTotal >= 16 * 2 ** 20 && t !== undefined && t > 0 ? (r.bytesTotal / t) * 1000 : null;
}
