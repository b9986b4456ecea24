// The proxy's decisions: which Task calls it holds, refuses or rewrites, and which responses it reports to the hooks.

import type { Logger } from '../src/log/logger.js';
import { deadline } from '../src/util/abort.js';
import { isOptedIn, readShimContainer, DEFAULT_GRACE_PERIOD_S, type ShimContainer } from './container.js';
import type { Claim, DeleteDecision, RestoreResult, ShimHooks } from './hooks.js';
import { rewriteRuntimeOptions, type RuncOverrides } from './proto/runc-options.js';
import { CreateTaskRequest, DeleteRequest, KillRequest, StartRequest, StartResponse, TASK_SERVICE, type CreateTaskRequestValue } from './proto/task.js';
import { GrpcCode } from './ttrpc/errors.js';
import { FrameType, type Frame } from './ttrpc/frame.js';
import { Request, Response } from './ttrpc/messages.js';
import type { RoutedRequest, Verdict } from './ttrpc/stream-router.js';

const FORWARD: Verdict = { action: 'forward' };

/** Seconds taken off the termination grace period, so the Kill still reaches runc-v2 before kubelet's SIGKILL deadline. */
export const DELETE_MARGIN_MS = 2_000;
/** Lower bound on how long `onDelete` may run, however short the grace period. */
export const DELETE_MIN_MS = 1_000;
/** Bound on `claim` (a Create waits for it): under kubelet's 2-minute CRI request timeout, above the hooks' own 90 s wait. */
export const CLAIM_TIMEOUT_MS = 100_000;

/** How long `onDelete` may hold a container's deletion: its grace period (default 30 s) minus {@link DELETE_MARGIN_MS}. */
export function deleteBoundMs(c: ShimContainer): number {
  const grace = (c.terminationGracePeriodS ?? DEFAULT_GRACE_PERIOD_S) * 1000;
  return Math.max(DELETE_MIN_MS, grace - DELETE_MARGIN_MS);
}

/** Construction options of a {@link TaskInterceptor}. */
export interface InterceptorOptions {
  readonly hooks: ShimHooks;
  readonly log: Logger;
  /** containerd namespace of this shim (from its argv). */
  readonly namespace: string;
  /** What the config says runc-v2 should run (`runcBinary`, `runcRoot`). */
  readonly overrides: RuncOverrides;
  /** Aborts when the proxy daemon stops; `onDelete` is tied to it, not to one connection. */
  readonly signal: AbortSignal;
  /** Reads `<bundle>/config.json`; injectable for tests. Default {@link readShimContainer}. */
  readonly readContainer?: typeof readShimContainer;
  /** Bound on `onDelete` per container. Default {@link deleteBoundMs}. */
  readonly deleteBoundMs?: (c: ShimContainer) => number;
  /** Bound on `claim`. Default {@link CLAIM_TIMEOUT_MS}. */
  readonly claimTimeoutMs?: number;
  /** Observes each Kill/Delete that waits for an `onDelete` (tests use it to know a call is held). */
  readonly onHeld?: (e: { readonly id: string; readonly method: 'Kill' | 'Delete'; readonly first: boolean }) => void;
}

// A container's deletion: none asked yet (or the last attempt refused), one attempt running, or let go.
type Gate = { readonly state: 'attempt'; readonly decision: Promise<DeleteDecision> } | { readonly state: 'released' };

interface PendingRestore {
  readonly claim: Claim;
  readonly container: ShimContainer;
}

/** Resolves with `p`, or rejects with the signal's reason once it aborts, whether or not `p` listens to it. */
function bounded<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * State shared by every containerd connection of one proxy daemon: the containers it has seen created,
 * their deletion gates and the claimed containers awaiting Start. It outlives connections, so a
 * containerd restart neither forgets a container nor cancels a migration in progress.
 */
export class TaskInterceptor {
  /** Containers by id, from their Create. */
  readonly containers = new Map<string, ShimContainer>();
  private readonly gates = new Map<string, Gate>();
  private readonly pendingRestores = new Map<string, PendingRestore>();
  private readonly opts: InterceptorOptions;
  private readonly log: Logger;

  constructor(opts: InterceptorOptions) {
    this.opts = opts;
    this.log = opts.log;
  }

  /** Per-connection view: stream ids are per connection, so responses are matched there. */
  session(): InterceptSession {
    return new InterceptSession(this);
  }

