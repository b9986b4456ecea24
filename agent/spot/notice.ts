// Preemption notices as the agent reports them, whatever the provider, and the clock they are measured with.

/** Time sources, injected so tests can skew the wall clock without touching timers. */
export interface Clock {
  /** Wall-clock ms since the epoch: only to read providers' absolute times. */
  nowWall(): number;
  /** Monotonic ms: every deadline Ferry keeps is on this clock. */
  nowMono(): number;
}
export const realClock: Clock = { nowWall: () => Date.now(), nowMono: () => performance.now() };

export type Provider = 'aws' | 'gcp' | 'azure' | 'manual';
export type NoticeKind = 'termination' | 'rebalance' | 'preemption';

export interface Notice {
  provider: Provider;
  kind: NoticeKind;
  /** Dedupe key: the same notice seen on two polls is one notice. */
  id: string;
  receivedAtMono: number;
  /**
   * Local monotonic deadline, or null when the provider gives none (a rebalance recommendation). A provider's
   * wall-clock time is converted once, on receipt, so clock skew never matters afterwards.
   */
  deadlineMono: number | null;
  raw: unknown;
}

/** Remaining ms until a provider's absolute time, read once against the local wall clock. */
export function monoDeadline(clock: Clock, wallDeadlineMs: number): number {
  return clock.nowMono() + Math.max(0, wallDeadlineMs - clock.nowWall());
}

/** GCP gives no time with the notice; its documented budget is 30 s from the signal. */
export const GCP_PREEMPTION_BUDGET_MS = 30_000;
