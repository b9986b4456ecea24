// The loop every provider watcher shares: poll, dedupe, one warning per outage, capped back-off, abort.

import { EventEmitter } from 'node:events';
import type { Logger } from '../../src/log/logger.js';
import { FerryError, asFerryError, isFerryError } from '../../src/protocol/errors.js';
import { backoffDelay, type Backoff } from './backoff.js';
import { realClock, type Clock } from './clock.js';
import { MetadataHttp } from './metadata-http.js';
import type { Notice, NoticeEvents, NoticeKind, NoticeProvider } from './notice.js';

/** Options every watcher accepts; unset timings take the provider's defaults. */
export interface WatcherOptions {
  /** Base URL of the metadata service: the real one, or an emulator in tests. */
  endpoint: string;
  log: Logger;
  /** Defaults to the real clock. */
  clock?: Clock;
  /** Interval between polls while the endpoint answers (for GCP: the minimum gap between requests). */
  pollMs?: number;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Retry schedule while the endpoint is unreachable; `initialMs` defaults to `pollMs`. */
  backoff?: Partial<Backoff>;
  /** Copied into every notice's `host`. */
  host?: string;
}

/** A provider's default timings, chosen from its documented notice budget. */
export interface WatcherDefaults {
  pollMs: number;
  timeoutMs: number;
  maxBackoffMs: number;
}

/** When a notice's deadline is: a provider wall-clock time, a budget from now, or none. */
export type NoticeDeadline = { wallMs: number } | { inMs: number } | null;

/** Dedupe memory is bounded; a host sees a handful of notices in its life, so this never evicts a live one. */
const MAX_REMEMBERED_IDS = 1024;

/**
 * A provider watcher. Usage: subscribe with `watcher.on('notice', fn)`, then `await watcher.run(signal)`;
 * `run` resolves once `signal` aborts and never rejects because of the endpoint. Each notice `id` is emitted
 * once per watcher, to each listener in isolation (one that throws is logged and the others still get it). An
 * unreachable endpoint logs one warning per outage and one info on recovery; malformed responses log one warning per
 * distinct problem and are otherwise ignored.
 */
export abstract class SpotWatcher extends EventEmitter<NoticeEvents> {
  /** Which metadata protocol this watcher speaks. */
  abstract readonly provider: Exclude<NoticeProvider, 'manual'>;
  /** Base URL being watched. */
  readonly endpoint: string;
  protected readonly clock: Clock;
  protected readonly log: Logger;
  protected readonly http: MetadataHttp;
  protected readonly pollMs: number;
  protected readonly timeoutMs: number;
  private readonly backoff: Backoff;
  private readonly host: string | undefined;
  private readonly seen = new Set<string>();
  private readonly malformed = new Map<string, string>();
  private outage: { sinceMono: number; failures: number } | null = null;
  private running = false;

  protected constructor(o: WatcherOptions, d: WatcherDefaults) {
    super();
    this.endpoint = o.endpoint;
    this.log = o.log;
    this.clock = o.clock ?? realClock;
    this.pollMs = positive('pollMs', o.pollMs ?? d.pollMs);
    this.timeoutMs = positive('timeoutMs', o.timeoutMs ?? d.timeoutMs);
    const initialMs = positive('backoff.initialMs', o.backoff?.initialMs ?? this.pollMs);
    // A retry is never rarer than the cap, nor the cap shorter than the first retry.
    this.backoff = { initialMs, maxMs: Math.max(initialMs, positive('backoff.maxMs', o.backoff?.maxMs ?? d.maxBackoffMs)) };
    this.host = o.host;
    this.http = new MetadataHttp(o.endpoint, this.clock);
  }

