// GCP preemption notices: instance/preempted with Metadata-Flavor: Google, long-polled with wait_for_change and ETags.

import { FerryError, isFerryError } from '../../src/protocol/errors.js';
import type { MetadataResponse } from './metadata-http.js';
import { SpotWatcher, type WatcherDefaults, type WatcherOptions } from './spot-watcher.js';

const PREEMPTED_PATH = '/computeMetadata/v1/instance/preempted';

/**
 * With the hanging GET a change is seen as it happens; `pollMs` is only the minimum gap between two requests (and
 * the interval if the server gives no ETag). Back-off stops at 5 s: the whole budget is 30 s.
 */
export const GCP_DEFAULTS: WatcherDefaults = { pollMs: 1_000, timeoutMs: 2_000, maxBackoffMs: 5_000 };

/** GCP gives no time with the notice: a Spot VM has 30 s between ACPI soft-off and power-off. */
export const GCP_PREEMPTION_BUDGET_MS = 30_000;
/** Server-side wait of one hanging GET (`timeout_sec`). */
export const GCP_DEFAULT_WAIT_S = 60;
/** Extra client patience past `timeout_sec`: the server answers then, and we must not cut it off first. */
const HANG_GRACE_MS = 5_000;

/** GCP-specific options. */
export interface GcpWatcherOptions extends WatcherOptions {
  /** `timeout_sec` of each hanging GET (default 60). */
  waitS?: number;
}

/**
 * Watches `instance/preempted`: a plain GET first (so a notice that predates the agent is seen at once, with its
 * ETag), then `?wait_for_change=true&last_etag=…&timeout_sec=…` hanging GETs. `TRUE` is one `preemption` notice
 * with a 30 s budget, id `gcp:preempted`. Without ETags, or if the server does not answer a hanging GET within
 * `timeout_sec`, the watcher falls back to plain polling every `pollMs`.
 */
export class GcpWatcher extends SpotWatcher {
  readonly provider = 'gcp';
  private readonly waitS: number;
  private etag: string | null = null;
  private longPoll = true;

  constructor(o: GcpWatcherOptions) {
    super(o, GCP_DEFAULTS);
    const w = o.waitS ?? GCP_DEFAULT_WAIT_S;
    if (!Number.isInteger(w) || w < 1) throw new FerryError('E_CONFIG', `GCP wait_for_change timeout must be a positive whole number of seconds, got ${w}`);
    this.waitS = w;
  }

  protected async poll(signal: AbortSignal): Promise<void> {
    const hang = this.longPoll && this.etag !== null;
    const path = hang ? `${PREEMPTED_PATH}?wait_for_change=true&last_etag=${encodeURIComponent(this.etag ?? '')}&timeout_sec=${this.waitS}` : PREEMPTED_PATH;
    let res: MetadataResponse;
    try {
      res = await this.http.request(path, { headers: { 'Metadata-Flavor': 'Google' }, timeoutMs: hang ? this.waitS * 1000 + Math.max(HANG_GRACE_MS, this.timeoutMs) : this.timeoutMs, signal });
    } catch (e: unknown) {
      if (!hang || !isFerryError(e) || e.code !== 'E_DEADLINE') throw e;
      // Something between us and the metadata server holds hanging GETs forever; plain polls still work.
      this.longPoll = false;
      this.log.warn({ provider: this.provider, endpoint: this.endpoint, waitS: this.waitS }, 'GCP wait_for_change got no answer in time; falling back to plain polling');
      return;
    }
    if (res.status !== 200) throw new FerryError('E_UNAVAILABLE', `GET ${PREEMPTED_PATH}: HTTP ${res.status}`);
    this.etag = res.header('etag');
    const value = res.body.trim();
    if (value === 'FALSE') return;
    if (value !== 'TRUE') throw new FerryError('E_PROTOCOL', `instance/preempted: expected TRUE or FALSE, got ${JSON.stringify(value.slice(0, 40))}`, { details: { body: value.slice(0, 120) } });
    this.report('preemption', 'gcp:preempted', { inMs: GCP_PREEMPTION_BUDGET_MS }, value);
  }

  protected override delayAfterPoll(startedMono: number): number {
    // A hanging GET already waited; the gap only bounds the request rate if a server answers at once every time.
    if (this.longPoll && this.etag !== null) return Math.max(0, this.pollMs - (this.clock.nowMono() - startedMono));
    return this.pollMs;
  }
}
