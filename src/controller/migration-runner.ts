// Runs one stop-and-copy migration through the state machine: preflight, steps with undo, the commit point, cleanup.

import { randomBytes } from 'node:crypto';
import {
  AgentApi, FerryError, LAZY_FILL_TIMEOUT_MS, asFerryError, toWire,
  type ContainerSpec, type PodIdentity, type MigrationMode, type MigrationReport, type ModeChoiceReport, type RequestedMode, type ProgressEvent, type RoundStats, type WireError,
} from '../protocol/index.js';
import { afterRound, startConvergence, DEFAULT_FREEZE_MODEL, type FreezeModel } from '../migration/convergence.js';
import { transition, type Phase } from '../migration/state.js';
import { chooseMode, DEFAULT_LINK_BYTES_PER_SEC } from '../migration/mode-choice.js';
import type { Logger } from '../log/logger.js';
import type { HostClient } from './agent-registry.js';
import type { JournalStore } from './journal.js';
import { deadline as withDeadline } from '../util/abort.js';

export interface MigrationRequest {
  container: string;
  to: string;
  from?: string | undefined;
  dryRun: boolean;
  timeoutMs: number;
  mode?: RequestedMode | undefined;
  maxDowntimeMs?: number | undefined;
  maxRounds?: number | undefined;
  autoConverge?: boolean | undefined;
  /**
   * A pod's container whose pod is being deleted (the containerd shim asked): the destination stages the
   * state for the replacement pod instead of creating a container. Only such requests may move pod containers.
   */
  pod?: boolean | undefined;
  /**
   * Pods released once staged: the restore (waiting for the replacement pod) gets this long of its own,
   * beyond timeoutMs, which then bounds only the steps up to the staged state.
   */
  replacementWaitMs?: number | undefined;
}

export interface RunnerDeps {
  hosts: { get(name: string): HostClient | undefined; names(): string[] };
  journal: JournalStore;
  log: Logger;
  /** Claims a container for this migration; throws E_CONFLICT if another migration holds it. */
  claim(key: string, migrationId: string): () => void;
  progress(e: ProgressEvent): void;
  /** Hosts no migration may land on. */
  cordoned?: ReadonlySet<string>;
  onFinished?(r: MigrationReport): void;
  /** A pod's state is staged on the destination (PrepareTarget returned): its replacement may claim it there. */
  onPodStaged?(pod: PodIdentity, dest: string, migrationId: string): void;
  /** The state has arrived on the destination and the restore is about to be awaited (pods only wait there). */
  onStaged?(r: MigrationReport): void;
  /** Page throughput seen between two hosts in earlier migrations, bytes/s (for `--mode auto`). */
  linkRate?(from: string, to: string): number | undefined;
}

/** How long `--mode auto` watches the container's writes before choosing. */
export const AUTO_SAMPLE_MS = 500;

export const newMigrationId = (): string => `m-${Date.now().toString(36)}-${randomBytes(5).toString('hex')}`;
const ms = (t0: number): number => Math.round((performance.now() - t0) * 10) / 10;

interface Located { host: HostClient; id: string; name: string; spec: ContainerSpec | null; pod: PodIdentity | null; rssBytes: number }

/** One migration from start to a terminal phase. Never throws once preflight has passed: the report says what happened. */
export class MigrationRunner {
  readonly id = newMigrationId();
  private phase: Phase = 'pending';
  private readonly phases: Record<string, number> = {};
  private source!: HostClient;
  private dest!: HostClient;
  private located!: Located;
  private bytes = 0;
  private journaled = false;
  private readonly undo: { name: string; fn: () => Promise<void> }[] = [];
  private mode: MigrationMode;
  private modeChoice: ModeChoiceReport | undefined;
  private readonly rounds: (RoundStats & { receiveMs: number; throttle: number })[] = [];
  private convergence: MigrationReport['convergence'];
  /** The source said it cannot run the container again (a pod's task that had ended): lost, not rolled back. */
  private lost = false;

