// Draining a doomed host: cordon it, plan against the deadline, migrate what fits, report what does not.

import {
  AgentApi, FerryError, OPT_IN_LABEL, PRIORITY_LABEL, asFerryError,
  type DrainReport, type MigrationReport,
} from '../protocol/index.js';
import { DEFAULT_MODEL, learn, planDrain, type DrainItem, type DurationModel, type PlannedMove } from '../migration/drain-plan.js';
import type { Logger } from '../log/logger.js';
import type { HostClient } from './agent-registry.js';

export interface DrainDeps {
  hosts: { get(name: string): HostClient | undefined; names(): string[] };
  cordoned: Set<string>;
  migrate(container: string, from: string, to: string, timeoutMs: number): Promise<MigrationReport>;
  log: Logger;
  /** Migrations at once from one host. Two: the dump of one overlaps the transfer of the other. */
  concurrency?: number;
}

const NO_DEADLINE_TIMEOUT_MS = 10 * 60_000;

export class Drainer {
  private model: DurationModel = DEFAULT_MODEL;
  private readonly running = new Map<string, Promise<DrainReport>>();

  constructor(private readonly d: DrainDeps) {}

  /** What the model learned from finished migrations, so later plans get better. */
  observe(r: MigrationReport, rssBytes: number): void {
    if (r.result === 'succeeded') this.model = learn(this.model, rssBytes, r.totalMs);
  }

  /**
   * Drains `host`. `deadlineMono` is on this process's monotonic clock (a notice's remaining time converted
   * once, on receipt). A second request for a host already draining joins the running drain.
   */
  drain(host: string, deadlineMono: number | null, reason: string, dryRun: boolean): Promise<DrainReport> {
    const running = this.running.get(host);
    if (running && !dryRun) return running;
    const p = this.run(host, deadlineMono, reason, dryRun);
    if (!dryRun) {
      this.running.set(host, p);
      void p.finally(() => this.running.delete(host)).catch(() => undefined);
    }
    return p;
  }

  private async run(host: string, deadlineMono: number | null, reason: string, dryRun: boolean): Promise<DrainReport> {
    const t0 = performance.now();
    const src = this.d.hosts.get(host);
    if (!src) throw new FerryError('E_NOT_FOUND', `unknown host ${host}`);
    if (!src.connected) throw new FerryError('E_UNAVAILABLE', `host ${host} is not connected`);
    // From now on nothing new lands on the doomed host, and it is never picked as a destination.
    if (!dryRun) this.d.cordoned.add(host);
    const remaining = (): number | null => (deadlineMono === null ? null : Math.max(0, deadlineMono - performance.now()));
    const containers = await src.call(AgentApi.ListContainers, { all: false }, { timeoutMs: 10_000 });
    const items: DrainItem[] = [];
    for (const c of containers.filter((x) => x.labels[OPT_IN_LABEL] === 'true')) {
      const info = await src.call(AgentApi.InspectForMigration, { ref: c.id }, { timeoutMs: 10_000 });
      items.push({ container: c.name, rssBytes: info.rssBytes, priority: Number(c.labels[PRIORITY_LABEL] ?? 0) || 0 });
    }
    const plan = planDrain({ items, destinations: this.destinations(host), remainingMs: remaining(), concurrency: this.d.concurrency ?? 2, model: this.model });
    const notFit = plan.filter((m) => !m.fits);
    // Said before the deadline, not after: what cannot make it and why.
    if (notFit.length) this.d.log.warn({ host, notFit: notFit.map((m) => `${m.container}: ${m.reason}`) }, 'drain cannot move everything in time');
    this.d.log.info({ host, reason, remainingMs: remaining(), plan: plan.map((m) => `${m.container} → ${m.to ?? '-'} ~${m.estimateMs} ms`) }, dryRun ? 'drain plan (dry run)' : 'draining host');
    const report: DrainReport = { host, reason, remainingMs: remaining(), plan, results: [], dryRun, totalMs: 0 };
    if (dryRun) { report.totalMs = Math.round(performance.now() - t0); return report; }
    await this.execute(host, plan.filter((m) => m.fits), remaining, report);
    report.totalMs = Math.round(performance.now() - t0);
    return report;
  }

  /** Runs the moves in plan order, a bounded number at a time; destinations are chosen again at start. */
  private async execute(host: string, moves: PlannedMove[], remaining: () => number | null, report: DrainReport): Promise<void> {
    const queue = [...moves];
    const lane = async (): Promise<void> => {
      for (let m = queue.shift(); m; m = queue.shift()) {
        // A destination cordoned since planning (a second notice) is replaced by another one.
        const dests = this.destinations(host);
        const to = m.to && dests.includes(m.to) ? m.to : dests[0];
        const left = remaining();
        if (!to || (left !== null && left <= 0)) {
          report.results.push({ container: m.container, to: to ?? '-', result: 'skipped', downtimeMs: null, error: to ? 'deadline passed' : 'no host can receive it' });
          continue;
        }
        try {
          const r = await this.d.migrate(m.container, host, to, left ?? NO_DEADLINE_TIMEOUT_MS);
          report.results.push({ container: m.container, to, result: r.result, downtimeMs: r.downtimeMs, error: r.error?.message ?? null });
        } catch (e) {
          report.results.push({ container: m.container, to, result: 'rejected', downtimeMs: null, error: asFerryError(e).message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.d.concurrency ?? 2, Math.max(1, moves.length)) }, lane));
  }

  private destinations(host: string): string[] {
    return this.d.hosts.names().filter((n) => n !== host && !this.d.cordoned.has(n) && this.d.hosts.get(n)?.connected);
  }
}
