// The agent process: HTTP server carrying the WebSocket endpoint and /metrics, and graceful shutdown.

import { createServer, type Server } from 'node:http';
import { WebSocketServer } from 'ws';
import client from 'prom-client';
import { acceptPeers, WS_OPTIONS } from '../src/rpc/handshake.js';
import type { Connection } from '../src/rpc/connection.js';
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
  acceptPeers(wss, { name: cfg.host, secret: cfg.secret, caps, log }, (conn) => {
    conns.add(conn);
    conn.serve(agent.handlers());
    conn.on('close', () => conns.delete(conn));
    log.info({ peer: conn.peerName, role: conn.peerRole }, 'peer authenticated');
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
      for (const c of conns) c.close(1001, 'agent shutting down');
      wss.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
