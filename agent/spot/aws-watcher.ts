// AWS spot notices over IMDSv2: a session token by PUT, then spot/instance-action and the rebalance recommendation.

import { z } from 'zod';
import { FerryError, isFerryError } from '../../src/protocol/errors.js';
import { parseJsonBody } from './parse-body.js';
import type { MetadataResponse } from './metadata-http.js';
import { SpotWatcher, type WatcherDefaults, type WatcherOptions } from './spot-watcher.js';

const TOKEN_PATH = '/latest/api/token';
const INSTANCE_ACTION_PATH = '/latest/meta-data/spot/instance-action';
const REBALANCE_PATH = '/latest/meta-data/events/recommendations/rebalance';

/**
 * AWS recommends polling every 5 s for a best-effort 2-minute notice. A request to the link-local IMDS answers in
 * milliseconds, so 2 s is already generous. Back-off stops at 20 s: one missed window must still leave most of the
 * 120 s budget.
 */
export const AWS_DEFAULTS: WatcherDefaults = { pollMs: 5_000, timeoutMs: 2_000, maxBackoffMs: 20_000 };

/** Token lifetime asked for (aws-node-termination-handler uses the same); IMDS accepts 1 to 21600 s. */
export const AWS_DEFAULT_TOKEN_TTL_S = 3_600;
const AWS_MAX_TOKEN_TTL_S = 21_600;
/** Renew this early (capped at half the TTL): it also covers a poll delayed by back-off past the expiry. */
const TOKEN_RENEW_MARGIN_MS = 60_000;

const isTime = (s: string): boolean => !Number.isNaN(Date.parse(s));
const InstanceAction = z.object({
  action: z.enum(['stop', 'terminate', 'hibernate']),
  time: z.string().max(64).refine(isTime, 'not a date-time'),
});
const Rebalance = z.object({ noticeTime: z.string().max(64).refine(isTime, 'not a date-time') });

/** AWS-specific options. */
export interface AwsWatcherOptions extends WatcherOptions {
  /** Lifetime of the IMDSv2 session token, in seconds (default 3600). */
  tokenTtlS?: number;
}

/**
 * Watches `spot/instance-action` (kind `termination`, deadline from its `time`; stop, terminate and hibernate alike)
 * and `events/recommendations/rebalance` (kind `rebalance`, no deadline). Both answer 404 until a notice exists.
 */
export class AwsWatcher extends SpotWatcher {
  readonly provider = 'aws';
  private readonly tokenTtlS: number;
  private token: { value: string; renewAtMono: number } | null = null;

  constructor(o: AwsWatcherOptions) {
    super(o, AWS_DEFAULTS);
    const ttl = o.tokenTtlS ?? AWS_DEFAULT_TOKEN_TTL_S;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > AWS_MAX_TOKEN_TTL_S) throw new FerryError('E_CONFIG', `IMDSv2 token TTL must be 1..${AWS_MAX_TOKEN_TTL_S} s, got ${ttl}`);
    this.tokenTtlS = ttl;
  }

  protected async poll(signal: AbortSignal): Promise<void> {
    // instance-action first: it is the urgent one, and a slow rebalance request must not delay it.
    await this.tolerateMalformed('instance-action', async () => {
      const body = await this.get(INSTANCE_ACTION_PATH, signal);
      if (body === null) return;
      const a = parseJsonBody(InstanceAction, body, 'spot/instance-action');
      this.report('termination', `aws:${a.action}:${a.time}`, { wallMs: Date.parse(a.time) }, a);
    });
    await this.tolerateMalformed('rebalance', async () => {
      const body = await this.get(REBALANCE_PATH, signal);
      if (body === null) return;
      const r = parseJsonBody(Rebalance, body, 'events/recommendations/rebalance');
      this.report('rebalance', `aws:rebalance:${r.noticeTime}`, null, r);
    });
  }

  /** GET with the session token: the body, or null on 404 ("no notice"). */
  private async get(path: string, signal: AbortSignal): Promise<string | null> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.sessionToken(signal);
      const res = await this.http.request(path, { headers: { 'X-aws-ec2-metadata-token': token }, timeoutMs: this.timeoutMs, signal });
      if (res.status === 200) return res.body;
      if (res.status === 404) return null;
      // IMDS forgets tokens on expiry and on its own restarts: a 401 earns one fresh token, not an outage.
      if (res.status === 401 && attempt === 1) {
        this.token = null;
        continue;
      }
      throw new FerryError('E_UNAVAILABLE', `GET ${path}: HTTP ${res.status}`);
    }
  }

  private async sessionToken(signal: AbortSignal): Promise<string> {
    if (this.token !== null && this.clock.nowMono() < this.token.renewAtMono) return this.token.value;
    // Measured from before the PUT, so the renewal is early rather than late.
    const askedMono = this.clock.nowMono();
    let res: MetadataResponse;
    try {
      res = await this.http.request(TOKEN_PATH, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(this.tokenTtlS) }, timeoutMs: this.timeoutMs, signal });
    } catch (e: unknown) {
      // The classic cause: the PUT reply is dropped by the default hop limit of 1 when the agent runs bridged.
      if (isFerryError(e) && e.code === 'E_DEADLINE') throw new FerryError('E_DEADLINE', `${e.message} (in a container, IMDSv2 needs httpPutResponseHopLimit >= 2 or host networking)`, { cause: e });
      throw e;
    }
    const value = res.body.trim();
    if (res.status !== 200 || value === '') throw new FerryError('E_UNAVAILABLE', `PUT ${TOKEN_PATH}: HTTP ${res.status}${res.status === 200 ? ' with an empty token' : ''}`);
    const ttlMs = this.tokenTtlS * 1000;
    this.token = { value, renewAtMono: askedMono + ttlMs - Math.min(TOKEN_RENEW_MARGIN_MS, ttlMs / 2) };
    return value;
  }
}
