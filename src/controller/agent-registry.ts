// The controller's connections to its agents, kept open and re-dialled with back-off.

import { EventEmitter } from 'node:events';
import { FerryError, type Capabilities, type HostStatus, type Method } from '../protocol/index.js';
import type { Connection, RequestOptions } from '../rpc/connection.js';
import { dial } from '../rpc/handshake.js';
import type { Logger } from '../log/logger.js';

/** What the migration runner needs from a host: a typed call. Fakes implement this in tests. */
export interface HostClient {
  readonly name: string;
  readonly url: string;
  readonly connected: boolean;
  readonly caps: Capabilities | null;
  call<P, R>(m: Method<P, R>, params: P, opts?: RequestOptions): Promise<R>;
}

export interface HostEntry { name: string; url: string }

class AgentLink implements HostClient {
  conn: Connection | null = null;
  caps: Capabilities | null = null;
  error: string | null = null;
  constructor(readonly name: string, readonly url: string) {}
  get connected(): boolean { return this.conn !== null && !this.conn.closed; }
  call<P, R>(m: Method<P, R>, params: P, opts?: RequestOptions): Promise<R> {
    if (!this.conn || this.conn.closed) return Promise.reject(new FerryError('E_UNAVAILABLE', `agent ${this.name} is not connected${this.error ? ` (${this.error})` : ''}`));
    return this.conn.request(m, params, opts);
  }
}

export declare interface AgentRegistry {
  on(ev: 'connected', fn: (host: string) => void): this;
  on(ev: 'event', fn: (host: string, method: string, payload: unknown) => void): this;
}

export class AgentRegistry extends EventEmitter {
  private readonly links = new Map<string, AgentLink>();
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(hosts: HostEntry[], private readonly id: { name: string; secret: string }, private readonly log: Logger) {
    super();
    for (const h of hosts) this.links.set(h.name, new AgentLink(h.name, h.url));
  }

  /** Dials every agent; resolves once each has connected or failed its first attempt. */
  async start(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => this.connect(l, 0)));
  }

  get(name: string): HostClient | undefined { return this.links.get(name); }
  names(): string[] { return [...this.links.keys()]; }

  status(cordoned: ReadonlySet<string>): HostStatus[] {
    return [...this.links.values()].map((l) => ({ name: l.name, url: l.url, connected: l.connected, caps: l.caps, error: l.connected ? null : l.error, cordoned: cordoned.has(l.name) }));
  }

  /** Waits until the named agent is connected (or the signal fires). */
  async waitConnected(name: string, signal: AbortSignal): Promise<void> {
    const l = this.links.get(name);
    if (!l) throw new FerryError('E_NOT_FOUND', `unknown host ${name}`);
    while (!l.connected) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onConn = (h: string): void => { if (h === name) { cleanup(); resolve(); } };
        const onAbort = (): void => { cleanup(); reject(signal.reason); };
        const cleanup = (): void => { this.off('connected', onConn); signal.removeEventListener('abort', onAbort); };
        this.on('connected', onConn);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const l of this.links.values()) l.conn?.close(1001, 'controller shutting down');
  }

  private async connect(l: AgentLink, attempt: number): Promise<void> {
    if (this.stopped) return;
    try {
      const { conn, caps } = await dial({ url: l.url, name: this.id.name, role: 'controller', serverRole: 'agent', secret: this.id.secret, log: this.log });
      if (conn.peerName !== l.name) {
        conn.close(1008, 'wrong host');
        throw new FerryError('E_UNAUTHENTICATED', `${l.url} answered as ${conn.peerName}, expected ${l.name}`);
      }
      l.conn = conn;
      l.caps = caps;
      l.error = null;
      this.log.info({ host: l.name }, 'agent connected');
      conn.on('event', (m, p) => this.emit('event', l.name, m, p));
      conn.on('close', (err) => {
        l.error = err.message;
        this.log.warn({ host: l.name, err: err.message }, 'agent connection lost');
        this.schedule(l, 0);
      });
      this.emit('connected', l.name);
    } catch (e) {
      const msg = (e as Error).message;
      // Say it once per outage, not once per retry.
      if (l.error !== msg) this.log.warn({ host: l.name, err: msg }, 'agent unreachable; retrying');
      l.error = msg;
      this.schedule(l, attempt + 1);
    }
  }

  private schedule(l: AgentLink, attempt: number): void {
    if (this.stopped) return;
    const delay = Math.min(5_000, 100 * 2 ** Math.min(attempt, 6));
    const t = setTimeout(() => { this.timers.delete(t); void this.connect(l, attempt); }, delay);
    t.unref();
    this.timers.add(t);
  }
}