  /** Decides one request of `session`'s connection. */
  decide(session: InterceptSession, req: RoutedRequest, signal: AbortSignal): Verdict | Promise<Verdict> {
    const { service, method, payload } = req.request;
    if (service !== TASK_SERVICE) return FORWARD;
    switch (method) {
      case 'Create':
        return this.create(session, req, CreateTaskRequest.decode(payload), signal);
      case 'Kill': {
        const k = KillRequest.decode(payload);
        this.log.info({ stream: req.streamId, id: k.id, execId: k.execId, signal: k.signal, all: k.all }, 'Task/Kill');
        if (k.signal === 0 || k.execId !== '') return FORWARD;
        return this.deletion(k.id, 'Kill');
      }
      case 'Delete': {
        const d = DeleteRequest.decode(payload);
        this.log.info({ stream: req.streamId, id: d.id, execId: d.execId }, 'Task/Delete');
        if (d.execId !== '') return FORWARD;
        return this.deletion(d.id, 'Delete');
      }
      case 'Start': {
        const s = StartRequest.decode(payload);
        this.log.info({ stream: req.streamId, id: s.id, execId: s.execId }, 'Task/Start');
        const pending = s.execId === '' ? this.pendingRestores.get(s.id) : undefined;
        if (pending !== undefined) session.expectResponse(req.streamId, { kind: 'start', ...pending });
        return FORWARD;
      }
      default:
        this.log[method === 'Shutdown' ? 'info' : 'debug']({ stream: req.streamId, method }, `Task/${method}`);
        return FORWARD;
    }
  }

  // Create: learn the container, rewrite runtime options for runc-v2, and ask the hooks for a staged migration.
  private async create(session: InterceptSession, req: RoutedRequest, create: CreateTaskRequestValue, signal: AbortSignal): Promise<Verdict> {
    const read = this.opts.readContainer ?? readShimContainer;
    const { container: c, specError } = await read(create, this.opts.namespace);
    this.containers.set(c.id, c);
    this.gates.delete(c.id);
    this.pendingRestores.delete(c.id);
    this.log.info(
      {
        stream: req.streamId, id: c.id, bundle: c.bundle, kind: c.kind, sandboxId: c.sandboxId, migrate: c.migrate, upperDir: c.upperDir,
        optionsType: create.options?.typeUrl ?? null, checkpoint: create.checkpoint || null, rootfs: create.rootfs.map((m) => m.type),
        ...(specError === null ? {} : { specError }), ...(c.invalid.length === 0 ? {} : { invalidAnnotations: c.invalid }),
      },
      'Task/Create',
    );
    const next: CreateTaskRequestValue = { ...create };
    let changed = false;
    const options = rewriteRuntimeOptions(create.options, this.opts.overrides);
    if (options !== undefined) {
      next.options = options;
      changed = true;
    }
    if (isOptedIn(c) && create.checkpoint === '') {
      const claim = await this.claim(c, signal);
      if (claim !== null) {
        next.checkpoint = claim.imagesDir;
        changed = true;
        this.pendingRestores.set(c.id, { claim, container: c });
        session.expectResponse(req.streamId, { kind: 'create', claim, container: c });
        this.log.info({ id: c.id, migrationId: claim.migrationId, imagesDir: claim.imagesDir }, 'claimed: Create restores from a checkpoint');
      }
    }
    if (!changed) return FORWARD;
    return { action: 'rewrite', request: Request.encode({ ...req.request, payload: CreateTaskRequest.encode(next) }) };
  }

  private async claim(c: ShimContainer, signal: AbortSignal): Promise<Claim | null> {
    const s = deadline(this.opts.claimTimeoutMs ?? CLAIM_TIMEOUT_MS, signal, this.opts.signal);
    try {
      return await bounded(this.opts.hooks.claim(c, s), s);
    } catch (e: unknown) {
      this.log.error({ id: c.id, err: errText(e) }, 'claim hook failed: the container starts fresh');
      return null;
    }
  }

