// Demo: an (emulated) AWS spot interruption notice for host-a. Its agent sees the notice on the metadata
// service, the controller cordons host-a and moves every opted-in container to host-b before the deadline.
// Shows the countdown, the events, and checks the migrated Redis kept every acknowledged write.

import { createServer } from 'node:http';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import Docker from 'dockerode';
import { ClusterEvent, ControllerApi, type ClusterEventPayload } from '../../src/protocol/index.js';
import { dial } from '../../src/rpc/handshake.js';
import { silentLogger } from '../../src/log/logger.js';
import { clusterFile, loadCluster } from '../../src/cluster.js';
import { LocalCluster } from '../../src/cli/local-cluster.js';
import { dirname, resolve } from 'node:path';

const DEADLINE_S = 120;
const PORT = Number(process.env.DEMO_PORT ?? 28210);
const say = (s: string): void => { process.stdout.write(`\x1b[1m» ${s}\x1b[0m\n`); };

/** The part of AWS IMDSv2 the agent uses: a token, and spot/instance-action (404 until we set it). */
async function imds(): Promise<{ url: string; notify(atMs: number): void; close(): void }> {
  let action: string | null = null;
  const server = createServer((req, res) => {
    if (req.method === 'PUT' && req.url === '/latest/api/token') { res.end('demo-token'); return; }
    if (req.headers['x-aws-ec2-metadata-token'] !== 'demo-token') { res.statusCode = 401; res.end(); return; }
    if (req.url === '/latest/meta-data/spot/instance-action' && action) { res.end(action); return; }
    res.statusCode = 404;
    res.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    notify: (at) => { action = JSON.stringify({ action: 'terminate', time: new Date(at).toISOString() }); },
    close: () => { server.closeAllConnections(); server.close(); },
  };
}

class Redis {
  private buf = '';
  private waiting: ((l: string) => void)[] = [];
  broken: string | null = null;
  private constructor(private readonly s: Socket) {
    s.setEncoding('utf8');
    s.on('data', (d: string) => { this.buf += d; for (let i; (i = this.buf.indexOf('\r\n')) >= 0;) { const l = this.buf.slice(0, i); this.buf = this.buf.slice(i + 2); this.waiting.shift()?.(l); } });
    s.on('close', () => { this.broken ??= 'closed'; });
    s.on('error', (e) => { this.broken = e.message; });
  }
  static async open(port: number): Promise<Redis> {
    for (let i = 0; i < 100; i++) {
      const s = await new Promise<Socket | null>((r) => { const c = connect(port, '127.0.0.1', () => r(c)); c.once('error', () => r(null)); });
      if (s) return new Redis(s);
      await new Promise((r) => setTimeout(r, 100)); // redis is starting
    }
    throw new Error('redis did not start');
  }
  cmd(...a: string[]): Promise<string> {
    return new Promise((res, rej) => {
      if (this.broken) { rej(new Error(this.broken)); return; }
      this.waiting.push(res);
      this.s.write(`*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`);
    });
  }
}

async function main(): Promise<void> {
  const file = clusterFile();
  const cluster = loadCluster(file);
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('the demo needs two hosts');
  const lc = new LocalCluster({ file, hosts: cluster.hosts.map((h) => h.name), basePort: 0, stateDir: resolve(dirname(file), 'state') });
  const da = new Docker({ socketPath: a.dockerSocket });
  for (const h of cluster.hosts) {
    const d = new Docker({ socketPath: h.dockerSocket });
    for (const c of await d.listContainers({ all: true, filters: { label: ['demo=spot'] } })) await d.getContainer(c.Id).remove({ force: true });
  }
  const meta = await imds();
  say(`${a.name}'s agent now watches an emulated AWS metadata service (${meta.url})`);
  await lc.stopAgent(cluster, a.name);
  await lc.startAgent(cluster, a.name, { FERRY_AGENT_SPOT_PROVIDER: 'aws', FERRY_AGENT_SPOT_ENDPOINT: meta.url, FERRY_AGENT_SPOT_POLL_MS: '200' }, AbortSignal.timeout(30_000));
  await lc.startController(cluster, AbortSignal.timeout(30_000));

  say(`on ${a.name}: Redis (opted in, priority 10), a worker (opted in), a cache (not opted in)`);
  const optIn = { 'ferry.dev/migrate': 'true', demo: 'spot' };
  const redis = await da.createContainer({ name: 'spot-redis', Image: 'ferry/redis:7', Hostname: 'spot-redis', Labels: { ...optIn, 'ferry.dev/priority': '10' },
    Cmd: ['redis-server', '--bind', '127.0.0.1', '--port', String(PORT), '--save', '', '--appendonly', 'no'], HostConfig: { NetworkMode: 'host' } });
  await redis.start();
  const worker = await da.createContainer({ name: 'spot-worker', Image: 'ferry/busybox:1', Hostname: 'spot-worker', Labels: optIn,
    Cmd: ['sh', '-c', 'i=0; while :; do i=$((i+1)); sleep 0.1; done'], HostConfig: { NetworkMode: 'none' } });
  await worker.start();
  const cache = await da.createContainer({ name: 'spot-cache', Image: 'ferry/busybox:1', Labels: { demo: 'spot' }, Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'none' } });
  await cache.start();

  const client = await Redis.open(PORT);
  let acked = 0;
  let stop = false;
  const writer = (async () => { while (!stop) { await client.cmd('RPUSH', 'log', String(acked + 1)); acked++; } })();

  const { conn } = await dial({ url: cluster.controller.url, name: 'demo', role: 'cli', serverRole: 'controller', secret: cluster.secret, log: silentLogger() });
  let finished: ClusterEventPayload | null = null;
  conn.on('event', (m, p) => {
    if (m !== ClusterEvent.name) return;
    const e = ClusterEvent.payload.parse(p);
    process.stdout.write(`\r\x1b[2K  [event] ${e.type}: ${e.message}\n`);
    if (e.type === 'drain-finished') finished = e;
  });
  await conn.request(ControllerApi.WatchEvents, {});

  await new Promise((r) => setTimeout(r, 1000)); // let the client write for a moment: pacing for the viewer
  const deadline = Date.now() + DEADLINE_S * 1000;
  say(`AWS: spot interruption notice for ${a.name}: terminate at ${new Date(deadline).toISOString()} (${DEADLINE_S} s)`);
  meta.notify(deadline);
  while (!finished) {
    process.stdout.write(`\r\x1b[2K  ${((deadline - Date.now()) / 1000).toFixed(1)} s left before ${a.name} dies; ${acked} writes acknowledged`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const remainingS = (deadline - Date.now()) / 1000;
  stop = true;
  await writer;
  const report = (finished as ClusterEventPayload).data?.report as { results: { container: string; to: string; result: string; downtimeMs: number | null }[] };
  say(`drain finished with ${remainingS.toFixed(1)} s to spare`);
  for (const r of report.results) process.stdout.write(`  ${r.container} → ${r.to}: ${r.result}, freeze ${r.downtimeMs?.toFixed(0)} ms\n`);
  const llen = await client.cmd('LLEN', 'log');
  const db = new Docker({ socketPath: b.dockerSocket });
  const onB = (await db.listContainers({ filters: { label: ['demo=spot'] } })).map((c) => c.Names[0]!.slice(1)).sort();
  const checks: [string, boolean][] = [
    [`Redis and the worker run on ${b.name} (${onB.join(', ')})`, onB.join(',') === 'spot-redis,spot-worker'],
    [`every acknowledged write is in Redis (LLEN ${llen.slice(1)} = ${acked})`, llen === `:${acked}`],
    [`the client's connection never broke`, client.broken === null],
    [`the drain finished before the deadline`, remainingS > 0],
  ];
  say('verdict');
  for (const [what, ok] of checks) process.stdout.write(`  ${ok ? '\x1b[32mPASS\x1b[0m' : '\x1b[31mFAIL\x1b[0m'} ${what}\n`);
  conn.close();
  meta.close();
  // Back to normal: host-a's agent without the emulated notice, host-a uncordoned, demo containers gone.
  await lc.stopAgent(cluster, a.name);
  await lc.startAgent(cluster, a.name, {}, AbortSignal.timeout(30_000));
  const { conn: c2 } = await dial({ url: cluster.controller.url, name: 'demo', role: 'cli', serverRole: 'controller', secret: cluster.secret, log: silentLogger() });
  await c2.request(ControllerApi.Cordon, { host: a.name, cordoned: false });
  c2.close();
  for (const h of cluster.hosts) {
    const d = new Docker({ socketPath: h.dockerSocket });
    for (const c of await d.listContainers({ all: true, filters: { label: ['demo=spot'] } })) await d.getContainer(c.Id).remove({ force: true });
  }
  process.exit(checks.every(([, ok]) => ok) ? 0 : 1);
}

main().catch((e: unknown) => { process.stderr.write(`demo failed: ${(e as Error).stack}\n`); process.exit(1); });
