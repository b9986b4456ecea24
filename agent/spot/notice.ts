// The provider-neutral preemption notice that every spot watcher emits and the controller's drain consumes.

import type { Clock } from './clock.js';

/** Who raised the notice: a cloud's metadata service, or an operator (`ferry drain <host>`). */
export type NoticeProvider = 'aws' | 'gcp' | 'azure' | 'manual';

/**
 * - `termination`: the instance will be stopped/terminated/hibernated at the deadline (AWS instance-action,
 *   Azure Terminate, a manual drain).
 * - `preemption`: a spot/preemptible reclaim with a short fixed budget (GCP preempted, Azure Preempt).
 * - `rebalance`: an early, soft warning with no deadline (AWS rebalance recommendation): time to start pre-copy.
 */
export type NoticeKind = 'termination' | 'rebalance' | 'preemption';

/** One eviction notice, emitted once per `id` by a watcher. */
export interface Notice {
  provider: NoticeProvider;
  kind: NoticeKind;
  /** The host the notice is about, when the source knows it (a manual drain names it; watchers take it by option). */
  host?: string;
  /** `performance.now()` (the injected monotonic clock) when the notice was read. */
  receivedAtMono: number;
  /**
   * Local monotonic deadline, or null when the provider gives none (a rebalance recommendation). A provider's
   * wall-clock time is converted to remaining ms once, on receipt, so clock skew never matters afterwards.
   */
  deadlineMono: number | null;
  /** The provider's payload as received (validated), for logs and forensics. */
  raw: unknown;
  /**
   * Dedupe key, stable across polls of the same notice: `aws:<action>:<time>`, `aws:rebalance:<noticeTime>`,
   * `azure:<EventId>:<DocumentIncarnation first seen in>`, `gcp:preempted`, `manual:<uuid or caller id>`.
   */
  id: string;
}

/** The events of every notice source (watchers and the manual trigger), for `EventEmitter<NoticeEvents>`. */
export interface NoticeEvents {
  notice: [Notice];
}

/**
 * Converts a provider's absolute time into a local monotonic deadline: the remaining ms are measured once against
 * the local wall clock and added to the monotonic now. A time already past yields "now" (no time left), never a
 * deadline in the past that would make remaining-time arithmetic negative.
 */
export function deadlineFromWall(clock: Clock, providerWallMs: number): number {
  return clock.nowMono() + Math.max(0, providerWallMs - clock.nowWall());
}
