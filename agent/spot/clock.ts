// The time sources every spot watcher takes by injection, so tests can skew and advance time without real timers.

/**
 * Wall and monotonic time plus a cancellable sleep. Watchers never call `Date.now`, `performance.now` or
 * `setTimeout` directly: a fake clock then controls every poll interval, back-off and request timeout.
 */
export interface Clock {
  /** Wall-clock ms since the epoch. Only used to read a provider's absolute time, once, on receipt. */
  nowWall(): number;
  /** Monotonic ms. Every deadline Ferry keeps is on this clock, so NTP steps and host skew cannot move it. */
  nowMono(): number;
  /**
   * Resolves after `ms` of monotonic time, or as soon as `signal` aborts, whichever is first. It never rejects:
   * loops check `signal.aborted` afterwards, which keeps cancellation out of their error paths.
   */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

/** The process's real clocks. */
export const realClock: Clock = {
  nowWall: () => Date.now(),
  nowMono: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) { resolve(); return; }
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal.addEventListener('abort', done, { once: true });
    }),
};
