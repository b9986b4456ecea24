// Local metadata emulators: each implements its provider's documented HTTP behaviour on a loopback port.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export interface Emulator { url: string; server: Server; requests: string[]; close(): Promise<void> }

async function serve(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void, port = 0): Promise<Emulator> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => { requests.push(`${req.method} ${req.url}`); handler(req, res, body); });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const p = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${p}`, server, requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** AWS IMDSv2: tokens by PUT with a TTL, 401 on a missing or expired token, 404 until a notice exists. */
export class AwsEmulator {
  instanceAction: string | null = null;
  rebalance: string | null = null;
  tokens = new Set<string>();
  private n = 0;
  emu!: Emulator;
  static async start(port = 0): Promise<AwsEmulator> {
    const a = new AwsEmulator();
    a.emu = await serve((req, res) => a.handle(req, res), port);
    return a;
  }
  /** Expires every token handed out so far, as IMDS does when their TTL runs out. */
  expireTokens(): void { this.tokens.clear(); }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (!req.headers['x-aws-ec2-metadata-token-ttl-seconds']) { res.statusCode = 400; res.end(); return; }
      const t = `token-${++this.n}`;
      this.tokens.add(t);
      res.end(t);
      return;
    }
    if (!this.tokens.has(String(req.headers['x-aws-ec2-metadata-token']))) { res.statusCode = 401; res.end(); return; }
    const body = req.url === '/latest/meta-data/spot/instance-action' ? this.instanceAction
      : req.url === '/latest/meta-data/events/recommendations/rebalance' ? this.rebalance : null;
    if (body === null) { res.statusCode = 404; res.end('Not Found'); return; }
    res.setHeader('content-type', 'text/plain');
    res.end(body);
  }
}

/** GCP: Metadata-Flavor required (403 otherwise); wait_for_change hangs until the value changes. */
export class GcpEmulator {
  private value = 'FALSE';
  private etag = 1;
  private waiting: ServerResponse[] = [];
  emu!: Emulator;
  static async start(): Promise<GcpEmulator> {
    const g = new GcpEmulator();
    g.emu = await serve((req, res) => g.handle(req, res));
    return g;
  }
  preempt(): void {
    this.value = 'TRUE';
    this.etag++;
    for (const r of this.waiting.splice(0)) this.reply(r);
  }
  private reply(res: ServerResponse): void {
    res.setHeader('etag', String(this.etag));
    res.end(this.value);
  }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.headers['metadata-flavor'] !== 'Google') { res.statusCode = 403; res.end(); return; }
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/computeMetadata/v1/instance/preempted') { res.statusCode = 404; res.end(); return; }
    if (u.searchParams.get('wait_for_change') === 'true' && u.searchParams.get('last_etag') === String(this.etag)) {
      this.waiting.push(res);
      return;
    }
    this.reply(res);
  }
}

/** Azure Scheduled Events: Metadata: true required; a document with an incarnation; StartRequests acks. */
export class AzureEmulator {
  doc: { DocumentIncarnation: number; Events: Record<string, unknown>[] } = { DocumentIncarnation: 1, Events: [] };
  raw: string | null = null;
  acks: string[] = [];
  emu!: Emulator;
  static async start(): Promise<AzureEmulator> {
    const a = new AzureEmulator();
    a.emu = await serve((req, res, body) => a.handle(req, res, body));
    return a;
  }
  private handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    if (req.headers.metadata !== 'true') { res.statusCode = 400; res.end(); return; }
    if (!req.url?.startsWith('/metadata/scheduledevents')) { res.statusCode = 404; res.end(); return; }
    if (req.method === 'POST') {
      for (const s of (JSON.parse(body) as { StartRequests: { EventId: string }[] }).StartRequests) this.acks.push(s.EventId);
      res.end();
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(this.raw ?? JSON.stringify(this.doc));
  }
}