  constructor(private readonly req: MigrationRequest, private readonly deps: RunnerDeps) {
    // `auto` is resolved in preflight, once the container's write rate is known.
    this.mode = req.mode === 'precopy' || req.mode === 'postcopy' ? req.mode : 'stop-and-copy';
  }

  /**
   * Preflight failures (bad input, conflicts, unreachable hosts) throw: nothing was touched. After
   * preflight the result is always a report: succeeded, rolled_back, or failed (state uncertain).
   */
  async run(signal: AbortSignal): Promise<MigrationReport> {
    const t0 = performance.now();
    const deadline = withDeadline(this.req.timeoutMs, signal);
    // Claimed by the name given before anything is looked up, and by id once resolved: two requests for
    // the same container conflict however they name it, and never both get past preflight.
    const releaseRef = this.req.dryRun ? () => undefined : this.deps.claim(`ref:${this.req.container}`, this.id);
    let releaseId = (): void => undefined;
    try {
      this.to('preflight');
      const checks = await this.preflight(deadline);
      if (this.req.dryRun) {
        this.to('done');
        return this.report('dry_run', t0, null, null, checks);
      }
      releaseId = this.deps.claim(`id:${this.located.id}`, this.id);
      return await this.execute(t0, deadline, checks, signal);
    } finally {
      releaseId();
      releaseRef();
    }
  }

