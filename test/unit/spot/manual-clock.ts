// A fake Clock for tests: time moves only when the test says so, and pending sleeps can be awaited and inspected.

import type { Clock } from '../../../agent/spot/clock.js';

interface Sleeper { ms: number; dueMono: number; wake: () => void }

/** A deterministic Clock: `advance()` moves wall and monotonic time together and wakes the sleeps that fell due. */
export class ManualClock implements Clock {
  private wall: number;
  private mono: number;
  private readonly sleepers = new Set<Sleeper>();
  private readonly watchers = new Set<() => void>();

  /** Defaults: a whole-second wall time (RFC 1123 dates round to seconds) and a non-zero monotonic origin. */
  constructor(o: { wall?: number; mono?: number } = {}) {
    this.wall = o.wall ?? Date.UTC(2026, 10, 22, 10, 0, 0);
    this.mono = o.mono ?? 1_000;
  }

  nowWall(): number { return this.wall; }
  nowMono(): number { return this.mono; }

  sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const s: Sleeper = { ms, dueMono: this.mono + ms, wake: () => { this.sleepers.delete(s); signal.removeEventListener('abort', s.wake); resolve(); } };
      signal.addEventListener('abort', s.wake, { once: true });
      this.sleepers.add(s);
      for (const w of [...this.watchers]) w();
    });
  }

  /** Moves both clocks forward and wakes every sleep now due, earliest first. */
  advance(ms: number): void {
    this.mono += ms;
    this.wall += ms;
    for (const s of [...this.sleepers].sort((a, b) => a.dueMono - b.dueMono)) if (s.dueMono <= this.mono) s.wake();
  }

  /** Steps only the wall clock, as NTP or an operator would; monotonic time does not move. */
  stepWall(ms: number): void { this.wall += ms; }

  /** Requested durations of the sleeps pending now. */
  pending(): number[] { return [...this.sleepers].map((s) => s.ms); }

  /** Resolves with a pending sleep's duration as soon as one matching `match` exists (at once if one does). */
  whenSleeping(match: (ms: number) => boolean = () => true): Promise<number> {
    return new Promise((resolve) => {
      const check = (): void => {
        const s = [...this.sleepers].find((x) => match(x.ms));
        if (s === undefined) return;
        this.watchers.delete(check);
        resolve(s.ms);
      };
      this.watchers.add(check);
      check();
    });
  }

  /**
   * "One more poll": waits for the loop's sleep of `ms`, lets it elapse, then waits until the loop sleeps again
   * (for `next` ms, default `ms`), so the poll it triggered has finished. Request timeouts in tests use other
   * durations, which is what tells the two kinds of sleep apart.
   */
  async tick(ms: number, next: number = ms): Promise<void> {
    await this.whenSleeping((x) => x === ms);
    this.advance(ms);
    await this.whenSleeping((x) => x === next);
  }
}
