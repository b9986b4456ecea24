// Capped exponential back-off for retrying an unreachable metadata endpoint.

/** Back-off limits: the first retry waits `initialMs`, each further one twice as long, never more than `maxMs`. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/**
 * The wait after the `failures`-th consecutive failure (1-based). No jitter: each host polls only its own
 * link-local metadata service, so there is no shared server for synchronised retries to stampede.
 */
export function backoffDelay(failures: number, b: Backoff): number {
  const exp = Math.min(Math.max(0, failures - 1), 30); // 2^30 already exceeds any sane cap; avoids Infinity
  return Math.min(b.maxMs, b.initialMs * 2 ** exp);
}
