// The controller: single writer of migration state. Serves the CLI, drives agents, recovers after a restart.

import { createServer, type Server } from 'node:http';
import { WebSocketServer } from 'ws';
import client from 'prom-client';
import {
  AgentApi, ClusterEvent, ControllerApi, FerryError, HostNotice, Progress, REPLACEMENT_WAIT_MS, asFerryError, podKey,
  type ClusterEventPayload, type HostNoticeEvent, type MigrationReport, type ParamsOf, type PeerRole, type ProgressEvent,
} from '../protocol/index.js';
import type { Connection, HandlerEntry } from '../rpc/connection.js';
import { acceptPeers, WS_OPTIONS } from '../rpc/handshake.js';
import type { Logger } from '../log/logger.js';
import type { ClusterConfig } from '../cluster.js';
import { AgentRegistry } from './agent-registry.js';
import { observedLinkRate } from '../migration/mode-choice.js';
import { FileJournal, type JournalRecord, type JournalStore } from './journal.js';
import { MigrationRunner, type RunnerDeps } from './migration-runner.js';
import { recoverMigration } from './recovery.js';
import { Drainer } from './drain.js';
import { join } from 'node:path';
import { splitHostPort } from '../util/net.js';

export class Controller {
  readonly registry: AgentRegistry;
  readonly journal: JournalStore;
  private readonly claims = new Map<string, string>();
  /** Page throughput each host pair reached in earlier migrations (bytes/s), for `--mode auto`. */
  private readonly links = new Map<string, number>();
  private readonly registryMetrics = new client.Registry();
  private readonly metrics;
  private readonly watchers = new Map<string, Set<Connection>>();
  /** Migrations a runner is driving right now; recovery keeps its hands off them. */
  private readonly active = new Set<string>();
  private readonly recovering = new Set<string>();
  /** Hosts no migration may land on (draining, or cordoned by an operator). */
  readonly cordoned = new Set<string>();
  readonly drainer: Drainer;
  private readonly subscribers = new Set<Connection>();
  /** Pod migrations whose state is staged on their destination, by pod identity (for ExpectPod). */
  private readonly podsStaged = new Map<string, { to: string; migrationId: string }>();
  private server: Server | null = null;
  url = '';

