// Azure: Scheduled Events (Metadata: true); Preempt/Terminate events, acknowledged with StartRequests.

import { z } from 'zod';
import { monoDeadline, realClock, type Clock, type Notice } from './notice.js';
import { parse } from './aws.js';
import { Watcher, type WatcherOptions } from './watcher.js';

const PATH = '/metadata/scheduledevents?api-version=2020-07-01';
const Doc = z.object({
  DocumentIncarnation: z.number(),
  Events: z.array(z.object({
    EventId: z.string(),
    EventType: z.string(),
    ResourceType: z.string().optional(),
    Resources: z.array(z.string()).optional(),
    EventStatus: z.string().optional(),
    NotBefore: z.string().optional(),
  })),
});

export class AzureWatcher extends Watcher {
  /** Only events naming this VM matter; null accepts every event (a single-VM view). */
  constructor(o: WatcherOptions, private readonly vmName: string | null, private readonly clock: Clock = realClock) { super(o); }

  protected async poll(signal: AbortSignal): Promise<Notice[]> {
    const res = await this.fetch(PATH, { headers: { Metadata: 'true' }, signal });
    if (!res.ok) { await res.body?.cancel(); throw new Error(`GET scheduledevents: HTTP ${res.status}`); }
    const doc = parse(Doc, await res.text());
    const out: Notice[] = [];
    for (const e of doc.Events) {
      if (e.EventType !== 'Preempt' && e.EventType !== 'Terminate') continue;
      if (this.vmName && e.Resources && !e.Resources.includes(this.vmName)) continue;
      const at = e.NotBefore ? Date.parse(e.NotBefore) : NaN;
      out.push({
        provider: 'azure',
        kind: e.EventType === 'Preempt' ? 'preemption' : 'termination',
        id: `azure:${e.EventId}`,
        receivedAtMono: this.clock.nowMono(),
        // NotBefore may be empty once the event started; then the documented minimum (30 s) is all there is.
        deadlineMono: Number.isNaN(at) ? this.clock.nowMono() + 30_000 : monoDeadline(this.clock, at),
        raw: e,
      });
    }
    return out;
  }

  /** Tells Azure we are ready (the drain has started); it may then proceed before NotBefore. */
  async acknowledge(noticeId: string, signal: AbortSignal): Promise<void> {
    const eventId = noticeId.replace(/^azure:/, '');
    const res = await this.fetch(PATH, { method: 'POST', headers: { Metadata: 'true', 'Content-Type': 'application/json' }, body: JSON.stringify({ StartRequests: [{ EventId: eventId }] }), signal });
    await res.body?.cancel();
    if (!res.ok) throw new Error(`POST scheduledevents: HTTP ${res.status}`);
  }
}