  /** Polls until `signal` aborts. Rejects only with `E_PRECONDITION` if this watcher is already running. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.running) throw new FerryError('E_PRECONDITION', `${this.provider} spot watcher is already running`);
    this.running = true;
    try {
      while (!signal.aborted) {
        const startedMono = this.clock.nowMono();
        let waitMs: number;
        try {
          await this.tolerateMalformed('response', () => this.poll(signal));
          this.reachable();
          waitMs = this.delayAfterPoll(startedMono);
        } catch (e: unknown) {
          if (signal.aborted) break;
          waitMs = this.unreachable(e);
        }
        await this.clock.sleep(waitMs, signal);
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * One round of the provider's protocol. Report notices with `report()` as soon as they are read, so a slow
   * second request cannot delay an urgent first one. Throw for an unusable endpoint; `E_PROTOCOL` means malformed.
   */
  protected abstract poll(signal: AbortSignal): Promise<void>;

  /** Wait before the next poll after a successful one; a long-polling provider overrides this. */
  protected delayAfterPoll(_startedMono: number): number {
    return this.pollMs;
  }

  /**
   * Runs `fn`; an `E_PROTOCOL` failure is logged (once per distinct problem of `source`) and swallowed, so a bad
   * document on one path never hides a good one on another. Other errors propagate.
   */
  protected async tolerateMalformed(source: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
      this.malformed.delete(source);
    } catch (e: unknown) {
      if (!isFerryError(e) || e.code !== 'E_PROTOCOL') throw e;
      this.noteMalformed(source, e);
    }
  }

  /** Logs a malformed response once per distinct problem per source (a service stuck on garbage is one line). */
  protected noteMalformed(source: string, e: FerryError): void {
    if (this.malformed.get(source) === e.message) return;
    this.malformed.set(source, e.message);
    this.log.warn({ provider: this.provider, endpoint: this.endpoint, source, code: e.code, err: e.message, body: e.details?.['body'] }, 'spot metadata response malformed; ignored');
  }

  /** Emits a notice unless its id was already emitted. Returns whether it was new. */
  protected report(kind: NoticeKind, id: string, deadline: NoticeDeadline, raw: unknown): boolean {
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > MAX_REMEMBERED_IDS) {
      const oldest = this.seen.values().next();
      if (oldest.done !== true) this.seen.delete(oldest.value);
    }
    const now = this.clock.nowMono();
    const deadlineMono = deadline === null ? null : 'wallMs' in deadline ? now + Math.max(0, deadline.wallMs - this.clock.nowWall()) : now + Math.max(0, deadline.inMs);
    const n: Notice = { provider: this.provider, kind, receivedAtMono: now, deadlineMono, raw, id, ...(this.host === undefined ? {} : { host: this.host }) };
    this.log.debug({ provider: n.provider, kind, id, remainingMs: deadlineMono === null ? null : deadlineMono - now }, 'spot notice read');
    // Each listener on its own (emit() would stop at the first that throws): a consumer's bug must not starve
    // the other consumers, look like a metadata outage, or stop the watch. Raw listeners keep once() working.
    for (const listener of this.rawListeners('notice')) {
      try {
        listener.call(this, n);
      } catch (e: unknown) {
        this.log.error({ provider: this.provider, id, err: e instanceof Error ? e.message : String(e) }, 'a spot notice listener threw');
      }
    }
    return true;
  }

  private reachable(): void {
    if (this.outage === null) return;
    this.log.info({ provider: this.provider, endpoint: this.endpoint, downMs: Math.round(this.clock.nowMono() - this.outage.sinceMono), failedAttempts: this.outage.failures }, 'spot metadata endpoint reachable again');
    this.outage = null;
  }

  private unreachable(e: unknown): number {
    const err = asFerryError(e, 'E_UNAVAILABLE');
    if (this.outage === null) {
      this.outage = { sinceMono: this.clock.nowMono(), failures: 0 };
      this.log.warn({ provider: this.provider, endpoint: this.endpoint, code: err.code, err: err.message }, 'spot metadata endpoint unreachable; retrying with back-off');
    }
    this.outage.failures++;
    const waitMs = backoffDelay(this.outage.failures, this.backoff);
    this.log.debug({ provider: this.provider, code: err.code, err: err.message, failures: this.outage.failures, waitMs }, 'spot metadata poll failed');
    return waitMs;
  }
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new FerryError('E_CONFIG', `spot watcher ${name} must be a positive number of ms, got ${v}`);
  return v;
}
