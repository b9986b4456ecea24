// Azure eviction notices from Scheduled Events: Preempt and Terminate for this VM, acknowledged with StartRequests.

import { z } from 'zod';
import { FerryError } from '../../src/protocol/errors.js';
import { parseJsonBody, validate } from './parse-body.js';
import { SpotWatcher, type NoticeDeadline, type WatcherDefaults, type WatcherOptions } from './spot-watcher.js';

const EVENTS_PATH = '/metadata/scheduledevents?api-version=2020-07-01';
const VM_NAME_PATH = '/metadata/instance/compute/name?api-version=2021-02-01&format=text';

/**
 * Microsoft asks for one poll per second; a Preempt may come only 30 s ahead. Back-off stops at 5 s for the same
 * reason.
 */
export const AZURE_DEFAULTS: WatcherDefaults = { pollMs: 1_000, timeoutMs: 10_000, maxBackoffMs: 5_000 };
/** Documented minimum notice of a Preempt; also the budget assumed when an event's NotBefore is unreadable. */
export const AZURE_PREEMPT_MIN_NOTICE_MS = 30_000;
/** The first call switches the service on and may take up to two minutes (documented). */
const FIRST_CALL_TIMEOUT_MS = 130_000;

const Document = z.object({ DocumentIncarnation: z.number().int(), Events: z.array(z.unknown()).max(256) });
/** EventIds are GUIDs; the pattern also keeps them safe inside notice ids and the acknowledgement body. */
const EVENT_ID = /^[A-Za-z0-9-]{1,128}$/;
const Event = z.object({
  EventId: z.string().regex(EVENT_ID),
  EventType: z.string().max(64),
  ResourceType: z.string().max(64).optional(),
  Resources: z.array(z.string().max(256)).max(1024).optional(),
  EventStatus: z.string().max(64).optional(),
  NotBefore: z.string().max(64).optional(),
  Description: z.string().max(4096).optional(),
  EventSource: z.string().max(64).optional(),
  DurationInSeconds: z.number().optional(),
});
type ScheduledEvent = z.infer<typeof Event>;
const NOTICE_ID = /^azure:([A-Za-z0-9-]{1,128}):\d+$/;

/** Azure-specific options. */
export interface AzureWatcherOptions extends WatcherOptions {
  /** This VM's name as Scheduled Events lists it in `Resources`; by default read once from instance metadata. */
  vmName?: string;
}

/**
 * Watches the Scheduled Events document. `Preempt` becomes a `preemption` notice, `Terminate` a `termination`, each
 * with its deadline from `NotBefore` (now if the event has `Started`), once per EventId. Other event types and events
 * naming only other VMs are ignored; an event without `Resources` is taken as ours, since a missed eviction costs more
 * than a needless drain. Call `acknowledge(notice.id)` once the drain has started.
 */
export class AzureWatcher extends SpotWatcher {
  readonly provider = 'azure';
  private vmName: string | null;
  private answered = false;
  private incarnation: number | null = null;
  private readonly eventIds = new Set<string>();

  constructor(o: AzureWatcherOptions) {
    super(o, AZURE_DEFAULTS);
    this.vmName = o.vmName ?? null;
  }

  /**
   * Tells Azure the drain has started (POST `StartRequests`), so the platform may proceed before NotBefore.
   * Throws `E_INVALID_ARGUMENT` for an id that is not an Azure notice id, `E_UNAVAILABLE` if the POST fails.
   */
  async acknowledge(noticeId: string, signal: AbortSignal = new AbortController().signal): Promise<void> {
    const eventId = NOTICE_ID.exec(noticeId)?.[1];
    if (eventId === undefined) throw new FerryError('E_INVALID_ARGUMENT', `not an Azure notice id: ${noticeId.slice(0, 200)}`);
    const res = await this.http.request(EVENTS_PATH, {
      method: 'POST',
      headers: { Metadata: 'true', 'Content-Type': 'application/json' },
      body: JSON.stringify({ StartRequests: [{ EventId: eventId }] }),
      timeoutMs: this.timeoutMs,
      signal,
    });
    if (res.status < 200 || res.status >= 300) throw new FerryError('E_UNAVAILABLE', `POST scheduledevents: HTTP ${res.status}`, { details: { eventId } });
    this.log.info({ provider: this.provider, eventId }, 'Azure scheduled event acknowledged');
  }

  protected async poll(signal: AbortSignal): Promise<void> {
    const vmName = await this.ownName(signal);
    const res = await this.http.request(EVENTS_PATH, { headers: { Metadata: 'true' }, timeoutMs: this.answered ? this.timeoutMs : Math.max(FIRST_CALL_TIMEOUT_MS, this.timeoutMs), signal });
    if (res.status !== 200) throw new FerryError('E_UNAVAILABLE', `GET scheduledevents: HTTP ${res.status}`);
    this.answered = true;
    const doc = parseJsonBody(Document, res.body, 'scheduledevents');
    // Azure bumps the incarnation on every change, so an equal one is the document already handled.
    if (doc.DocumentIncarnation === this.incarnation) return;
    for (const raw of doc.Events) {
      await this.tolerateMalformed('scheduledevents event', async () => {
        const e = validate(Event, raw, 'scheduledevents event');
        const kind = e.EventType === 'Preempt' ? 'preemption' : e.EventType === 'Terminate' ? 'termination' : null;
        if (kind === null || !concernsVm(e, vmName) || this.eventIds.has(e.EventId)) return;
        // Keyed by EventId alone: our own acknowledgement bumps the incarnation, and must not re-announce the event.
        this.eventIds.add(e.EventId);
        this.report(kind, `azure:${e.EventId}:${doc.DocumentIncarnation}`, this.deadlineOf(e), e);
      });
    }
    this.incarnation = doc.DocumentIncarnation;
  }

  private deadlineOf(e: ScheduledEvent): NoticeDeadline {
    if (e.EventStatus === 'Started') return { inMs: 0 };
    const at = e.NotBefore === undefined || e.NotBefore === '' ? NaN : Date.parse(e.NotBefore);
    if (!Number.isNaN(at)) return { wallMs: at };
    this.log.warn({ provider: this.provider, eventId: e.EventId, notBefore: e.NotBefore }, `Azure event without a readable NotBefore; assuming the ${AZURE_PREEMPT_MIN_NOTICE_MS / 1000} s minimum`);
    return { inMs: AZURE_PREEMPT_MIN_NOTICE_MS };
  }

  private async ownName(signal: AbortSignal): Promise<string> {
    if (this.vmName !== null) return this.vmName;
    const res = await this.http.request(VM_NAME_PATH, { headers: { Metadata: 'true' }, timeoutMs: this.timeoutMs, signal });
    const name = res.body.trim();
    if (res.status !== 200 || name === '') throw new FerryError('E_UNAVAILABLE', `GET instance/compute/name: HTTP ${res.status}`);
    this.vmName = name;
    return name;
  }
}

/** Azure resource names are case-insensitive. */
function concernsVm(e: ScheduledEvent, vmName: string): boolean {
  if (e.Resources === undefined || e.Resources.length === 0) return true;
  const me = vmName.toLowerCase();
  return e.Resources.some((r) => r.toLowerCase() === me);
}
