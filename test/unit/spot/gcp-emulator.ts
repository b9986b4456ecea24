// A GCP metadata emulator for instance/preempted: Metadata-Flavor check, ETags, wait_for_change hanging GETs.

import type { ServerResponse } from 'node:http';
import { realClock, type Clock } from '../../../agent/spot/clock.js';
import { HttpEmulator, type RecordedRequest } from './http-emulator.js';

const PATH = '/computeMetadata/v1/instance/preempted';

/** Serves `instance/preempted`; hanging GETs answer on a change or after `timeout_sec` of the injected clock. */
export class GcpEmulator {
  /** Whether responses carry an ETag (a server without them forces plain polling). */
  etags = true;
  /** Whether a hanging GET answers at `timeout_sec` (false: a proxy that swallows it). */
  honourTimeout = true;
  /** While true, requests are held unanswered. */
  stall = false;
  emu!: HttpEmulator;
  private value = 'FALSE';
  private version = 1;
  private readonly hanging = new Set<{ res: ServerResponse; stop: AbortController }>();

  private constructor(private readonly clock: Clock) {}

  static async start(o: { port?: number; clock?: Clock } = {}): Promise<GcpEmulator> {
    const g = new GcpEmulator(o.clock ?? realClock);
    g.emu = await HttpEmulator.start((req, res) => g.handle(req, res), o.port ?? 0);
    return g;
  }

  /** The current ETag. */
  get etag(): string { return `e7a9${this.version.toString(16).padStart(12, '0')}`; }

  /** Changes the value (TRUE on preemption) and answers every hanging GET. */
  set(value: string): void {
    this.value = value;
    this.version++;
    for (const h of [...this.hanging]) this.answer(h);
  }

  preempt(): void { this.set('TRUE'); }

  /** Hanging GETs waiting now. */
  waiting(): number { return this.hanging.size; }

  private handle(req: RecordedRequest, res: ServerResponse): void {
    if (this.stall) return;
    if (req.headers['metadata-flavor'] !== 'Google') { res.statusCode = 403; res.end('Missing required header: Metadata-Flavor\n'); return; }
    const u = new URL(req.url, 'http://metadata.google.internal');
    if (u.pathname !== PATH) { res.statusCode = 404; res.end(); return; }
    const lastEtag = u.searchParams.get('last_etag');
    // Documented: with a last_etag that is already stale the answer is immediate; otherwise wait for a change.
    if (u.searchParams.get('wait_for_change') !== 'true' || (lastEtag !== null && lastEtag !== this.etag)) { this.reply(res); return; }
    const h = { res, stop: new AbortController() };
    this.hanging.add(h);
    res.on('close', () => { this.hanging.delete(h); h.stop.abort(); });
    const timeoutS = Number(u.searchParams.get('timeout_sec') ?? '0');
    if (timeoutS > 0 && this.honourTimeout) void this.clock.sleep(timeoutS * 1000, h.stop.signal).then(() => { if (!h.stop.signal.aborted) this.answer(h); });
  }

  private answer(h: { res: ServerResponse; stop: AbortController }): void {
    this.hanging.delete(h);
    h.stop.abort();
    this.reply(h.res);
  }

  private reply(res: ServerResponse): void {
    res.setHeader('metadata-flavor', 'Google');
    res.setHeader('content-type', 'application/text');
    if (this.etags) res.setHeader('etag', this.etag);
    res.end(this.value);
  }
}
