// GCP: instance/preempted with Metadata-Flavor: Google, as a hanging GET (wait_for_change) keyed by ETag.

import { GCP_PREEMPTION_BUDGET_MS, realClock, type Clock, type Notice } from './notice.js';
import { MalformedResponse, Watcher, type WatcherOptions } from './watcher.js';

/** How long one hanging GET may wait for a change before the server answers with the current value. */
const WAIT_S = 60;

export class GcpWatcher extends Watcher {
  private etag: string | null = null;

  constructor(o: WatcherOptions, private readonly clock: Clock = realClock) {
    // The hanging GET must be allowed to outlast its own server-side wait.
    super({ ...o, timeoutMs: Math.max(o.timeoutMs, (WAIT_S + 10) * 1000) });
  }

  protected async poll(signal: AbortSignal): Promise<Notice[]> {
    const q = this.etag ? `?wait_for_change=true&timeout_sec=${WAIT_S}&last_etag=${encodeURIComponent(this.etag)}` : '';
    const res = await this.fetch(`/computeMetadata/v1/instance/preempted${q}`, { headers: { 'Metadata-Flavor': 'Google' }, signal });
    if (!res.ok) { await res.body?.cancel(); throw new Error(`GET instance/preempted: HTTP ${res.status}`); }
    this.etag = res.headers.get('etag');
    const v = (await res.text()).trim();
    if (v === 'FALSE') return [];
    if (v !== 'TRUE') throw new MalformedResponse(`instance/preempted = ${v.slice(0, 40)}`);
    const now = this.clock.nowMono();
    return [{ provider: 'gcp', kind: 'preemption', id: 'gcp:preempted', receivedAtMono: now, deadlineMono: now + GCP_PREEMPTION_BUDGET_MS, raw: v }];
  }
}
