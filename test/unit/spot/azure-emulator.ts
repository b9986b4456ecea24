// An Azure IMDS emulator: the Scheduled Events document with its incarnation, StartRequests acks, the VM's name.

import type { ServerResponse } from 'node:http';
import { HttpEmulator, type RecordedRequest } from './http-emulator.js';

/** A scheduled event as the service lists it. */
export interface AzureEvent {
  EventId: string;
  EventType: string;
  ResourceType?: string;
  Resources?: string[];
  EventStatus?: string;
  NotBefore?: string;
  Description?: string;
  EventSource?: string;
  DurationInSeconds?: number;
}

/** Serves `/metadata/scheduledevents` (GET document, POST StartRequests) and `/metadata/instance/compute/name`. */
export class AzureEmulator {
  doc: { DocumentIncarnation: number; Events: AzureEvent[] } = { DocumentIncarnation: 1, Events: [] };
  /** Served instead of the document while set (to test garbage). */
  raw: string | null = null;
  /** While true, requests are held unanswered. */
  stall = false;
  vmName = 'vm-1';
  /** EventIds acknowledged through StartRequests, in order. */
  readonly acks: string[] = [];
  emu!: HttpEmulator;

  static async start(o: { port?: number } = {}): Promise<AzureEmulator> {
    const a = new AzureEmulator();
    a.emu = await HttpEmulator.start((req, res) => a.handle(req, res), o.port ?? 0);
    return a;
  }

  /** Replaces the events; like the service, any change bumps DocumentIncarnation. */
  setEvents(events: AzureEvent[]): void {
    this.doc = { DocumentIncarnation: this.doc.DocumentIncarnation + 1, Events: events };
  }

  private handle(req: RecordedRequest, res: ServerResponse): void {
    if (this.stall) return;
    const json = (status: number, v: unknown): void => { res.statusCode = status; res.setHeader('content-type', 'application/json; charset=utf-8'); res.end(JSON.stringify(v)); };
    if (req.headers['metadata'] !== 'true') { json(400, { error: 'Bad request. Required metadata header not specified' }); return; }
    const u = new URL(req.url, 'http://169.254.169.254');
    if (u.searchParams.get('api-version') === null) { json(400, { error: 'Bad request. api-version was not specified in the request' }); return; }
    if (u.pathname === '/metadata/instance/compute/name' && req.method === 'GET') { res.end(this.vmName); return; }
    if (u.pathname !== '/metadata/scheduledevents') { json(404, { error: 'Not found' }); return; }
    if (req.method === 'GET') {
      if (this.raw !== null) { res.setHeader('content-type', 'application/json'); res.end(this.raw); return; }
      json(200, this.doc);
      return;
    }
    if (req.method !== 'POST') { json(405, { error: 'Method not allowed' }); return; }
    let ids: string[];
    try {
      ids = (JSON.parse(req.body) as { StartRequests: { EventId: string }[] }).StartRequests.map((s) => s.EventId);
    } catch {
      json(400, { error: 'Bad request' });
      return;
    }
    this.acks.push(...ids);
    // An approved event starts now: status Started, NotBefore cleared, a new incarnation.
    this.setEvents(this.doc.Events.map((e) => (ids.includes(e.EventId) ? { ...e, EventStatus: 'Started', NotBefore: '' } : e)));
    res.end();
  }
}