  private async execute(t0: number, deadline: AbortSignal, checks: string[], outer: AbortSignal): Promise<MigrationReport> {
    let freezeStart = 0;
    let downtime: number | null = null;
    try {
      await this.step('preparing', 'prepare', async () => {
        // Undo first: a create whose reply is lost must still be removed (AbortTarget is idempotent).
        this.undo.push({ name: 'abort target', fn: async () => { await this.dest.call(AgentApi.AbortTarget, { migrationId: this.id }, { timeoutMs: 60_000 }); } });
        await this.dest.call(AgentApi.PrepareTarget, { migrationId: this.id, spec: this.located.spec, pod: this.located.pod }, { signal: deadline });
        if (this.located.pod) this.deps.onPodStaged?.(this.located.pod, this.dest.name, this.id);
      });
      const token = randomBytes(24).toString('hex');
      const rollbackSource = { name: 'roll back source', fn: async () => {
        const r = await this.source.call(AgentApi.RollbackSource, { migrationId: this.id }, { timeoutMs: 120_000 });
        this.lost = r.lost;
      } };
      if (this.mode === 'precopy') {
        // Registered before the call: tracking that started but whose reply was lost is still released.
        this.undo.push(rollbackSource);
        await this.precopy(token, deadline);
      }
      if (this.located.pod && !this.req.replacementWaitMs) {
        // The owner creates the replacement as the old pod goes; freezing before it can take the state would
        // put its whole start (a sandbox: ~0.4 s here) inside the freeze. Wait for it, while the container
        // runs on (and pre-copy's rounds are done), for at most half the budget; a StatefulSet (released once
        // staged) cannot come first.
        const tw = performance.now();
        const r = await this.dest.call(AgentApi.AwaitReplacement, { migrationId: this.id, waitMs: Math.max(0, Math.floor(this.req.timeoutMs / 2 - (tw - t0))) }, { signal: deadline });
        this.phases.awaitReplacement = r.waitedMs;
      }
      const cp = await this.step('checkpointing', 'checkpoint', async () => {
        // Registered before the call: a dump that fails half-way, or whose reply is lost, still gets undone.
        if (!this.undo.includes(rollbackSource) && this.mode !== 'precopy') this.undo.push(rollbackSource);
        const called = performance.now();
        const r = await this.source.call(AgentApi.Checkpoint, { migrationId: this.id, containerId: this.located.id, peer: this.dest.name, token, postcopy: this.mode === 'postcopy' }, { signal: deadline });
        // The freeze began when CRIU stopped the tasks, not when we asked: the agent says how long that took.
        freezeStart = called + (r.timings.beforeFreeze ?? 0);
        this.agentTimings('checkpoint', r.timings);
        return r;
      });
      await this.step('transferring', 'transfer', async () => {
        const r = await this.dest.call(AgentApi.Pull, {
          migrationId: this.id, source: { host: this.source.name, url: this.source.url }, token, manifest: cp.manifest,
        }, { signal: deadline });
        // On top of what pre-copy's rounds moved: the report's bytes are everything that crossed.
        this.bytes += r.bytes;
        this.agentTimings('transfer', r.timings);
      });
      await this.step('restoring', 'restore', async () => {
        this.deps.onStaged?.(this.report('staged', t0, null, null));
        const wait = this.req.replacementWaitMs ? withDeadline(this.req.replacementWaitMs, outer) : deadline;
        const r = await this.dest.call(AgentApi.Restore, { migrationId: this.id }, { signal: wait });
        downtime = ms(freezeStart);
        this.agentTimings('restore', r.timings);
      });
    } catch (e) {
      return await this.rollBack(asFerryError(e), t0);
    }
    // The commit point: journaled before anything irreversible happens to the source.
    this.to('committed', { downtimeMs: downtime });
    this.to('cleaning');
    const tc = performance.now();
    // The container already runs on the destination; a lazy restore may still be filling its memory, which
    // can take minutes under a heavy writer (docs/postcopy.md). Say so rather than look stuck.
    this.deps.progress({ migrationId: this.id, phase: 'cleanup', state: 'started', message: `running on ${this.dest.name}; waiting for its memory to arrive in full before releasing it` });
    const { errors: cleanupErrors, lost } = await this.cleanup();
    this.phases.cleanup = ms(tc);
    this.deps.progress({ migrationId: this.id, phase: 'cleanup', state: cleanupErrors.length ? 'failed' : 'done' });
    // What is left (a source copy on a host that was down, say) stays journaled as `cleaning`: recovery
    // finishes it when that host's agent connects again (every cleanup call is idempotent).
    if (!cleanupErrors.length) this.to('done');
    else this.deps.log.warn({ migrationId: this.id, pending: cleanupErrors }, 'cleanup incomplete; recovery finishes it when the hosts are back');
    const pending = cleanupErrors.length ? [...checks, ...cleanupErrors.map((c) => `cleanup pending (finished when the host is back): ${c}`)] : checks;
    const r = lost
      ? this.report('lost', t0, downtime, { code: 'E_LOST', message: `${this.located.name} was lost after it ran on ${this.dest.name}: ${lost}` }, pending)
      : this.report('succeeded', t0, downtime, null, pending);
    this.deps.onFinished?.(r);
    return r;
  }

  /**
   * Rounds of dirty pages while the container runs on the source, until the convergence policy says the
   * final freeze will not get any shorter (or fits the target). The container is untouched if this fails.
   */
  private async precopy(token: string, deadline: AbortSignal): Promise<void> {
    await this.step('precopying', 'precopy', async () => {
      await this.source.call(AgentApi.PrecopyStart, { migrationId: this.id, containerId: this.located.id, peer: this.dest.name, token }, { signal: deadline });
      const tStart = performance.now();
      let conv = startConvergence({
        maxDowntimeMs: this.req.maxDowntimeMs ?? 100,
        maxRounds: this.req.maxRounds ?? 30,
        maxTotalMs: Math.max(1_000, Math.min(this.req.timeoutMs / 2, 300_000)),
        autoConverge: this.req.autoConverge ?? false,
      }, this.freezeModel(), this.located.rssBytes);
      let throttle = 0;
      for (let round = 0; ; round++) {
        const r = await this.dest.call(AgentApi.PrecopyRound, {
          migrationId: this.id, source: { host: this.source.name, url: this.source.url }, token, round, throttle,
        }, { signal: deadline });
        this.rounds.push({ ...r, throttle });
        this.bytes += r.bytes;
        const throughput = r.bytes > 0 && r.durationMs > 0 ? r.bytes / (r.durationMs / 1000) : 0;
        const next = afterRound(conv, {
          round, pages: r.pages, bytes: r.bytes, dirtyPages: r.dirtyPages, durationMs: r.durationMs, sinceStartMs: performance.now() - tStart,
        }, throughput);
        conv = next.state;
        const d = next.decision;
        this.deps.progress({ migrationId: this.id, phase: 'precopy', state: 'progress', bytes: this.bytes, round: r, message: d.explain });
        this.deps.log.info({ migrationId: this.id, round, pages: r.pages, dirtyPages: r.dirtyPages, ms: r.durationMs, decision: d.action, why: d.explain }, 'pre-copy round');
        if (d.action === 'stop') {
          this.convergence = { reason: d.reason, explain: d.explain, predictedFreezeMs: Math.round(d.predictedFreezeMs), throttle: d.throttle };
          break;
        }
        throttle = d.throttle;
      }
    });
  }

