// AWS: IMDSv2 (session token by PUT), spot/instance-action (404 until a notice), rebalance recommendations.

import { z } from 'zod';
import { monoDeadline, realClock, type Clock, type Notice } from './notice.js';
import { MalformedResponse, Watcher, type WatcherOptions } from './watcher.js';

const TOKEN_TTL_S = 21_600;
const InstanceAction = z.object({ action: z.enum(['stop', 'terminate', 'hibernate']), time: z.string() });
const Rebalance = z.object({ noticeTime: z.string() });

export class AwsWatcher extends Watcher {
  private token: string | null = null;
  private tokenExpiresMono = 0;

  constructor(o: WatcherOptions, private readonly clock: Clock = realClock) { super(o); }

  protected async poll(signal: AbortSignal): Promise<Notice[]> {
    const out: Notice[] = [];
    const action = await this.get('/latest/meta-data/spot/instance-action', signal);
    if (action !== null) {
      const a = parse(InstanceAction, action);
      const at = Date.parse(a.time);
      if (Number.isNaN(at)) throw new MalformedResponse(`instance-action time ${a.time}`);
      out.push({ provider: 'aws', kind: 'termination', id: `aws:${a.action}:${a.time}`, receivedAtMono: this.clock.nowMono(), deadlineMono: monoDeadline(this.clock, at), raw: a });
    }
    const reb = await this.get('/latest/meta-data/events/recommendations/rebalance', signal);
    if (reb !== null) {
      const r = parse(Rebalance, reb);
      out.push({ provider: 'aws', kind: 'rebalance', id: `aws:rebalance:${r.noticeTime}`, receivedAtMono: this.clock.nowMono(), deadlineMono: null, raw: r });
    }
    return out;
  }

  /** GET with the session token; 404 means "no notice"; a 401 means the token expired: fetch a new one once. */
  private async get(path: string, signal: AbortSignal): Promise<string | null> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await this.fetch(path, { headers: { 'X-aws-ec2-metadata-token': await this.session(signal) }, signal });
      if (res.status === 404) { await res.body?.cancel(); return null; }
      if (res.status === 401) { await res.body?.cancel(); this.token = null; continue; }
      if (!res.ok) { await res.body?.cancel(); throw new Error(`GET ${path}: HTTP ${res.status}`); }
      return res.text();
    }
    throw new Error(`GET ${path}: token refused twice`);
  }

  private async session(signal: AbortSignal): Promise<string> {
    // Renewed a minute before it expires, so a poll never goes out with a stale token.
    if (this.token && this.clock.nowMono() < this.tokenExpiresMono - 60_000) return this.token;
    const res = await this.fetch('/latest/api/token', { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(TOKEN_TTL_S) }, signal });
    if (!res.ok) { await res.body?.cancel(); throw new Error(`PUT /latest/api/token: HTTP ${res.status}`); }
    this.token = (await res.text()).trim();
    this.tokenExpiresMono = this.clock.nowMono() + TOKEN_TTL_S * 1000;
    return this.token;
  }
}

export function parse<T>(schema: z.ZodType<T>, text: string): T {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new MalformedResponse(`not JSON: ${text.slice(0, 80)}`);
  }
  const p = schema.safeParse(v);
  if (!p.success) throw new MalformedResponse(`unexpected shape: ${text.slice(0, 80)}`);
  return p.data;
}
