// The polling loop every provider watcher shares: dedupe, one warning per outage, back-off, abort.

import type { Logger } from '../../src/log/logger.js';
import type { Notice } from './notice.js';
import { deadline } from '../../src/util/abort.js';

export interface WatcherOptions {
  /** Base URL of the metadata service (the real one, or an emulator in tests). */
  endpoint: string;
  pollMs: number;
  /** Per-request timeout. */
  timeoutMs: number;
  log: Logger;
  onNotice(n: Notice): void;
}

const MAX_BACKOFF_MS = 30_000;

export abstract class Watcher {
  private readonly seen = new Set<string>();
  private failing = false;

  constructor(protected readonly o: WatcherOptions) {}

  /** One round of the provider's protocol; returns the notices it saw (duplicates are filtered here). */
  protected abstract poll(signal: AbortSignal): Promise<Notice[]>;

  /** Runs until the signal aborts. Never throws: an unreachable or confused endpoint is logged and retried. */
  async run(signal: AbortSignal): Promise<void> {
    let backoff = this.o.pollMs;
    while (!signal.aborted) {
      try {
        for (const n of await this.poll(deadline(this.o.timeoutMs, signal))) {
          if (this.seen.has(n.id)) continue;
          this.seen.add(n.id);
          this.o.onNotice(n);
        }
        if (this.failing) this.o.log.info({ endpoint: this.o.endpoint }, 'spot metadata endpoint reachable again');
        this.failing = false;
        backoff = this.o.pollMs;
      } catch (e) {
        if (signal.aborted) return;
        // Said once per outage, not once per retry.
        if (!this.failing) this.o.log.warn({ endpoint: this.o.endpoint, err: (e as Error).message }, 'spot metadata endpoint unusable; retrying');
        this.failing = true;
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
      }
      await sleep(this.failing ? backoff : this.o.pollMs, signal);
    }
  }

  protected async fetch(path: string, init: RequestInit & { signal: AbortSignal }): Promise<Response> {
    return fetch(new URL(path, this.o.endpoint), init);
  }
}

export class MalformedResponse extends Error {}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void { clearTimeout(t); signal.removeEventListener('abort', done); resolve(); }
    signal.addEventListener('abort', done, { once: true });
  });
}