  /** What the final phase costs besides moving the remaining pages: measured on this machine's kind (README). */
  private freezeModel(): FreezeModel {
    return DEFAULT_FREEZE_MODEL;
  }

  private async preflight(signal: AbortSignal): Promise<string[]> {
    const tp = performance.now();
    const { hosts } = this.deps;
    const dest = hosts.get(this.req.to);
    if (!dest) throw new FerryError('E_NOT_FOUND', `unknown destination host ${this.req.to} (known: ${hosts.names().join(', ')})`);
    if (!dest.connected) throw new FerryError('E_UNAVAILABLE', `destination ${dest.name} is not connected`);
    if (this.deps.cordoned?.has(dest.name)) throw new FerryError('E_PRECONDITION', `destination ${dest.name} is cordoned`);
    const located = await this.locate(signal);
    if (located.host.name === dest.name) throw new FerryError('E_INVALID_ARGUMENT', `${this.req.container} already runs on ${dest.name}`);
    this.source = located.host;
    this.dest = dest;
    this.located = located;
    const checks: string[] = [];
    for (const h of [this.source, dest]) {
      const c = h.caps;
      if (!c?.criuUsable) throw new FerryError('E_PRECONDITION', `host ${h.name} has no usable CRIU (${c?.criuVersion ?? 'none'}; need ≥ 4.2)`);
      checks.push(`${h.name}: criu ${c.criuVersion}, kernel ${c.kernel}, docker ${c.dockerVersion}, runc ${c.runcVersion}`);
    }
    if (located.spec) checks.push(`container ${located.spec.name} (${located.id.slice(0, 12)}) rss ${(located.rssBytes / 2 ** 20).toFixed(1)} MiB, network ${located.spec.networkMode}, volumes ${located.spec.volumes.map((v) => v.name).join(',') || 'none'}`);
    else checks.push(`pod container ${located.name} (${located.id.slice(0, 12)}) rss ${(located.rssBytes / 2 ** 20).toFixed(1)} MiB: restores into its replacement pod on ${dest.name}`);
    if (this.req.mode === 'auto') checks.push(await this.chooseMode(signal));
    if (this.mode === 'precopy') {
      if (!this.source.caps?.uffd) throw new FerryError('E_PRECONDITION', `host ${this.source.name} has no userfaultfd: pre-copy cannot track writes there (use --mode stop-and-copy)`);
      checks.push(`strategy precopy (max downtime ${this.req.maxDowntimeMs ?? 100} ms, max rounds ${this.req.maxRounds ?? 30}${this.req.autoConverge ? ', auto-converge' : ''}): reversible until the destination runs`);
    } else if (this.mode === 'postcopy') {
      if (!this.dest.caps?.uffd) throw new FerryError('E_PRECONDITION', `host ${this.dest.name} has no userfaultfd: it cannot run a task before its memory arrived (use --mode stop-and-copy)`);
      checks.push(`strategy postcopy: the destination runs before its memory arrived and fetches every page from ${this.source.name}; reversible until the destination runs, lost (never rolled back) if ${this.source.name} fails before the last page arrived`);
    } else checks.push('strategy stop-and-copy: reversible until the destination runs');
    this.phases.preflight = ms(tp);
    return checks;
  }