  // Kill/Delete of a container's init process: held while `onDelete` runs, then forwarded or refused.
  private deletion(id: string, method: 'Kill' | 'Delete'): Verdict | Promise<Verdict> {
    const c = this.containers.get(id);
    if (c === undefined || !isOptedIn(c)) return FORWARD;
    const gate = this.gates.get(id);
    if (gate?.state === 'released') return FORWARD;
    if (gate?.state === 'attempt') {
      this.opts.onHeld?.({ id, method, first: false });
      return gate.decision.then(toVerdict);
    }
    // Only a Kill starts an attempt; a Delete with none running goes through (runc-v2 refuses to delete a running task).
    if (method === 'Delete') return FORWARD;
    const decision = this.runOnDelete(c);
    this.gates.set(id, { state: 'attempt', decision });
    this.opts.onHeld?.({ id, method, first: true });
    void decision.then((d) => {
      if (this.gates.get(id)?.state !== 'attempt') return;
      // A refusal ends this attempt; the next Kill starts another one.
      if (d.action === 'forward') this.gates.set(id, { state: 'released' });
      else this.gates.delete(id);
    });
    return decision.then(toVerdict);
  }

  // Never rejects: a failing or overdue hook lets the deletion proceed.
  private async runOnDelete(c: ShimContainer): Promise<DeleteDecision> {
    const ms = (this.opts.deleteBoundMs ?? deleteBoundMs)(c);
    const s = deadline(ms, this.opts.signal);
    const t0 = performance.now();
    this.log.info({ id: c.id, boundMs: ms }, 'onDelete: migrating before the deletion');
    try {
      const d = await bounded(this.opts.hooks.onDelete(c, s), s);
      this.log.info({ id: c.id, action: d.action, ms: Math.round(performance.now() - t0), ...(d.action === 'refuse' ? { message: d.message } : {}) }, 'onDelete decided');
      return d;
    } catch (e: unknown) {
      this.log.error({ id: c.id, err: errText(e), ms: Math.round(performance.now() - t0) }, 'onDelete hook failed: the deletion proceeds');
      return { action: 'forward' };
    }
  }

  /** Reports a claimed container's outcome to the hooks; never throws, never delays the response. */
  report(pending: PendingRestore, result: RestoreResult): void {
    const { claim, container } = pending;
    if (this.pendingRestores.get(container.id)?.claim === claim) this.pendingRestores.delete(container.id);
    this.log.info({ id: container.id, migrationId: claim.migrationId, ...result }, 'restored');
    this.opts.hooks.restored(claim.migrationId, container, result).catch((e: unknown) => {
      this.log.error({ id: container.id, migrationId: claim.migrationId, err: errText(e) }, 'restored hook failed');
    });
  }
}

const toVerdict = (d: DeleteDecision): Verdict =>
  d.action === 'forward' ? FORWARD : { action: 'reject', code: GrpcCode.FAILED_PRECONDITION, message: d.message };

type Expected = ({ readonly kind: 'create' } | { readonly kind: 'start' }) & PendingRestore;

/** One containerd connection's view of the interceptor: matches upstream responses to the requests that asked for them. */
export class InterceptSession {
  private readonly expected = new Map<number, Expected>();
  constructor(private readonly owner: TaskInterceptor) {}

  /** The router's policy for this connection. */
  readonly policy = (req: RoutedRequest, signal: AbortSignal): Verdict | Promise<Verdict> => this.owner.decide(this, req, signal);

  /** Remembers that the response on `streamId` matters to a claimed container. */
  expectResponse(streamId: number, e: Expected): void {
    this.expected.set(streamId, e);
  }

  /** Sees every upstream frame before it goes to containerd. Never throws. */
  fromUpstream(frame: Frame): void {
    if (frame.type !== FrameType.RESPONSE) return;
    const e = this.expected.get(frame.streamId);
    if (e === undefined) return;
    this.expected.delete(frame.streamId);
    let result: RestoreResult | null;
    try {
      const r = Response.decode(frame.payload);
      const code = r.status?.code ?? 0;
      if (code !== 0) result = { error: `${e.kind === 'create' ? 'Create' : 'Start'} failed (code ${code}): ${r.status?.message ?? ''}` };
      else result = e.kind === 'start' ? { pid: StartResponse.decode(r.payload).pid } : null; // a good Create: wait for Start
    } catch (err: unknown) {
      result = { error: `undecodable ${e.kind} response: ${errText(err)}` };
    }
    if (result !== null) this.owner.report(e, result);
  }

  /** The connection ended: a Start still unanswered is reported as lost (its outcome is unknown here). */
  close(): void {
    for (const e of this.expected.values()) if (e.kind === 'start') this.owner.report(e, { error: 'connection to containerd closed before the Start response' });
    this.expected.clear();
  }
}
