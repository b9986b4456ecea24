// The agent process: HTTP server carrying the WebSocket endpoint and /metrics, and graceful shutdown.

import { createServer, type Server } from 'node:http';
import { WebSocketServer } from 'ws';
import client from 'prom-client';
import { acceptPeers, WS_OPTIONS } from '../src/rpc/handshake.js';
import type { Connection, HandlerEntry } from '../src/rpc/connection.js';
import { AgentApi, HostNotice } from '../src/protocol/index.js';
import { createWatcher, type Notice } from './spot/index.js';
import { AzureWatcher } from './spot/azure.js';
import type { Logger } from '../src/log/logger.js';
import type { AgentConfig } from './config.js';
import { Agent } from './agent.js';
import { DockerRuntime } from './runtime/docker-runtime.js';
import { probeCapabilities } from './probe.js';
import { splitHostPort } from '../src/util/net.js';

export interface RunningAgent { agent: Agent; server: Server; url: string; close(): Promise<void> }

export async function startAgent(cfg: AgentConfig, log: Logger): Promise<RunningAgent> {
  const docker = new DockerRuntime(cfg.dockerSocket);
  const caps = await probeCapabilities(cfg.criu, cfg.runc, docker);
  log.info({ caps }, 'capabilities probed');
  if (!caps.criuUsable) log.warn({ criu: caps.criuVersion }, 'CRIU is missing or older than 4.2: migrations from or to this host will be refused');
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const agent = new Agent(cfg, docker, caps, log, registry);
  await agent.reap();
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      registry.metrics().then((m) => { res.setHeader('content-type', registry.contentType); res.end(m); }, () => { res.statusCode = 500; res.end(); });
      return;
    }
    if (req.url === '/healthz') { res.end('ok\n'); return; }
    res.statusCode = 404;
    res.end();
  });
  const wss = new WebSocketServer({ server, ...WS_OPTIONS });
  const conns = new Set<Connection>();
  // Preemption notices: reported to every controller connected now, and again to any that connects later,
  // so a notice seen while the controller was away is not lost (the controller ignores repeats).
  const notices: Notice[] = [];
  const report = (c: Connection, n: Notice): void => c.notify(HostNotice, {
    host: cfg.host, provider: n.provider, kind: n.kind, id: n.id,
    remainingMs: n.deadlineMono === null ? null : Math.max(0, Math.round(n.deadlineMono - performance.now())),
  });
  const watcherAbort = new AbortController();
  const watcher = createWatcher({ provider: cfg.spotProvider, endpoint: cfg.spotEndpoint, pollMs: cfg.spotPollMs }, log, (n) => {
    log.warn({ provider: n.provider, kind: n.kind, id: n.id, remainingMs: n.deadlineMono === null ? null : Math.round(n.deadlineMono - performance.now()) }, 'preemption notice');
    notices.push(n);
    for (const c of conns) if (c.peerRole === 'controller') report(c, n);
  });
  void watcher?.run(watcherAbort.signal);
  const ackHandler: HandlerEntry = {
    method: AgentApi.AcknowledgeNotice, roles: ['controller'],
    handler: async (p) => {
      const { id } = p as { id: string };
      if (!(watcher instanceof AzureWatcher)) return { acknowledged: false };
      await watcher.acknowledge(id, AbortSignal.timeout(5_000));
      return { acknowledged: true };
    },
  };
  acceptPeers(wss, { name: cfg.host, secret: cfg.secret, caps, log }, (conn) => {
    conns.add(conn);
    conn.serve([...agent.handlers(), ackHandler]);
    conn.on('close', () => conns.delete(conn));
    log.info({ peer: conn.peerName, role: conn.peerRole }, 'peer authenticated');
    if (conn.peerRole === 'controller') for (const n of notices) report(conn, n);
  });
  const [host, port] = splitHostPort(cfg.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const url = `ws://${host}:${boundPort}/`;
  log.info({ url, host: cfg.host }, 'agent listening');
  return {
    agent, server, url,
    close: async () => {
      watcherAbort.abort();
      for (const c of conns) c.close(1001, 'agent shutting down');
      wss.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