  constructor(private readonly cluster: ClusterConfig, private readonly log: Logger, journal?: JournalStore) {
    this.registry = new AgentRegistry(cluster.hosts.map((h) => ({ name: h.name, url: h.agentUrl })), { name: 'controller', secret: cluster.secret }, log);
    this.journal = journal ?? new FileJournal(join(cluster.stateDir, 'journal.jsonl'));
    client.collectDefaultMetrics({ register: this.registryMetrics });
    const r = [this.registryMetrics];
    this.metrics = {
      total: new client.Counter({ name: 'ferry_migrations_total', help: 'Migrations by result', labelNames: ['result'], registers: r }),
      phase: new client.Histogram({ name: 'ferry_migration_phase_seconds', help: 'Duration of each migration phase', labelNames: ['phase'], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers: r }),
      bytes: new client.Counter({ name: 'ferry_migration_bytes_total', help: 'Checkpoint bytes moved between hosts', registers: r }),
      freeze: new client.Histogram({ name: 'ferry_migration_downtime_seconds', help: 'Time the workload was frozen', buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5], registers: r }),
    };
    this.drainer = new Drainer({
      hosts: this.registry,
      cordoned: this.cordoned,
      log: this.log,
      migrate: (container, from, to, timeoutMs) => this.migrate({ container, from, to, dryRun: false, timeoutMs: Math.max(1000, Math.floor(timeoutMs)) }, new AbortController().signal),
    });
    // An agent coming back may be what an unfinished migration was waiting for.
    this.registry.on('connected', () => { if (this.server) void this.recover(); });
    this.registry.on('event', (host, m, p) => {
      if (m === HostNotice.name) {
        const n = HostNotice.payload.safeParse(p);
        // Only a host may speak for itself.
        if (n.success && n.data.host === host) this.onNotice(n.data);
        return;
      }
      if (m !== Progress.name) return;
      const ev = Progress.payload.safeParse(p);
      if (ev.success) this.forward(ev.data);
    });
  }

  async start(): Promise<void> {
    await this.registry.start();
    const server = createServer((req, res) => {
      if (req.url === '/metrics') {
        this.registryMetrics.metrics().then((m) => { res.setHeader('content-type', this.registryMetrics.contentType); res.end(m); }, () => { res.statusCode = 500; res.end(); });
        return;
      }
      res.statusCode = req.url === '/healthz' ? 200 : 404;
      res.end();
    });
    const wss = new WebSocketServer({ server, ...WS_OPTIONS });
    acceptPeers(wss, { name: 'controller', secret: this.cluster.secret, caps: null, log: this.log }, (conn) => {
      conn.serve(this.handlers());
      conn.on('close', () => {
        for (const s of this.watchers.values()) s.delete(conn);
        this.subscribers.delete(conn);
      });
    });
    const [host, port] = splitHostPort(this.cluster.controller.listen);
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, () => resolve()); });
    this.server = server;
    const a = server.address();
    this.url = `ws://${host}:${typeof a === 'object' && a ? a.port : port}/`;
    void this.recover();
  }

  async stop(): Promise<void> {
    this.registry.stop();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.journal.close();
  }

  handlers(): HandlerEntry[] {
    const cli: readonly PeerRole[] = ['cli'];
    return [
      { method: ControllerApi.ListHosts, roles: cli, handler: async () => this.registry.status(this.cordoned) },
      { method: ControllerApi.WatchEvents, roles: cli, handler: async (_p, ctx) => { this.subscribers.add(ctx.conn); return {}; } },
      { method: ControllerApi.Drain, roles: cli, handler: async (p) => {
        const d = p as ParamsOf<typeof ControllerApi.Drain>;
        return this.drainer.drain(d.host, d.deadlineMs === null ? null : performance.now() + d.deadlineMs, 'ferry drain', d.dryRun);
      } },
      { method: ControllerApi.Cordon, roles: cli, handler: async (p) => {
        const c = p as ParamsOf<typeof ControllerApi.Cordon>;
        if (!this.registry.get(c.host)) throw new FerryError('E_NOT_FOUND', `unknown host ${c.host}`);
        if (c.cordoned) this.cordoned.add(c.host); else this.cordoned.delete(c.host);
        return { host: c.host, cordoned: c.cordoned };
      } },
      { method: ControllerApi.ClusterContainers, roles: cli, handler: async (p) => this.containers((p as { all: boolean }).all) },
      { method: ControllerApi.StartMigration, roles: cli, handler: async (p, ctx) => this.migrate(p as ParamsOf<typeof ControllerApi.StartMigration>, ctx.signal, ctx.conn) },
      { method: ControllerApi.MigratePod, roles: ['shim'], handler: async (p, ctx) => this.migratePod(p as ParamsOf<typeof ControllerApi.MigratePod>, ctx.conn.peerName, ctx.signal) },
      { method: ControllerApi.ExpectPod, roles: ['shim'], handler: async (p, ctx) => this.expectPod(p as ParamsOf<typeof ControllerApi.ExpectPod>, ctx.conn.peerName, ctx.signal) },
    ];
  }

  /**
   * The replacement's Create may reach its shim before the old pod's Kill reached the source's: then nothing
   * is staged yet, and starting fresh would lose the state. While the old container still runs elsewhere,
   * wait for its migration to stage here (or for it to stop without one).
   */
  private async expectPod(p: ParamsOf<typeof ControllerApi.ExpectPod>, caller: string, signal: AbortSignal): Promise<{ inbound: boolean; reason: string }> {
    if (caller !== p.host) throw new FerryError('E_FORBIDDEN', `shim of ${caller} may not ask for ${p.host}`);
    const key = podKey(p.pod);
    const until = performance.now() + p.waitMs;
    for (;;) {
      const m = this.podsStaged.get(key);
      if (m && m.to === p.host) return { inbound: true, reason: `migration ${m.migrationId} is staged here` };
      let runningOn: string | null = null;
      for (const name of this.registry.names()) {
        const h = this.registry.get(name);
        if (name === p.host || !h?.connected) continue;
        const r = await h.call(AgentApi.InspectForMigration, { ref: key }, { signal, timeoutMs: 5_000 }).catch(() => null);
        if (r?.pod && r.running) { runningOn = name; break; }
      }
      if (!runningOn) return { inbound: false, reason: `no container ${key} runs on another host` };
      if (performance.now() >= until) return { inbound: false, reason: `${key} still runs on ${runningOn} and no migration of it began` };
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 100);
        function done(): void { clearTimeout(t); signal.removeEventListener('abort', done); resolve(); }
        signal.addEventListener('abort', done, { once: true });
      });
      signal.throwIfAborted();
    }
  }

  /**
   * A shim holds the Kill of a pod container being deleted: move it, stop-and-copy (a pod's owner is waiting,
   * and the grace period bounds everything), to the named host or the first connected, uncordoned other one.
   */
  private async migratePod(p: ParamsOf<typeof ControllerApi.MigratePod>, caller: string, signal: AbortSignal): Promise<MigrationReport> {
    // A shim speaks for its own host only: it cannot make another host's containers move.
    if (caller !== p.host) throw new FerryError('E_FORBIDDEN', `shim of ${caller} may not migrate containers of ${p.host}`);
    const to = p.to ?? this.registry.names().find((n) => n !== p.host && this.registry.get(n)?.connected && !this.cordoned.has(n));
    if (!to) throw new FerryError('E_UNAVAILABLE', `no connected, uncordoned host to move ${p.containerId.slice(0, 12)} to`);
    const req = {
      container: p.containerId, from: p.host, to, dryRun: false, timeoutMs: p.timeoutMs, mode: p.mode, pod: true,
      ...(p.maxDowntimeMs === null ? {} : { maxDowntimeMs: p.maxDowntimeMs }),
    };
    if (p.release === 'running') return this.migrate(req, signal);
    // Released once staged: the shim's connection goes away with the old pod, long before the replacement
    // comes, so the migration must not hang on it. The final report goes out as a cluster event.
    let staged!: (r: MigrationReport) => void;
    const early = new Promise<MigrationReport>((resolve) => { staged = resolve; });
    const done = this.migrate({ ...req, replacementWaitMs: REPLACEMENT_WAIT_MS }, new AbortController().signal, undefined, { onStaged: (r) => staged(r) });
    done.catch((e: unknown) => this.log.error({ container: p.containerId, err: asFerryError(e).message }, 'staged pod migration failed'));
    return Promise.race([done, early]);
  }

  private async containers(all: boolean) {
    const out = [];
    for (const name of this.registry.names()) {
      const h = this.registry.get(name)!;
      if (!h.connected) continue;
      out.push(...(await h.call(AgentApi.ListContainers, { all }, { timeoutMs: 10_000 })));
    }
    return out;
  }

  /** Runs a migration; progress events go to the connection that asked for it. */
  async migrate(
    p: ParamsOf<typeof ControllerApi.StartMigration> & { pod?: boolean; replacementWaitMs?: number },
    signal: AbortSignal, watcher?: Connection, extra: Pick<RunnerDeps, 'onStaged'> = {},
  ): Promise<MigrationReport> {
    const runner = new MigrationRunner(p, {
      ...extra,
      onPodStaged: (pod, to, migrationId) => { this.podsStaged.set(podKey(pod), { to, migrationId }); staged.push(podKey(pod)); },
      hosts: this.registry,
      journal: this.journal,
      log: this.log,
      claim: (key, mid) => this.claim(key, mid),
      cordoned: this.cordoned,
      progress: (e) => this.forward(e),
      onFinished: (r) => this.record(r),
      linkRate: (from, to) => this.links.get(`${from}>${to}`),
    });
    const staged: string[] = [];
    if (watcher) this.watchers.set(runner.id, new Set([watcher]));
    this.active.add(runner.id);
    try {
      return await runner.run(signal);
    } finally {
      for (const k of staged) if (this.podsStaged.get(k)?.migrationId === runner.id) this.podsStaged.delete(k);
      this.watchers.delete(runner.id);
      this.active.delete(runner.id);
    }
  }

  private claim(key: string, mid: string): () => void {
    const holder = this.claims.get(key);
    if (holder) throw new FerryError('E_CONFLICT', `${key} is already being migrated by ${holder}`);
    this.claims.set(key, mid);
    return () => { if (this.claims.get(key) === mid) this.claims.delete(key); };
  }

  private forward(e: ProgressEvent): void {
    for (const c of this.watchers.get(e.migrationId) ?? []) c.notify(Progress, e);
  }

  /** A provider notice from an agent: drain that host, then tell the provider we are done. */
  private onNotice(n: HostNoticeEvent): void {
    // The remaining time becomes a deadline on our own monotonic clock, once: skew between hosts is irrelevant.
    const deadline = n.remainingMs === null ? null : performance.now() + n.remainingMs;
    this.log.warn({ host: n.host, provider: n.provider, kind: n.kind, remainingMs: n.remainingMs }, 'host notice: draining');
    this.publish({ type: 'notice', host: n.host, message: `${n.provider} ${n.kind}${n.remainingMs === null ? '' : `, ${(n.remainingMs / 1000).toFixed(0)} s left`}`, data: { ...n } });
    this.publish({ type: 'drain-started', host: n.host, message: `draining ${n.host}` });
    void this.drainer.drain(n.host, deadline, `${n.provider} ${n.kind}`, false)
      .then(async (r) => {
        this.log.info({ host: n.host, results: r.results, notFit: r.plan.filter((m) => !m.fits).map((m) => m.container) }, 'drain finished');
        this.publish({ type: 'drain-finished', host: n.host, message: `${r.results.filter((x) => x.result === 'succeeded').length}/${r.plan.length} moved in ${(r.totalMs / 1000).toFixed(1)} s`, data: { report: r } });
        await this.registry.get(n.host)?.call(AgentApi.AcknowledgeNotice, { id: n.id }, { timeoutMs: 10_000 });
      })
      .catch((e: unknown) => this.log.error({ host: n.host, err: asFerryError(e).message }, 'drain failed'));
  }

  private publish(e: ClusterEventPayload): void {
    for (const c of this.subscribers) c.notify(ClusterEvent, e);
  }

  private record(r: MigrationReport): void {
    this.publish({ type: 'migration', host: r.source, message: `${r.container} ${r.source} → ${r.destination}: ${r.result}${r.downtimeMs === null ? '' : `, freeze ${r.downtimeMs.toFixed(0)} ms`}`, data: { report: r } });
    this.drainer.observe(r, r.bytesTotal);
    this.metrics.total.inc({ result: r.result });
    this.metrics.bytes.inc(r.bytesTotal);
    for (const [k, v] of Object.entries(r.phases)) this.metrics.phase.observe({ phase: k }, v / 1000);
    if (r.downtimeMs !== null) this.metrics.freeze.observe(r.downtimeMs / 1000);
    const seen = observedLinkRate(r);
    if (seen !== null) {
      const key = `${r.source}>${r.destination}`;
      const prev = this.links.get(key);
      this.links.set(key, prev === undefined ? seen : (prev + seen) / 2);
    }
  }

  /** Migrations the journal shows unfinished are rolled back or cleaned up once their agents are back. */
  private async recover(): Promise<void> {
    for (const rec of this.journal.open()) {
      if (this.active.has(rec.migrationId) || this.recovering.has(rec.migrationId)) continue;
      this.recovering.add(rec.migrationId);
      void this.recoverOne(rec)
        .catch((e: unknown) => this.log.error({ migrationId: rec.migrationId, err: asFerryError(e).message }, 'recovery failed; will retry when an agent reconnects'))
        .finally(() => this.recovering.delete(rec.migrationId));
    }
  }

  private async recoverOne(rec: JournalRecord): Promise<void> {
    await recoverMigration(rec, this.registry, this.journal, this.log, AbortSignal.timeout(10 * 60_000));
  }
}