  /** `--mode auto`: measure how fast the container writes, then let the pure policy pick. */
  private async chooseMode(signal: AbortSignal): Promise<string> {
    const uffd = !!this.source.caps?.uffd;
    let dirtyPagesPerSec: number | null = null;
    if (uffd) {
      const t = performance.now();
      try {
        const s = await this.source.call(AgentApi.SampleDirtyRate, { containerId: this.located.id, windowMs: AUTO_SAMPLE_MS }, { signal });
        dirtyPagesPerSec = s.windowMs > 0 ? (s.dirtyPages / s.windowMs) * 1000 : null;
      } catch (e) {
        const err = asFerryError(e);
        // A conflict (memory still arriving) or a vanished container is the caller's answer, not a sampling problem.
        if (err.code === 'E_CONFLICT' || err.code === 'E_NOT_FOUND' || signal.aborted) throw err;
        this.deps.log.warn({ migrationId: this.id, err: err.message }, 'write-rate sample failed; auto mode falls back to stop-and-copy');
      }
      this.phases['preflight.sample'] = ms(t);
    }
    const linkBytesPerSec = this.deps.linkRate?.(this.source.name, this.dest.name) ?? DEFAULT_LINK_BYTES_PER_SEC;
    const c = chooseMode({
      rssBytes: this.located.rssBytes, dirtyPagesPerSec, linkBytesPerSec,
      maxDowntimeMs: this.req.maxDowntimeMs ?? 100, deadlineMs: this.req.timeoutMs, uffd,
      postcopy: !!this.dest.caps?.uffd && !this.located.pod,
    });
    this.mode = c.mode;
    this.modeChoice = {
      requested: 'auto', reason: c.reason, explain: c.explain, dirtyPagesPerSec: dirtyPagesPerSec === null ? null : Math.round(dirtyPagesPerSec),
      linkBytesPerSec: Math.round(linkBytesPerSec), predictedStopCopyFreezeMs: c.predictedStopCopyFreezeMs,
      predictedPrecopyFreezeMs: c.predictedPrecopyFreezeMs, predictedPrecopyTotalMs: c.predictedPrecopyTotalMs,
      predictedPostcopyFreezeMs: c.predictedPostcopyFreezeMs,
    };
    this.deps.log.info({ migrationId: this.id, mode: c.mode, reason: c.reason, dirtyPagesPerSec, linkBytesPerSec }, 'auto mode chose');
    return `auto: ${c.mode} (${c.reason}): ${c.explain}`;
  }

  private async locate(signal: AbortSignal): Promise<Located> {
    const { hosts } = this.deps;
    const candidates = this.req.from ? [this.req.from] : hosts.names();
    const found: Located[] = [];
    const rejects: string[] = [];
    for (const name of candidates) {
      const h = hosts.get(name);
      if (!h) throw new FerryError('E_NOT_FOUND', `unknown source host ${name}`);
      if (!h.connected) {
        if (this.req.from) throw new FerryError('E_UNAVAILABLE', `source ${name} is not connected`);
        continue;
      }
      try {
        const r = await h.call(AgentApi.InspectForMigration, { ref: this.req.container }, { signal });
        if (r.rejectReasons.length) rejects.push(...r.rejectReasons.map((x) => `${name}: ${x}`));
        else if (!!r.pod !== !!this.req.pod) rejects.push(r.pod
          ? `${name}: ${r.name} belongs to a pod: it moves when its pod is deleted (containerd shim, annotation ferry.dev/migrate), not with ferry migrate`
          : `${name}: ${r.name} is not a pod's container`);
        else found.push({ host: h, id: r.id, name: r.name, spec: r.spec, pod: r.pod, rssBytes: r.rssBytes });
      } catch (e) {
        if (asFerryError(e).code !== 'E_NOT_FOUND') throw e;
      }
    }
    if (found.length > 1) throw new FerryError('E_INVALID_ARGUMENT', `${this.req.container} exists on ${found.map((f) => f.host.name).join(' and ')}; name the source with --from`);
    const hit = found[0];
    if (hit) return hit;
    if (rejects.length) throw new FerryError('E_PRECONDITION', `cannot migrate ${this.req.container}: ${rejects.join('; ')}`, { details: { reasons: rejects } });
    throw new FerryError('E_NOT_FOUND', `no container ${this.req.container} on ${candidates.join(', ')}`);
  }

