// An AWS IMDSv2 emulator: session tokens by PUT with a TTL on the injected clock, 401 when stale, 404 until a notice.

import type { ServerResponse } from 'node:http';
import { realClock, type Clock } from '../../../agent/spot/clock.js';
import { HttpEmulator, type RecordedRequest } from './http-emulator.js';

/** The IMDS paths the spot watcher reads, with what they serve; null means 404. */
export class AwsEmulator {
  /** Body of `spot/instance-action`, or null for 404 (no notice). */
  instanceAction: string | null = null;
  /** Body of `events/recommendations/rebalance`, or null for 404. */
  rebalance: string | null = null;
  /** While true, requests are held unanswered (a wedged IMDS). */
  stall = false;
  /** How many 401s were answered (stale or missing tokens). */
  unauthorized = 0;
  emu!: HttpEmulator;
  private readonly tokens = new Map<string, number>();
  private issued = 0;

  private constructor(private readonly clock: Clock) {}

  /** Starts on `port` (0: any); token expiry follows `clock`. */
  static async start(o: { port?: number; clock?: Clock } = {}): Promise<AwsEmulator> {
    const a = new AwsEmulator(o.clock ?? realClock);
    a.emu = await HttpEmulator.start((req, res) => a.handle(req, res), o.port ?? 0);
    return a;
  }

  /** Forgets every token, as IMDS does when it restarts: the next request with an old token gets 401. */
  revokeTokens(): void { this.tokens.clear(); }

  /** PUTs to the token path so far. */
  tokenPuts(): number { return this.emu.requests.filter((r) => r.method === 'PUT' && r.url === '/latest/api/token').length; }

  private handle(req: RecordedRequest, res: ServerResponse): void {
    if (this.stall) return;
    if (req.url === '/latest/api/token') {
      if (req.method !== 'PUT') { res.statusCode = 405; res.end(); return; }
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21_600) { res.statusCode = 400; res.end(); return; }
      const token = `AQAEA-token-${++this.issued}`;
      this.tokens.set(token, this.clock.nowMono() + ttl * 1000);
      res.setHeader('x-aws-ec2-metadata-token-ttl-seconds', String(ttl));
      res.end(token);
      return;
    }
    const expires = this.tokens.get(String(req.headers['x-aws-ec2-metadata-token']));
    if (expires === undefined || this.clock.nowMono() >= expires) {
      this.unauthorized++;
      res.statusCode = 401;
      res.end();
      return;
    }
    const body = req.url === '/latest/meta-data/spot/instance-action' ? this.instanceAction
      : req.url === '/latest/meta-data/events/recommendations/rebalance' ? this.rebalance : null;
    if (body === null) { res.statusCode = 404; res.setHeader('content-type', 'text/html'); res.end('<?xml version="1.0"?><title>404 - Not Found</title>'); return; }
    res.setHeader('content-type', 'text/plain');
    res.end(body);
  }
}
