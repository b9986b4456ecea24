// Deadline-aware drain planning (pure): what leaves a doomed host, in which order, where to, and what cannot make it.

/** One opted-in container on the doomed host. */
export interface DrainItem { container: string; rssBytes: number; priority: number }

/** Seconds a stop-and-copy takes as a function of memory, measured (see README) and refined from real runs. */
export interface DurationModel { fixedMs: number; msPerGiB: number }
/** Conservative defaults from this machine's benchmark: 0.5 s at 64 MiB, 3.2 s at 1 GiB, plus headroom. */
export const DEFAULT_MODEL: DurationModel = { fixedMs: 800, msPerGiB: 3_500 };

export interface PlannedMove {
  container: string;
  to: string | null;
  estimateMs: number;
  /** Offsets from the plan's start, in ms, assuming the lanes run as planned. */
  startsAtMs: number;
  endsAtMs: number;
  fits: boolean;
  reason: string | null;
}

export interface DrainPlanInput {
  items: DrainItem[];
  /** Hosts that may receive (connected, not cordoned, not the doomed one). */
  destinations: string[];
  /** Time left before the host dies; null when there is no deadline (a rebalance recommendation). */
  remainingMs: number | null;
  /** Migrations that may run at once from this host. */
  concurrency: number;
  model: DurationModel;
  /** Finish this long before the deadline: the last migration must not end as the host dies. */
  marginMs?: number;
}

export const estimateMs = (m: DurationModel, rssBytes: number): number => Math.round(m.fixedMs + (rssBytes / 2 ** 30) * m.msPerGiB);

/**
 * Highest priority first; within a priority, the quickest first, so that as many containers as possible
 * make it out. Each move takes the lane that frees up first; what would end after the deadline is reported
 * as not fitting now, not discovered later.
 */
export function planDrain(i: DrainPlanInput): PlannedMove[] {
  const margin = i.marginMs ?? 2_000;
  const lanes = Array.from({ length: Math.max(1, i.concurrency) }, () => 0);
  const load = new Map(i.destinations.map((d) => [d, 0]));
  const ordered = [...i.items].sort((a, b) => b.priority - a.priority || a.rssBytes - b.rssBytes || a.container.localeCompare(b.container));
  const out: PlannedMove[] = [];
  for (const item of ordered) {
    const est = estimateMs(i.model, item.rssBytes);
    if (i.destinations.length === 0) {
      out.push({ container: item.container, to: null, estimateMs: est, startsAtMs: 0, endsAtMs: est, fits: false, reason: 'no host can receive it' });
      continue;
    }
    const lane = lanes.indexOf(Math.min(...lanes));
    const start = lanes[lane]!;
    const end = start + est;
    const fits = i.remainingMs === null || end <= i.remainingMs - margin;
    // The least loaded destination, so two moves do not crowd one host.
    const to = [...load.entries()].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))[0]![0];
    if (fits) {
      lanes[lane] = end;
      load.set(to, load.get(to)! + 1);
    }
    out.push({
      container: item.container, to: fits ? to : null, estimateMs: est, startsAtMs: start, endsAtMs: end, fits,
      reason: fits ? null : `needs ~${(est / 1000).toFixed(1)} s from +${(start / 1000).toFixed(1)} s; ${(((i.remainingMs ?? 0) - margin) / 1000).toFixed(1)} s usable`,
    });
  }
  return out;
}

/** Refines the model from a finished migration (exponential moving average of the per-GiB cost). */
export function learn(m: DurationModel, rssBytes: number, totalMs: number): DurationModel {
  const gib = rssBytes / 2 ** 30;
  if (gib < 0.05) return m; // small containers say little about per-GiB cost
  const observed = Math.max(0, (totalMs - m.fixedMs) / gib);
  return { fixedMs: m.fixedMs, msPerGiB: Math.round(0.7 * m.msPerGiB + 0.3 * observed) };
}