  private async step<T>(phase: Phase, name: string, fn: () => Promise<T>): Promise<T> {
    this.to(phase);
    this.deps.progress({ migrationId: this.id, phase: name as ProgressEvent['phase'], state: 'started' });
    const t = performance.now();
    const r = await fn();
    this.phases[name] = ms(t);
    this.deps.progress({ migrationId: this.id, phase: name as ProgressEvent['phase'], state: 'done', ...(name === 'transfer' ? { bytes: this.bytes } : {}) });
    return r;
  }

  private async rollBack(cause: FerryError, t0: number): Promise<MigrationReport> {
    const from = this.phase;
    this.deps.log.warn({ migrationId: this.id, from, code: cause.code, err: cause.message }, 'migration failed before the commit point; rolling back');
    this.to('rolling-back', { from, cause: toWire(cause) });
    this.deps.progress({ migrationId: this.id, phase: 'rollback', state: 'started', message: cause.message });
    const tr = performance.now();
    const undoErrors: string[] = [];
    let sourceBack = true;
    // Not the usual reverse order: the destination copy goes first, so two copies never run even for a
    // moment (the source is brought back only once the destination's copy is gone).
    for (const u of this.undo) {
      try {
        await u.fn();
      } catch (e) {
        undoErrors.push(`${u.name}: ${asFerryError(e).message}`);
        if (u.name === 'roll back source') sourceBack = false;
        // If the destination may already run the restored copy and we cannot reach it to remove it,
        // resuming the source could make two. Stop here; recovery finishes once the agent is back.
        if (u.name === 'abort target' && from === 'restoring') { sourceBack = false; break; }
      }
    }
    this.phases.rollback = ms(tr);
    if (this.lost) {
      // Terminal: nothing runs anywhere, and nothing is left to undo; retrying recovery would not bring it back.
      const lostErr = { code: 'E_LOST' as const, message: `${this.located?.name ?? this.req.container} was lost: its task on ${this.source.name} had ended at the dump and the destination failed (${cause.message})` };
      this.to('failed', { cause: toWire(cause), lost: true, undoErrors });
      this.deps.progress({ migrationId: this.id, phase: 'rollback', state: 'failed', message: lostErr.message });
      const r = this.report('lost', t0, null, lostErr, undoErrors.map((x) => `cleanup pending: ${x}`));
      this.deps.onFinished?.(r);
      return r;
    }
    if (sourceBack) {
      this.to('rolled-back', { cause: toWire(cause), undoErrors });
      this.deps.progress({ migrationId: this.id, phase: 'rollback', state: 'done' });
      const r = this.report('rolled_back', t0, null, toWire(cause), undoErrors.map((x) => `cleanup pending: ${x}`));
      this.deps.onFinished?.(r);
      return r;
    }
    // Left in 'rolling-back' (not terminal) so that recovery picks it up when the hosts are reachable.
    this.deps.journal.append({ ts: new Date().toISOString(), migrationId: this.id, phase: 'rolling-back', container: this.req.container, source: this.source.name, destination: this.req.to, data: { undoErrors } });
    this.deps.progress({ migrationId: this.id, phase: 'rollback', state: 'failed', message: undoErrors.join('; ') });
    const r = this.report('failed', t0, null, { code: cause.code, message: `${cause.message}; rollback incomplete: ${undoErrors.join('; ')}` });
    this.deps.onFinished?.(r);
    return r;
  }

  /** After the commit point nothing may fail the migration; leftovers are reported and retried on recovery. */
  /**
   * After the commit point nothing may fail the migration; leftovers are reported and retried on recovery.
   * Post-copy is the exception: the destination still fetches pages from the source until its fill ends, so
   * the destination finishes first, and a fill that fails means the workload is lost (the destination killed
   * its copy rather than run on zero pages).
   */
  private async cleanup(): Promise<{ errors: string[]; lost: string | null }> {
    const errors: string[] = [];
    let lost: string | null = null;
    const source = ['remove source copy', () => this.source.call(AgentApi.CommitSource, { migrationId: this.id }, { timeoutMs: 60_000 })] as const;
    // The destination answers once the lazy fill has brought every page; until then the container stays
    // claimed, so nobody can move it again while part of its memory is still in flight.
    const dest = ['clean destination', async () => {
      const r = await this.dest.call(AgentApi.FinishTarget, { migrationId: this.id }, { timeoutMs: LAZY_FILL_TIMEOUT_MS + 30_000 });
      if (r.lazyFillMs !== undefined) this.phases['cleanup.lazyFill'] = r.lazyFillMs;
      // Post-copy's pages crossed after the freeze: still bytes moved.
      if (r.fetchedBytes !== undefined) this.bytes += r.fetchedBytes;
    }] as const;
    for (const [what, fn] of this.mode === 'postcopy' ? [dest, source] : [source, dest]) {
      try {
        await fn();
      } catch (e) {
        const m = asFerryError(e).message;
        if (this.mode === 'postcopy' && what === 'clean destination') lost = `its memory did not arrive in full (${m})`;
        else errors.push(`${what}: ${m}`);
        this.deps.log.error({ migrationId: this.id, err: (e as Error).message }, `${what} failed after commit`);
      }
    }
    return { errors, lost };
  }

  /** An agent's own breakdown of a phase, kept in the report as "phase.part". */
  private agentTimings(phase: string, t: Record<string, number>): void {
    for (const [k, v] of Object.entries(t)) if (k !== phase) this.phases[`${phase}.${k}`] = v;
  }

  private to(next: Phase, data?: Record<string, unknown>): void {
    this.phase = next === this.phase ? next : transition(this.phase, next);
    // Nothing exists to recover before the first host is touched: preflight and dry runs stay out of the journal.
    if (next === 'preparing') this.journaled = true;
    if (!this.journaled) return;
    this.deps.journal.append({
      ts: new Date().toISOString(), migrationId: this.id, phase: next, container: this.req.container,
      source: this.source?.name ?? this.req.from ?? '', destination: this.req.to, ...(data ? { data } : {}),
    });
    this.deps.log.info({ migrationId: this.id, phase: next }, 'migration phase');
  }

  private report(result: MigrationReport['result'], t0: number, downtime: number | null, error: WireError | null, checks?: string[]): MigrationReport {
    return {
      migrationId: this.id,
      container: this.located?.name ?? this.req.container,
      source: this.source?.name ?? this.req.from ?? '',
      destination: this.req.to,
      strategy: this.mode,
      result,
      downtimeMs: downtime,
      totalMs: ms(t0),
      bytesTotal: this.bytes,
      phases: this.phases,
      error: error ? { code: error.code, message: error.message } : null,
      ...(checks ? { checks } : {}),
      ...(this.mode === 'precopy' && this.rounds.length ? { rounds: this.rounds } : {}),
      ...(this.convergence ? { convergence: this.convergence } : {}),
      ...(this.modeChoice ? { modeChoice: this.modeChoice } : {}),
    };
  }
}
