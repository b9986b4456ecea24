// The agent's request handlers: one host's side of every migration step, each idempotent.

import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { processAlive, waitFilesClosed } from '../src/util/process.js';
import { isAbsolute, join, normalize } from 'node:path';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Counter, Histogram, Registry } from 'prom-client';
import client from 'prom-client';
import {
  AgentApi, FerryError, LAZY_FILL_TIMEOUT_MS, Progress, podKey, type Capabilities, type ManifestEntry, type ParamsOf, type ResultOf, type PeerRole, type PodIdentity,
} from '../src/protocol/index.js';
import type { CallContext, HandlerEntry } from '../src/rpc/connection.js';
import { dial } from '../src/rpc/handshake.js';
import type { Logger } from '../src/log/logger.js';
import type { AgentConfig } from './config.js';
import { DockerRuntime } from './runtime/docker-runtime.js';
import { CriRuntime, shmDirOf, type CriContainer } from './runtime/cri-runtime.js';
import { run } from '../src/util/exec.js';
import { deadline } from '../src/util/abort.js';
import { RuncCheckpointer, freeze, freezerStateFile } from './runtime/runc-checkpointer.js';
import { LazyDump, dropNetworkLock } from './lazy/lazy-dump.js';
import { tcpTuplesOf, type TcpTuple } from './lazy/tcp-tuples.js';
import { LazyPageServer, type PageSource } from './lazy/page-server.js';
import type { FrozenPages } from './precopy/source.js';
import { sampleDirtyRate } from './precopy/sample.js';
import { DeltaStoreSource, hasLazyDelta, lazyDeltaName, splitByRead, writeDelta } from './lazy/sources.js';
import { PageSet } from '../src/criu/page-set.js';
import { PE_LAZY, PE_PRESENT, pagemapPid, parsePagemap } from '../src/criu/pagemap.js';
import { LocalStates, type SourceState, type TargetState } from './local-state.js';
import { EntryReceiver, sendEntries } from './transfer.js';
import { PrecopySource } from './precopy/source.js';
import { PageStore } from './precopy/page-store.js';
import { writeDeltas, rebuildPages, DELTA_SUFFIX } from './precopy/delta.js';
import { CpuThrottle, cgroupProcs } from './runtime/cgroup.js';
import { decodePageRecord } from '../src/protocol/pages.js';
import type { Connection } from '../src/rpc/connection.js';

type A = typeof AgentApi;
type P<K extends keyof A> = ParamsOf<A[K]>;
type R<K extends keyof A> = Promise<ResultOf<A[K]>>;

/** Label on everything an agent creates, so a reaper can find leftovers of a crashed migration. */
export const MIGRATION_LABEL = 'dev.ferry.migration-id';
const CHECKPOINT_NAME = 'ferry';
/** ferry-lazyd's background requests (see servePagesFrom): to this host's own page store, and to the source. */
const LOCAL_FILL = { depth: 2, batchKiB: 256 };
const REMOTE_FILL = { depth: 6, batchKiB: 1024 };
/** How long a killed, thawed task may take to close its files (it unmaps its memory first) before the release counts as failed. */
const RELEASE_TIMEOUT_MS = 30_000;

const since = (t0: number): number => Math.round((performance.now() - t0) * 10) / 10;

export class Agent {
  readonly states: LocalStates;
  private readonly checkpointer: RuncCheckpointer;
  private readonly metrics: { bytes: Counter; dump: Histogram; restore: Histogram };
  private dataRootCache: string | null = null;
  /** Source side of running pre-copies: the tracker lives in this process, so it dies with it (and releases). */
  private readonly precopies = new Map<string, { src: PrecopySource; pid: number; throttle: CpuThrottle | null }>();
  /** Destination side: the page store and the connection rounds are pulled over. */
  private readonly stores = new Map<string, { store: PageStore; conn: Connection | null }>();
  /**
   * Source side of a lazy final phase: a copy of every page pre-copy sent. With the final delta it is the
   * task's whole memory, from which a rollback restores after CRIU has let the task go.
   */
  private readonly mirrors = new Map<string, PageStore>();
  /** Destination side: the page server the restored task's lazy-pages daemon reads from. */
  private readonly pageServers = new Map<string, LazyPageServer>();
  /** Pod migrations staged here: woken when their state has arrived, and when the replacement's restore came back. */
  private readonly pulledWaiters = new Map<string, Set<() => void>>();
  /** Source side of a pure post-copy: CRIU's lazy session, the only place the dumped pages still are. */
  private readonly postcopies = new Map<string, LazyDump>();
  /**
   * Source side of a lazy dump whose tasks were killed: `free` when they closed their files and their
   * connections were destroyed (their addresses free for the destination's restore: TransferPull answers only then), `exited`
   * when CRIU and runc are done too (CommitSource and RollbackSource wait for that; null while a post-copy's
   * session still serves). Both resolve to milliseconds since the kill.
   */
  private readonly releases = new Map<string, { free: Promise<number>; exited: Promise<number> | null }>();
  /** Destination side: the authenticated connection pages are fetched over from the source. */
  private readonly remotes = new Map<string, { conn: Connection; token: string }>();
  /** Pod migrations whose replacement has come to claim them, and who waits for that. */
  private readonly claimsArrived = new Set<string>();
  private readonly claimWaiters = new Map<string, Set<() => void>>();
  private readonly restoreWaiters = new Map<string, (r: { pid: number; containerId: string } | { error: string }) => void>();
  /** The host's containerd (CRI): pod containers, which move when their pod is deleted (shim/). */
  readonly cri: CriRuntime;

  constructor(
    readonly cfg: AgentConfig,
    readonly docker: DockerRuntime,
    readonly caps: Capabilities,
    private readonly log: Logger,
    registry: Registry,
  ) {
    this.states = new LocalStates(cfg.dataDir);
    const criRoot = cfg.criRoot ?? join('/run/ferry', cfg.host, 'cri');
    this.cri = new CriRuntime({ stateDir: join(criRoot, 'state'), runcRoot: join(criRoot, 'runc') });
    this.checkpointer = new RuncCheckpointer({ runc: cfg.runc, criu: cfg.criu, criuConfigFile: cfg.criuConfigFile });
    this.metrics = {
      bytes: new client.Counter({ name: 'ferry_agent_transfer_bytes_total', help: 'Checkpoint bytes sent or received', labelNames: ['direction'], registers: [registry] }),
      dump: new client.Histogram({ name: 'ferry_agent_checkpoint_seconds', help: 'CRIU dump duration', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers: [registry] }),
      restore: new client.Histogram({ name: 'ferry_agent_restore_seconds', help: 'Restore duration (docker start --checkpoint)', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers: [registry] }),
    };
  }

  /** The handler table; the roles say who may call what. transfer/* is for the peer agent only. */
  handlers(): HandlerEntry[] {
    const ctl: readonly PeerRole[] = ['controller'];
    const h = <K extends keyof A>(k: K, fn: (p: P<K>, ctx: CallContext) => R<K>, roles: readonly PeerRole[] = ctl): HandlerEntry =>
      ({ method: AgentApi[k], handler: fn as (p: unknown, ctx: CallContext) => Promise<unknown>, roles });
    return [
      h('AgentInfo', async () => ({ host: this.cfg.host, caps: this.caps }), ['controller', 'cli']),
      h('ListContainers', async (p) => [...await this.docker.list(p.all, this.cfg.host), ...await this.cri.list(p.all, this.cfg.host)], ['controller', 'cli']),
      h('InspectForMigration', (p, c) => this.inspectForMigration(p, c)),
      h('PrepareTarget', (p, c) => this.prepareTarget(p, c)),
      h('SampleDirtyRate', (p, c) => this.sampleDirtyRate(p, c)),
      h('PrecopyStart', (p, c) => this.precopyStart(p, c)),
      h('PrecopyRound', (p, c) => this.precopyRound(p, c)),
      h('Checkpoint', (p, c) => this.checkpoint(p, c)),
      h('Pull', (p, c) => this.pull(p, c)),
      h('Restore', (p, c) => this.restore(p, c)),
      h('CommitSource', (p) => this.commitSource(p)),
      h('FinishTarget', (p) => this.finishTarget(p)),
      h('AbortTarget', (p) => this.abortTarget(p)),
      h('RollbackSource', (p) => this.rollbackSource(p)),
      h('TransferPull', (p, c) => this.transferPull(p, c), ['agent']),
      h('TransferPrecopy', (p, c) => this.transferPrecopy(p, c), ['agent']),
      h('TransferPages', (p, c) => this.transferPages(p, c), ['agent']),
      h('ShimClaim', (p, c) => this.shimClaim(p, c), ['shim']),
      h('AwaitReplacement', (p, c) => this.awaitClaim(p, c)),
      h('ShimRestored', (p, c) => this.shimRestored(p, c), ['shim']),
    ];
  }

  private async dataRoot(): Promise<string> {
    return (this.dataRootCache ??= await this.docker.dataRoot());
  }

  /**
   * runc's state dir for a container. dockerd 20.10 names it after the runtime, except that containers of
   * an --add-runtime runtime using the runc v2 shim land in runtime-runc: look where the state really is.
   */
  private async runcRoot(runtime: string, id: string): Promise<string> {
    if (runtime === CRI_RUNTIME) return this.cri.runcRoot();
    for (const name of new Set([runtime, 'runc'])) {
      const root = join(this.cfg.execRoot, `runtime-${name}`, 'moby');
      if (await stat(join(root, id, 'state.json')).then(() => true, () => false)) return root;
    }
    throw new FerryError('E_PRECONDITION', `no runc state for ${id.slice(0, 12)} under ${this.cfg.execRoot}`);
  }

  private async inspectForMigration(p: P<'InspectForMigration'>, c: CallContext): R<'InspectForMigration'> {
    let d;
    try {
      d = await this.docker.describe(p.ref, c.signal);
    } catch (e) {
      // Not a Docker container: perhaps a pod's, under this host's containerd.
      const pc = e instanceof FerryError && e.code === 'E_NOT_FOUND' ? await this.cri.find(p.ref) : null;
      if (!pc) throw e;
      await this.assertSettled(pc.id);
      return { id: pc.id, running: pc.running, spec: null, pod: pc.pod, name: podKey(pc.pod), rssBytes: pc.rssBytes, rejectReasons: pc.rejectReasons };
    }
    await this.assertSettled(d.id);
    const reasons = [...d.rejectReasons];
    if (d.runtime !== this.cfg.runtimeName && d.runtime !== 'runc') reasons.push(`runtime ${d.runtime} is not supported`);
    if (!d.upperDir) reasons.push('storage driver has no overlay upperdir');
    return { id: d.id, running: d.running, spec: d.spec, pod: null, name: d.spec.name, rssBytes: d.rssBytes, rejectReasons: reasons };
  }

  /**
   * A container restored here is not ours to move again until its migration finished on this side: while
   * the lazy-pages daemon still fills its memory, the pages not yet filled are absent from the task, so a
   * dump would record them as holes and the next destination would run them as zeros (found as 57 435 bad
   * pages after back-to-back migrations of a heavy writer).
   */
  private async assertSettled(containerId: string): Promise<void> {
    const st = (await this.targets()).find((t) => t.containerId === containerId && t.restored);
    if (st) throw new FerryError('E_CONFLICT', `container ${containerId.slice(0, 12)} is still receiving its memory from migration ${st.migrationId} on ${this.cfg.host}; migrate it again once that migration finished`);
  }

  /** Every destination-side migration this agent holds (an unreadable state counts as none). */
  private async targets(): Promise<TargetState[]> {
    const out: TargetState[] = [];
    for (const mid of await this.states.list()) {
      const st = await this.states.load(mid).catch(() => null);
      if (st?.role === 'target') out.push(st);
    }
    return out;
  }

  // ---- destination -------------------------------------------------------------------------------

  private async prepareTarget(p: P<'PrepareTarget'>, c: CallContext): R<'PrepareTarget'> {
    const prior = await this.states.load(p.migrationId);
    if (prior?.role === 'target') return { containerId: prior.containerId };
    if (p.pod) return this.stagePod(p.migrationId, p.pod);
    const spec = p.spec;
    if (!spec) throw new FerryError('E_INVALID_ARGUMENT', 'PrepareTarget needs a container spec or a pod');
    if (!(await this.docker.hasImage(spec.imageId)))
      throw new FerryError('E_PRECONDITION', `image ${spec.imageRef} (${spec.imageId.slice(7, 19)}) is not on ${this.cfg.host}`);
    await this.states.create(p.migrationId);
    const labels = { [MIGRATION_LABEL]: p.migrationId };
    const createdVolumes: string[] = [];
    try {
      for (const v of spec.volumes) {
        const r = await this.docker.ensureVolume(v.name, labels);
        if (r.created) createdVolumes.push(v.name);
        else if ((await readdir(r.mountpoint)).length > 0)
          throw new FerryError('E_PRECONDITION', `volume ${v.name} already exists on ${this.cfg.host} and is not empty`);
      }
      const { id, upperDir } = await this.docker.create(spec, labels, c.signal);
      await this.states.save({
        role: 'target', migrationId: p.migrationId, containerId: id, upperDir, createdVolumes,
        volumes: spec.volumes.map((v) => v.name), pulled: false, restored: false, pod: null,
      });
      return { containerId: id };
    } catch (e) {
      for (const v of createdVolumes) await this.docker.removeVolumeIfUnused(v).catch(() => false);
      await this.states.remove(p.migrationId);
      throw e;
    }
  }

  private async pull(p: P<'Pull'>, c: CallContext): R<'Pull'> {
    const st = await this.target(p.migrationId);
    const t0 = performance.now();
    const imagesDir = this.states.imagesDir(p.migrationId);
    // A retried pull starts from scratch: partial files of an earlier attempt are not trusted.
    await rm(imagesDir, { recursive: true, force: true });
    await mkdir(imagesDir, { recursive: true, mode: 0o700 });
    const crashAfter = this.faultArg('crash-during-pull');
    const total = p.manifest.entries.reduce((n, e) => n + (e.kind === 'image-file' ? e.size : 0), 0);
    let lastReport = 0;
    const receiver = new EntryReceiver(p.manifest.entries, {
      imagesDir,
      upperDir: st.upperDir,
      volumeDir: async (name) => (st.pod && name === POD_SHM_VOLUME ? join(this.states.dir(p.migrationId), 'shm') : this.docker.volumeMountpoint(name)),
    }, c.signal, (n) => {
      this.metrics.bytes.inc({ direction: 'in' }, n);
      const now = performance.now();
      if (now - lastReport > 100) {
        lastReport = now;
        c.conn.notify(Progress, { migrationId: p.migrationId, phase: 'transfer', state: 'progress', bytes: receiver.bytes, totalBytes: total });
      }
      if (crashAfter !== null && receiver.bytes >= crashAfter) {
        this.log.warn({ fault: 'crash-during-pull' }, 'fault injection: exiting mid-transfer');
        process.exit(137);
      }
    });
    // Pre-copy's rounds left an authenticated connection to the same source open: inside the freeze, a new
    // dial and handshake (~15 ms here) is worth saving. It stays with the page store and closes with it.
    const open = this.stores.get(p.migrationId)?.conn;
    const reuse = open && !open.closed && open.peerName === p.source.host ? open : null;
    const conn = reuse ?? (await dial({ url: p.source.url, name: this.cfg.host, role: 'agent', serverRole: 'agent', secret: this.cfg.secret, log: this.log, signal: c.signal })).conn;
    const dialMs = since(t0);
    const source: Record<string, number> = {};
    try {
      if (conn.peerName !== p.source.host) throw new FerryError('E_UNAUTHENTICATED', `${p.source.url} is ${conn.peerName}, not ${p.source.host}`);
      const sent = await conn.request(AgentApi.TransferPull, { migrationId: p.migrationId, token: p.token }, { signal: c.signal, onChunk: (ch) => receiver.accept(ch) });
      receiver.verify(sent.entries);
      if (sent.releaseMs !== undefined) source.sourceRelease = sent.releaseMs;
      if (sent.releaseWaitMs !== undefined) source.sourceReleaseWait = sent.releaseWaitMs;
    } finally {
      await receiver.dispose();
      if (p.manifest.entries.some((e) => e.kind === 'image-file' && e.name === POSTCOPY_MARK)) this.remotes.set(p.migrationId, { conn, token: p.token });
      else if (!reuse) conn.close();
    }
    const timings: Record<string, number> = { dial: dialMs, stream: since(t0) - dialMs, ...receiver.kindMs, ...source };
    if (p.manifest.entries.some((e) => e.kind === 'image-file' && e.name.endsWith(DELTA_SUFFIX))) {
      // Pre-copy: the pages files are rebuilt from what the rounds brought plus the final delta.
      const pre = this.stores.get(p.migrationId);
      if (!pre) throw new FerryError('E_PRECONDITION', `no pre-copy page store for ${p.migrationId} on ${this.cfg.host} (agent restarted?)`);
      const tr = performance.now();
      await rebuildPages(imagesDir, pre.store, c.signal);
      timings.rebuild = since(tr);
    }
    await this.states.save({ ...st, pulled: true });
    for (const wake of this.pulledWaiters.get(p.migrationId) ?? []) wake();
    return { bytes: receiver.bytes, timings };
  }

  private async restore(p: P<'Restore'>, c: CallContext): R<'Restore'> {
    const st = await this.target(p.migrationId);
    if (!st.pulled) throw new FerryError('E_PRECONDITION', `migration ${p.migrationId} has not been pulled`);
    if (st.pod) return this.awaitReplacement(p.migrationId, c.signal);
    const t0 = performance.now();
    if (st.restored) {
      const i = await this.docker.inspect(st.containerId);
      if (i.State.Running) return { containerId: st.containerId, pid: i.State.Pid, timings: {} };
    }
    const imagesDir = this.states.imagesDir(p.migrationId);
    if (this.cfg.faults.includes('hang-before-restore')) {
      // Test-only: hold here until the caller gives up, so a test can kill the controller mid-migration.
      this.log.warn({ fault: 'hang-before-restore' }, 'fault injection: holding the restore');
      await new Promise<void>((resolve) => c.signal.addEventListener('abort', () => resolve(), { once: true }));
      throw new FerryError('E_FAULT_INJECTED', 'restore held by fault injection');
    }
    if (this.cfg.faults.includes('restore-fail')) {
      // A real CRIU failure, not a simulated one: an inventory CRIU cannot parse.
      await writeFile(join(imagesDir, 'inventory.img'), 'corrupted by fault injection');
    }
    const timings: Record<string, number> = {};
    const remote = this.remotes.get(p.migrationId);
    if (remote && !remote.conn.closed) {
      // Pure post-copy: every page is still on the source, in CRIU's lazy session; faults and the daemon's
      // background requests are fetched from there over the agents' connection.
      const tl = performance.now();
      this.pageServers.get(p.migrationId)?.close();
      this.pageServers.set(p.migrationId, await this.servePagesFrom(p.migrationId, st.containerId, imagesDir, this.remoteSource(p.migrationId, remote.conn, remote.token), REMOTE_FILL));
      timings.pageServer = since(tl);
    } else if (await hasLazyDelta(imagesDir)) {
      // A lazy final phase: no pages file holds the memory; this agent serves it (store + delta).
      const tl = performance.now();
      this.pageServers.get(p.migrationId)?.close();
      this.pageServers.set(p.migrationId, await this.servePages(p.migrationId, st.containerId, imagesDir, this.stores.get(p.migrationId)?.store ?? null));
      timings.pageServer = since(tl);
    } else if (this.cfg.lazyRestore) await writeFile(join(imagesDir, 'ferry-lazy'), '');
    const tStart = performance.now();
    await this.startFromImages(st.containerId, imagesDir);
    const startMs = since(tStart);
    const i = await this.docker.inspect(st.containerId);
    if (!i.State.Running) throw new FerryError('E_CRIU_RESTORE', `restored container ${st.containerId.slice(0, 12)} is ${i.State.Status}`);
    await this.states.save({ ...st, restored: true });
    this.metrics.restore.observe(since(t0) / 1000);
    return { containerId: st.containerId, pid: i.State.Pid, timings: { ...timings, dockerStart: startMs, total: since(t0) } };
  }

  /**
   * Serves a lazy image's memory (its delta, then `store`) to the lazy-pages daemon the next restore from
   * imagesDir starts; ferry-runc reads the port from `ferry-lazy`.
   */
  private async servePages(mid: string, containerId: string, imagesDir: string, store: PageStore | null): Promise<LazyPageServer> {
    return this.servePagesFrom(mid, containerId, imagesDir, await DeltaStoreSource.load(imagesDir, store), LOCAL_FILL);
  }

  /**
   * `fill`: how the lazy-pages daemon asks for the rest between faults. Answers come strictly in order, so
   * a fault waits behind every background request in flight: from this host's page store few small ones
   * keep faults quick (1 GiB under a 10 MB/s writer: 2 × 256 KiB cut the restored task's pauses after the
   * freeze from 0.3–0.9 s to 0.1–0.24 s, the fill from ~0.9 s to ~1.4 s); from the source (post-copy) each
   * is a round trip, and more and larger ones keep the link busy.
   */
  private async servePagesFrom(mid: string, containerId: string, imagesDir: string, from: PageSource, fill: { depth: number; batchKiB: number }): Promise<LazyPageServer> {
    let source = from;
    if (this.faultArg('lazy-serve-hold') !== null) source = this.heldSource(source);
    const server = await LazyPageServer.listen(source, this.log);
    server.done.catch((e: unknown) => void this.killRestored(mid, containerId, e as Error));
    await writeFile(join(imagesDir, 'ferry-lazy'), `127.0.0.1 ${server.port} ${fill.depth} ${fill.batchKiB}\n`);
    return server;
  }

  /**
   * Test-only: after the first `lazy-serve-hold:N` pages (default 256: enough for CRIU to finish the restore,
   * which touches a few of them) nothing is answered until the file `lazy-serve-release` appears in the data
   * dir, so a test can act while a restored task's memory is provably still in flight.
   */
  private heldSource(inner: PageSource): PageSource {
    const release = join(this.cfg.dataDir, 'lazy-serve-release');
    let budget = this.faultArg('lazy-serve-hold') || 256;
    let open: Promise<void> | null = null;
    return {
      read: async (pid, vaddr, nr) => {
        if (budget > 0) {
          budget -= nr;
          return inner.read(pid, vaddr, nr);
        }
        open ??= (async () => {
          this.log.warn({ fault: 'lazy-serve-hold' }, 'fault injection: holding lazy pages');
          while (!(await stat(release).then(() => true, () => false))) await new Promise((r) => setTimeout(r, 20));
        })();
        await open;
        return inner.read(pid, vaddr, nr);
      },
    };
  }

  /**
   * The page server cannot answer (a page it should hold is missing, or the daemon misbehaves). The task must
   * never run on zero pages: kill the daemon (a restore still in progress then fails) and the container.
   */
  private async killRestored(mid: string, containerId: string, e: Error): Promise<void> {
    this.log.error({ migrationId: mid, err: e.message }, 'lazy page serving failed; killing the restored container');
    const lazy = Number(await readFile(join(this.states.imagesDir(mid), 'lazy.pid'), 'utf8').catch(() => '0'));
    if (lazy && processAlive(lazy)) process.kill(lazy, 'SIGKILL');
    const st = await this.states.load(mid).catch(() => null);
    if (st?.pod) await this.cri.kill(this.cfg.runc, containerId).catch(() => false);
    else await this.docker.docker.getContainer(containerId).kill({ signal: 'SIGKILL' }).catch(() => undefined);
  }

  private async finishTarget(p: P<'FinishTarget'>): R<'FinishTarget'> {
    // A lazy restore still reads pages from the image files until its daemon has filled everything in.
    const waited = await this.waitLazyFill(p.migrationId, AbortSignal.timeout(LAZY_FILL_TIMEOUT_MS));
    const server = this.pageServers.get(p.migrationId);
    const fetchedBytes = server && this.remotes.has(p.migrationId) ? server.stats.pages * 4096 : undefined;
    if (server) {
      this.pageServers.delete(p.migrationId);
      // The daemon exits 0 only after CLOSE; a daemon that died early left holes, which `done` reports.
      try {
        await server.done;
      } catch (e) {
        // The restored task was killed rather than run on missing pages (killRestored): nothing of it may stay.
        const st = await this.states.load(p.migrationId).catch(() => null);
        if (st?.role === 'target' && !st.pod) await this.docker.remove(st.containerId).catch(() => false);
        this.dropRemote(p.migrationId);
        await this.dropStore(p.migrationId);
        await this.states.remove(p.migrationId);
        throw e;
      } finally {
        server.close();
      }
    }
    this.dropRemote(p.migrationId);
    await this.dropStore(p.migrationId);
    this.claimsArrived.delete(p.migrationId);
    await this.states.remove(p.migrationId);
    return { ...(waited === null ? {} : { lazyFillMs: waited }), ...(fetchedBytes === undefined ? {} : { fetchedBytes }) };
  }

  /** Waits for the lazy-pages daemon of a migration to exit; returns how long that took, null if none ran. */
  private async waitLazyFill(mid: string, signal: AbortSignal): Promise<number | null> {
    const pid = Number(await readFile(join(this.states.imagesDir(mid), 'lazy.pid'), 'utf8').catch(() => '0'));
    if (!pid) return null;
    const t0 = performance.now();
    // The daemon is not our child (the runc wrapper started it), so there is no exit event: poll its pid.
    while (processAlive(pid)) {
      if (signal.aborted) throw new FerryError('E_DEADLINE', `lazy page fill of ${mid} still running`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return since(t0);
  }

  private async abortTarget(p: P<'AbortTarget'>): R<'AbortTarget'> {
    const st = await this.states.load(p.migrationId);
    if (!st) return { removed: false };
    if (st.role !== 'target') throw new FerryError('E_PRECONDITION', `${p.migrationId} is not a target migration here`);
    if (st.pod) return this.abortStaged(st);
    const removed = await this.docker.remove(st.containerId);
    // With the restored task gone, a lazy-pages daemon has nobody left to serve.
    const lazy = Number(await readFile(join(this.states.imagesDir(p.migrationId), 'lazy.pid'), 'utf8').catch(() => '0'));
    if (lazy && processAlive(lazy)) process.kill(lazy, 'SIGKILL');
    this.pageServers.get(p.migrationId)?.close();
    this.pageServers.delete(p.migrationId);
    this.dropRemote(p.migrationId);
    for (const v of st.createdVolumes) await this.docker.removeVolumeIfUnused(v);
    await this.dropStore(p.migrationId);
    await this.states.remove(p.migrationId);
    return { removed };
  }

  // ---- pre-copy ----------------------------------------------------------------------------------

  /** Source, for `--mode auto`: count the container's writes over a short window; nothing stays attached. */
  private async sampleDirtyRate(p: P<'SampleDirtyRate'>, c: CallContext): R<'SampleDirtyRate'> {
    const d = await this.runningContainer(p.containerId, c.signal);
    if (!this.caps.uffd) throw new FerryError('E_PRECONDITION', `host ${this.cfg.host} has no userfaultfd: writes cannot be tracked`);
    await this.assertSettled(d.id);
    return sampleDirtyRate(this.cfg.dirtytrack, d.pid, p.windowMs, this.log, c.signal);
  }

  /** Source: attach the dirty tracker to every process of the container; it keeps running untouched. */
  private async precopyStart(p: P<'PrecopyStart'>, c: CallContext): R<'PrecopyStart'> {
    const t0 = performance.now();
    const prior = await this.states.load(p.migrationId);
    const running = this.precopies.get(p.migrationId);
    if (prior?.role === 'source' && running) return { processes: 0, attachMs: 0 };
    if (prior) throw new FerryError('E_PRECONDITION', `migration ${p.migrationId} already has state on ${this.cfg.host}`);
    const d = await this.runningContainer(p.containerId, c.signal);
    if (!d.upperDir) throw new FerryError('E_PRECONDITION', 'storage driver has no overlay upperdir');
    await this.assertSettled(d.id);
    await this.states.create(p.migrationId);
    await this.states.save({
      role: 'source', migrationId: p.migrationId, containerId: d.id, peer: p.peer, token: p.token,
      restartPolicy: d.restartPolicy, volumes: d.volumes, upperDir: d.upperDir,
      dumped: false, manifest: null, cpuQuotaUs: null, pod: d.pod, shmDir: d.shmDir, postcopy: false,
    });
    let src: PrecopySource;
    try {
      src = await PrecopySource.start(this.cfg.dirtytrack, d.pid, this.log.child({ migrationId: p.migrationId }));
    } catch (e) {
      await this.states.remove(p.migrationId);
      throw e;
    }
    // The mirror is what a rollback restores from after CRIU let the task go; a pod's task cannot be taken
    // back by containerd then (lost, never rolled back), so it needs none.
    if (this.cfg.lazyFinal && !d.pod) {
      src.mirror = await PageStore.open(join(this.states.dir(p.migrationId), 'mirror'));
      this.mirrors.set(p.migrationId, src.mirror);
    }
    this.precopies.set(p.migrationId, { src, pid: d.pid, throttle: null });
    return { processes: src.processes, attachMs: since(t0) };
  }

  /** Source, for the destination agent: scan, read and stream one round of dirty pages. */
  private async transferPrecopy(p: P<'TransferPrecopy'>, c: CallContext): R<'TransferPrecopy'> {
    const st = await this.states.load(p.migrationId);
    if (!st || st.role !== 'source' || st.dumped) throw new FerryError('E_NOT_FOUND', `no pre-copy ${p.migrationId} on ${this.cfg.host}`);
    if (c.conn.peerName !== st.peer || !tokensEqual(p.token, st.token)) throw new FerryError('E_FORBIDDEN', `${c.conn.peerName} may not pull ${p.migrationId}`);
    const pre = this.precopies.get(p.migrationId);
    if (!pre) throw new FerryError('E_PRECONDITION', `pre-copy tracking of ${p.migrationId} is not running on ${this.cfg.host} (agent restarted?)`);
    await this.throttle(st, pre, p.throttle);
    let n = 0;
    return pre.src.round(p.round, async (buf) => {
      await c.sendChunk(n++, 0, buf, true);
      this.metrics.bytes.inc({ direction: 'out' }, buf.length);
    }, c.signal);
  }

  /** Auto-converge: the original quota is persisted before the first change, so a crash cannot lose it. */
  private async throttle(st: SourceState, pre: { pid: number; throttle: CpuThrottle | null }, fraction: number): Promise<void> {
    if (fraction === 0 && !pre.throttle) return;
    if (!pre.throttle) {
      pre.throttle = await CpuThrottle.of(pre.pid);
      await this.states.save({ ...st, cpuQuotaUs: pre.throttle.originalQuotaUs });
    }
    await pre.throttle.set(fraction);
  }

  /** Ends tracking and gives the CPU back; safe to call on every path. */
  private async endPrecopy(mid: string): Promise<void> {
    const pre = this.precopies.get(mid);
    if (!pre) return;
    this.precopies.delete(mid);
    await pre.src.close();
    if (pre.throttle) await pre.throttle.restore().catch((e: unknown) => this.log.error({ migrationId: mid, err: (e as Error).message }, 'could not restore the CPU quota'));
  }

  /** Destination: pull one round into the page store. */
  private async precopyRound(p: P<'PrecopyRound'>, c: CallContext): R<'PrecopyRound'> {
    await this.target(p.migrationId);
    const failAt = this.faultArg('precopy-round-fail');
    if (failAt !== null && p.round >= failAt) throw new FerryError('E_FAULT_INJECTED', `pre-copy round ${p.round} failed by fault injection`);
    const t0 = performance.now();
    let t = this.stores.get(p.migrationId);
    if (!t) {
      t = { store: await PageStore.open(this.states.pagesDir(p.migrationId)), conn: null };
      this.stores.set(p.migrationId, t);
    }
    if (!t.conn || t.conn.closed) {
      const { conn } = await dial({ url: p.source.url, name: this.cfg.host, role: 'agent', serverRole: 'agent', secret: this.cfg.secret, log: this.log, signal: c.signal });
      if (conn.peerName !== p.source.host) { conn.close(); throw new FerryError('E_UNAUTHENTICATED', `${p.source.url} is ${conn.peerName}, not ${p.source.host}`); }
      t.conn = conn;
    }
    const store = t.store;
    try {
      const r = await t.conn.request(AgentApi.TransferPrecopy, { migrationId: p.migrationId, token: p.token, round: p.round, throttle: p.throttle }, {
        signal: c.signal,
        onChunk: async (ch) => {
          const rec = decodePageRecord(Buffer.from(ch.d.buffer, ch.d.byteOffset, ch.d.length));
          let off = 0;
          for (const [s, e] of rec.ranges) {
            await store.write(rec.nsPid, s, rec.data.subarray(off, off + (e - s)));
            off += e - s;
          }
          this.metrics.bytes.inc({ direction: 'in' }, ch.d.length);
        },
      });
      return { ...r, receiveMs: since(t0) };
    } catch (e) {
      // A half-received round leaves the store stale for those pages; the migration rolls back anyway.
      t.conn.close();
      t.conn = null;
      throw e;
    }
  }

  private async dropMirror(mid: string): Promise<void> {
    const m = this.mirrors.get(mid);
    if (!m) return;
    this.mirrors.delete(mid);
    await m.destroy().catch(() => undefined);
  }

  private dropRemote(mid: string): void {
    this.remotes.get(mid)?.conn.close();
    this.remotes.delete(mid);
  }

  private async dropStore(mid: string): Promise<void> {
    const t = this.stores.get(mid);
    if (!t) return;
    this.stores.delete(mid);
    t.conn?.close();
    await t.store.destroy().catch(() => undefined);
  }

  // ---- source ------------------------------------------------------------------------------------

  private async checkpoint(p: P<'Checkpoint'>, c: CallContext): R<'Checkpoint'> {
    const prior = await this.states.load(p.migrationId);
    if (prior?.role === 'source' && prior.dumped && prior.manifest)
      return { manifest: prior.manifest, imageBytes: await dirBytes(this.states.imagesDir(p.migrationId)), timings: {} };
    const pre = this.precopies.get(p.migrationId);
    if (prior && !(prior.role === 'source' && pre)) throw new FerryError('E_PRECONDITION', `migration ${p.migrationId} has stale state on ${this.cfg.host}`);
    const pc = await this.cri.describe(p.containerId);
    if (pc && !pre) return this.checkpointPod(p, pc, c.signal);
    const d = await this.runningContainer(p.containerId, c.signal, pc);
    if (!d.upperDir) throw new FerryError('E_PRECONDITION', 'storage driver has no overlay upperdir');
    if (!prior) await this.assertSettled(d.id);
    if (!prior) await this.states.create(p.migrationId);
    const st: SourceState = prior?.role === 'source' ? prior : {
      role: 'source', migrationId: p.migrationId, containerId: d.id, peer: p.peer, token: p.token,
      restartPolicy: d.restartPolicy, volumes: d.volumes, upperDir: d.upperDir,
      dumped: false, manifest: null, cpuQuotaUs: null, pod: d.pod, shmDir: d.shmDir, postcopy: p.postcopy,
    };
    await this.states.save(st);
    const timings: Record<string, number> = {};
    const tStart = performance.now();
    // dockerd would restart a container whose processes vanish under it; CRIU's dump looks like a crash.
    const policyOff = st.restartPolicy.name !== '' && st.restartPolicy.name !== 'no';
    if (policyOff) await this.docker.setRestartPolicy(d.id, { name: 'no', maximumRetryCount: 0 });
    const t0 = performance.now();
    let clean: PageSet | null = null;
    const imagesDir = this.states.imagesDir(p.migrationId);
    try {
      const onFrozen = pre ? async (): Promise<void> => { clean = await this.finalScan(p.migrationId, pre.src, timings); } : undefined;
      const { frozenAt } = p.postcopy && !pre
        ? await this.postcopyDump(p.migrationId, d, imagesDir, timings, c.signal)
        : pre && this.cfg.lazyFinal
        ? await this.lazyFinal(p.migrationId, d, imagesDir, pre.src, timings, c.signal)
        : await this.checkpointer.dump(await this.runcRoot(d.runtime, d.id), d.id, d.pid, imagesDir, this.states.workDir(p.migrationId), c.signal, onFrozen);
      // The workload ran until it was frozen: the controller subtracts this from the freeze it measures.
      timings.beforeFreeze = Math.round((frozenAt - tStart) * 10) / 10;
    } catch (e) {
      await this.endPrecopy(p.migrationId);
      if (policyOff) await this.docker.setRestartPolicy(d.id, st.restartPolicy).catch(() => undefined);
      await this.states.remove(p.migrationId).catch(() => undefined);
      throw e;
    }
    const te = performance.now();
    await this.endPrecopy(p.migrationId);
    timings.endPrecopy = since(te);
    timings.dump ??= since(t0);
    this.metrics.dump.observe(timings.dump / 1000);
    // Set by onFrozen (the full dump path only; TS cannot see the assignment inside the callback).
    const fullDumpClean = clean as PageSet | null;
    if (fullDumpClean) {
      const td = performance.now();
      const delta = await writeDeltas(imagesDir, fullDumpClean, c.signal);
      timings.delta = since(td);
      timings.deltaPages = delta.shippedPages;
    }
    const entries: ManifestEntry[] = [];
    let imageBytes = 0;
    const names = (await readdir(imagesDir)).sort();
    for (const name of names) {
      // A pages file with a delta next to it stays here: the destination rebuilds it from its store.
      if (names.includes(`${name.replace(/\.img$/, '')}${DELTA_SUFFIX}`)) continue;
      const s = await stat(join(imagesDir, name));
      if (!s.isFile()) continue;
      entries.push({ kind: 'image-file', name, size: s.size });
      imageBytes += s.size;
    }
    entries.push({ kind: 'rootfs-diff' });
    for (const v of st.volumes) entries.push({ kind: 'volume', name: v });
    if (st.pod && st.shmDir) entries.push({ kind: 'volume', name: POD_SHM_VOLUME });
    const manifest = { entries };
    await this.states.save({ ...st, dumped: true, manifest, cpuQuotaUs: null });
    timings.agentTotal = since(tStart);
    return { manifest, imageBytes, timings };
  }

  private async transferPull(p: P<'TransferPull'>, c: CallContext): R<'TransferPull'> {
    const st = await this.states.load(p.migrationId);
    // Only the peer the controller named, holding the one-time token, gets this migration's state.
    if (!st || st.role !== 'source' || !st.dumped || !st.manifest) throw new FerryError('E_NOT_FOUND', `no checkpoint ${p.migrationId} to pull`);
    if (c.conn.peerName !== st.peer || !tokensEqual(p.token, st.token)) throw new FerryError('E_FORBIDDEN', `${c.conn.peerName} may not pull ${p.migrationId}`);
    const entries = await sendEntries(st.manifest.entries, {
      imagesDir: this.states.imagesDir(p.migrationId),
      upperDir: st.upperDir,
      volumeDir: async (name) => {
        if (!st.pod) return this.docker.volumeMountpoint(name);
        if (name !== POD_SHM_VOLUME || !st.shmDir) throw new FerryError('E_PRECONDITION', `pod ${p.migrationId} has no volume ${name}`);
        return st.shmDir;
      },
    }, async (e, q, d, last, written) => {
      await c.sendChunk(e, q, d, last, written);
      this.metrics.bytes.inc({ direction: 'out' }, d.length);
    }, c.signal);
    // The destination restores as soon as this returns: the killed task's addresses must be free by then.
    const release = this.releases.get(p.migrationId);
    const tw = performance.now();
    const releaseMs = release ? await release.free : undefined;
    return { entries, ...(release ? { releaseMs, releaseWaitMs: since(tw) } : {}) };
  }

  /**
   * With the container frozen: the last scan says what changed since the last round, then the tracker lets
   * go, so that CRIU dumps tasks with no userfaultfd registered. Returns the pages the destination holds
   * current, or null if the scan failed (then nothing it holds can be trusted).
   */
  private async finalScan(mid: string, src: PrecopySource, timings: Record<string, number>, read?: FrozenPages): Promise<PageSet | null> {
    const t0 = performance.now();
    try {
      const fin = await src.finish({ read: !!read });
      timings.finalDirtyPages = fin.finalDirtyPages;
      for (const [pid, pages] of fin.read) read?.set(pid, pages);
      return fin.clean;
    } catch (e) {
      // Nothing read counts either: every lazy page then comes from CRIU.
      read?.clear();
      this.log.warn({ migrationId: mid, err: (e as Error).message }, 'final dirty scan failed; sending all pages');
      await src.close();
      return null;
    } finally {
      timings.finalScan = since(t0);
    }
  }

  /**
   * Pre-copy's final phase without a full dump: freeze, last dirty scan (reading what was written),
   * `criu dump --lazy-pages`, then take from CRIU's page server only the lazy pages the destination still
   * lacks (lazy/lazy-dump.ts has the life cycle). Any failure before CRIU's session ends leaves the task running on this host.
   */
  private async lazyFinal(mid: string, d: { id: string; pid: number; runtime: string }, imagesDir: string, src: PrecopySource, timings: Record<string, number>, signal: AbortSignal): Promise<{ frozenAt: number }> {
    const freezer = await freezerStateFile(d.pid);
    if (!freezer) throw new FerryError('E_PRECONDITION', 'pre-copy needs the cgroup v1 freezer');
    // Without a mirror a rollback after CRIU lets go would have no pages: refuse before freezing anything.
    // (A pod's container has none: after that point it is lost, not rolled back.)
    if (!this.mirrors.has(mid) && d.runtime !== CRI_RUNTIME) throw new FerryError('E_PRECONDITION', `no pre-copy mirror for ${mid}`);
    const frozenAt = performance.now();
    await freeze(freezer, signal);
    let lazy: LazyDump | null = null;
    let procs: number[] = [];
    let conns: TcpTuple[] = [];
    try {
      // No clean set means nothing the destination holds is trusted: every lazy page goes in the delta.
      const frozen: FrozenPages = new Map();
      const clean = await this.finalScan(mid, src, timings, frozen) ?? new PageSet();
      const td = performance.now();
      lazy = await this.startLazyDump(mid, d, imagesDir, signal);
      timings.dump = since(td);
      if (this.cfg.faults.includes('lazy-delta-fail')) throw new FerryError('E_FAULT_INJECTED', 'delta fetch failed by fault injection');
      const tx = performance.now();
      let shipped = 0;
      let fromScan = 0;
      for (const name of await readdir(imagesDir)) {
        const pid = pagemapPid(name);
        if (pid === null) continue;
        const pm = parsePagemap(await readFile(join(imagesDir, name)));
        const need: { start: number; end: number }[] = [];
        const runs: { vaddr: number; pages: Buffer[] }[] = [];
        const read = frozen.get(pid);
        for (const e of pm.entries) {
          if (!(e.flags & PE_LAZY) || e.flags & PE_PRESENT) continue;
          for (const r of clean.runs(pid, e.vaddr, e.vaddr + e.nrPages * 4096)) {
            if (r.held) continue;
            // What the final scan already read from the frozen task ships as it is; only the rest (pages the
            // tracker did not see written) is asked of CRIU.
            for (const part of splitByRead(r.start, r.end, read)) {
              if (part.pages) { runs.push({ vaddr: part.start, pages: part.pages }); fromScan += part.pages.length; }
              else need.push(part);
            }
          }
        }
        shipped += await lazy.client.fetch(pid, need, (vaddr, data) => { runs.push({ vaddr, pages: [data] }); }, signal);
        runs.sort((a, b) => a.vaddr - b.vaddr);
        await writeDelta(join(imagesDir, lazyDeltaName(pid)), runs);
      }
      timings.deltaFetch = since(tx);
      timings.deltaPages = shipped + fromScan;
      timings.deltaFromScan = fromScan;
      // CRIU's session ends now, not at commit: until the task's sockets are gone, a restore that reuses
      // their addresses (one host, or a moved IP) fails with EADDRNOTAVAIL. Who holds which, read while frozen:
      procs = await cgroupProcs(freezer);
      conns = await tcpTuplesOf(procs);
    } catch (e) {
      if (lazy && !lazy.ended) {
        // CRIU dies, the task detaches and resumes at the thaw below, as it was.
        await lazy.abort();
        await dropNetworkLock(imagesDir);
      }
      await writeFile(freezer, 'THAWED').catch(() => undefined);
      throw e;
    }
    // The end of the live task: from here a rollback restores from the mirror plus the delta. It is killed
    // while CRIU's session still pins its pages (so its exit unmaps 1 GiB in ~10 ms instead of freeing it in
    // ~90 ms, which CLOSE first cost: the sockets close only after the memory), and every image is final
    // once CRIU serves (probed: nothing in the images dir changes after CLOSE), so the images stream while
    // the task dies; the destination restores only once TransferPull saw its addresses free. CLOSE follows.
    this.releaseKilled(mid, procs, conns, freezer, lazy);
    return { frozenAt };
  }

  private async commitSource(p: P<'CommitSource'>): R<'CommitSource'> {
    const st = await this.states.load(p.migrationId);
    if (!st) return { removed: false };
    if (st.role !== 'source') throw new FerryError('E_PRECONDITION', `${p.migrationId} is not a source migration here`);
    await this.awaitRelease(p.migrationId);
    await this.endPrecopy(p.migrationId);
    await this.dropMirror(p.migrationId);
    const lazy = this.postcopies.get(p.migrationId);
    if (lazy) {
      // The destination has every page (FinishTarget came first): CRIU may go, and runc removes the cgroup.
      this.postcopies.delete(p.migrationId);
      await lazy.finish().catch((e: unknown) => this.log.warn({ migrationId: p.migrationId, err: (e as Error).message }, 'CRIU lazy session did not end cleanly'));
    }
    if (st.pod) {
      // The dump ended the task; containerd and kubelet finish the pod's deletion (the shim lets it go on).
      await this.states.remove(p.migrationId);
      return { removed: true };
    }
    const removed = await this.docker.remove(st.containerId);
    for (const v of st.volumes) await this.docker.removeVolumeIfUnused(v);
    await this.states.remove(p.migrationId);
    return { removed };
  }

  private async rollbackSource(p: P<'RollbackSource'>): R<'RollbackSource'> {
    const st = await this.states.load(p.migrationId);
    if (!st) return { restored: false, running: false, lost: false };
    if (st.role !== 'source') throw new FerryError('E_PRECONDITION', `${p.migrationId} is not a source migration here`);
    await this.awaitRelease(p.migrationId);
    await this.endPrecopy(p.migrationId);
    if (st.pod) return this.rollbackPod(st);
    if (st.postcopy && st.dumped) return this.rollbackPostcopy(st);
    if (st.cpuQuotaUs !== null) await this.restoreQuota(st);
    let restored = false;
    if (st.dumped && !(await this.docker.isRunning(st.containerId))) {
      // The dump stopped the processes; bring them back here from the images we still hold.
      await this.docker.waitNotRunning(st.containerId, AbortSignal.timeout(10_000));
      const imagesDir = this.states.imagesDir(p.migrationId);
      const mirror = this.mirrors.get(p.migrationId);
      if (await hasLazyDelta(imagesDir)) {
        // A lazy final dump wrote no pages: they come from the mirror and the delta, through a local page server.
        if (!mirror) throw new FerryError('E_CRIU_RESTORE', `the pages of ${p.migrationId} were only in this agent's memory, and it restarted`);
        const server = await this.servePages(p.migrationId, st.containerId, imagesDir, mirror);
        try {
          await this.startFromImages(st.containerId, imagesDir);
          await this.waitLazyFill(p.migrationId, AbortSignal.timeout(LAZY_FILL_TIMEOUT_MS));
          await server.done;
        } finally {
          server.close();
        }
      } else {
        await this.startFromImages(st.containerId, imagesDir);
      }
      restored = true;
    }
    await this.dropMirror(p.migrationId);
    if (st.restartPolicy.name !== '' && st.restartPolicy.name !== 'no') await this.docker.setRestartPolicy(st.containerId, st.restartPolicy);
    const running = await this.docker.isRunning(st.containerId);
    if (!running) throw new FerryError('E_CRIU_RESTORE', `container ${st.containerId.slice(0, 12)} did not come back on ${this.cfg.host}`);
    await this.states.remove(p.migrationId);
    return { restored, running, lost: false };
  }

  /**
   * At start, before serving: undo what a crash left half-done where the answer is certain. A target that
   * never restored cannot have been committed, and a source that never dumped never stopped running.
   * Anything past those points waits for the controller, which knows whether the commit happened.
   */
  async reap(): Promise<string[]> {
    const done: string[] = [];
    for (const mid of await this.states.list()) {
      const st = await this.states.load(mid).catch(() => null);
      if (!st) { await this.states.remove(mid); continue; }
      if (st.role === 'target' && !st.restored) {
        await this.abortTarget({ migrationId: mid });
        done.push(`${mid}: removed unrestored target ${st.containerId.slice(0, 12)}`);
      } else if (st.role === 'source' && !st.dumped) {
        // A pre-copy's tracker died with the old process (the kernel released it); its throttle did not.
        if (st.cpuQuotaUs !== null) await this.restoreQuota(st).catch(() => undefined);
        if (!st.pod && st.restartPolicy.name !== '' && st.restartPolicy.name !== 'no') await this.docker.setRestartPolicy(st.containerId, st.restartPolicy).catch(() => undefined);
        await this.states.remove(mid);
        done.push(`${mid}: source was never dumped; state dropped`);
      }
    }
    // Containers a crashed prepare created but never recorded: labelled by us and never started.
    for (const c of await this.docker.docker.listContainers({ all: true, filters: { label: [MIGRATION_LABEL], status: ['created'] } })) {
      const mid = c.Labels[MIGRATION_LABEL] ?? '';
      if (!(await this.states.list()).includes(mid)) {
        await this.docker.remove(c.Id);
        done.push(`${mid}: removed orphan container ${c.Id.slice(0, 12)}`);
      }
    }
    if (done.length) this.log.warn({ reaped: done }, 'cleaned up after an earlier crash');
    return done;
  }

  /** A lazy dump's release, success or not: what comes after needs the task (and CRIU, once it ends) gone. */
  private async awaitRelease(mid: string): Promise<void> {
    const r = this.releases.get(mid);
    await r?.free.catch(() => undefined);
    await r?.exited?.catch(() => undefined);
    this.releases.delete(mid);
  }

  /**
   * Kills a lazy dump's frozen tasks and frees what they held for the destination. A killed task's connection
   * does not vanish: it closes with a FIN that CRIU's network lock drops, and lingers (FIN_WAIT) holding its
   * 4-tuple, which the destination's restore needs (EADDRNOTAVAIL); it is destroyed (SOCK_DESTROY), and its
   * RST is dropped by the same lock, so the peer notices nothing. With `lazy` (a lazy final phase) CRIU's
   * session ends after that; a post-copy's goes on serving until its commit or rollback.
   */
  private releaseKilled(mid: string, procs: readonly number[], conns: readonly TcpTuple[], freezer: string, lazy: LazyDump | null): void {
    const t0 = performance.now();
    for (const pid of procs) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    // Frozen tasks die only once thawed.
    const free = writeFile(freezer, 'THAWED').then(async () => {
      await waitFilesClosed(procs, RELEASE_TIMEOUT_MS);
      for (const t of conns) await run('ss', ['-K', '-t', 'src', t.local, 'dst', t.remote], { allowFailure: true });
      return since(t0);
    });
    const exited = lazy ? free.catch(() => undefined).then(() => lazy.finish()).then(() => since(t0)) : null;
    free.catch((e: unknown) => this.log.warn({ migrationId: mid, err: (e as Error).message }, 'the dumped tasks did not die'));
    exited?.catch((e: unknown) => this.log.warn({ migrationId: mid, err: (e as Error).message }, 'CRIU did not end its lazy session cleanly'));
    this.releases.set(mid, { free, exited });
  }

  // ---- pure post-copy ----------------------------------------------------------------------------

  /** `runc checkpoint --lazy-pages` of a frozen container: CRIU serves its memory until the session ends. */
  private async startLazyDump(mid: string, d: { id: string; runtime: string }, imagesDir: string, signal: AbortSignal): Promise<LazyDump> {
    return LazyDump.start({
      runc: this.cfg.runc, criu: this.cfg.criu, criuConfigFile: this.cfg.criuConfigFile, runcRoot: await this.runcRoot(d.runtime, d.id),
      id: d.id, imagesDir, workDir: this.states.workDir(mid), signal,
    });
  }

  /**
   * Freeze, `dump --lazy-pages`, then kill the dumped tasks at once: CRIU keeps serving their pages from its
   * page pipes after they are gone, and only their death frees the addresses (sockets) the destination's
   * restore takes over (docs/postcopy.md). A failure before the kill lets the tasks run on where they were.
   */
  private async postcopyDump(mid: string, d: { id: string; pid: number; runtime: string }, imagesDir: string, timings: Record<string, number>, signal: AbortSignal): Promise<{ frozenAt: number }> {
    const freezer = await freezerStateFile(d.pid);
    if (!freezer) throw new FerryError('E_PRECONDITION', 'post-copy needs the cgroup v1 freezer');
    const frozenAt = performance.now();
    await freeze(freezer, signal);
    let lazy: LazyDump | null = null;
    let procs: number[] = [];
    let conns: TcpTuple[] = [];
    try {
      const td = performance.now();
      lazy = await this.startLazyDump(mid, d, imagesDir, signal);
      timings.dump = since(td);
      if (this.cfg.faults.includes('postcopy-dump-fail')) throw new FerryError('E_FAULT_INJECTED', 'post-copy dump failed by fault injection');
      await writeFile(join(imagesDir, POSTCOPY_MARK), '', { mode: 0o600 });
      procs = await cgroupProcs(freezer);
      conns = await tcpTuplesOf(procs);
    } catch (e) {
      if (lazy && !lazy.ended) {
        await lazy.abort();
        await dropNetworkLock(imagesDir);
      }
      await writeFile(freezer, 'THAWED').catch(() => undefined);
      throw e;
    }
    // From here the pages exist only in CRIU's session: a rollback restores from it, a lost session is a lost workload.
    this.postcopies.set(mid, lazy);
    this.releaseKilled(mid, procs, conns, freezer, null);
    timings.connections = conns.length;
    timings.killed = procs.length;
    return { frozenAt };
  }

  /** A page source reading the live CRIU session of a post-copy (source side: rollback; the peer asks over TransferPages). */
  private criuSource(lazy: LazyDump, signal: AbortSignal): PageSource {
    return {
      read: async (pid, vaddr, nr) => {
        const parts: Buffer[] = [];
        await lazy.client.fetch(pid, [{ start: vaddr, end: vaddr + nr * 4096 }], (_v, data) => { parts.push(data); }, signal);
        return parts.length ? Buffer.concat(parts) : null;
      },
    };
  }

  /** Destination: pages of a post-copy, fetched from the source agent as the lazy-pages daemon asks for them. */
  private remoteSource(mid: string, conn: Connection, token: string): PageSource {
    let served = 0;
    return {
      read: async (pid, vaddr, nr) => {
        const failAt = this.faultArg('postcopy-fetch-fail');
        if (failAt !== null && served >= failAt) throw new FerryError('E_FAULT_INJECTED', `post-copy page fetch failed by fault injection after ${served} requests`);
        served++;
        const r = await conn.request(AgentApi.TransferPages, { migrationId: mid, token, pid, vaddr, nr: Math.min(nr, 1024) }, { timeoutMs: 60_000 });
        return r.data.length ? Buffer.from(r.data.buffer, r.data.byteOffset, r.data.length) : null;
      },
    };
  }

  /** Source, for the destination agent of a post-copy: pages from CRIU's lazy session. */
  private async transferPages(p: P<'TransferPages'>, c: CallContext): R<'TransferPages'> {
    const st = await this.states.load(p.migrationId);
    if (!st || st.role !== 'source' || !st.postcopy) throw new FerryError('E_NOT_FOUND', `no post-copy ${p.migrationId} on ${this.cfg.host}`);
    if (c.conn.peerName !== st.peer || !tokensEqual(p.token, st.token)) throw new FerryError('E_FORBIDDEN', `${c.conn.peerName} may not read ${p.migrationId}`);
    const lazy = this.postcopies.get(p.migrationId);
    if (!lazy || lazy.ended) throw new FerryError('E_LOST', `the pages of ${p.migrationId} were only in CRIU's session on ${this.cfg.host}, which is gone`);
    const data = await this.criuSource(lazy, c.signal).read(p.pid, p.vaddr, p.nr);
    if (!data) throw new FerryError('E_INTEGRITY', `CRIU has no pages at ${p.vaddr.toString(16)} of ${p.pid}`);
    this.metrics.bytes.inc({ direction: 'out' }, data.length);
    return { data: data as Uint8Array<ArrayBuffer> };
  }

  /**
   * Before the commit point: the tasks are dead, their pages in CRIU's session. The killed tasks stay zombies
   * under CRIU (their tracer) until it exits, so Docker sees the container running until then: take every
   * page out of the session first (as a lazy delta), end it, and restore here lazily from the delta.
   */
  private async rollbackPostcopy(st: SourceState): R<'RollbackSource'> {
    const lazy = this.postcopies.get(st.migrationId);
    const imagesDir = this.states.imagesDir(st.migrationId);
    if (!lazy || lazy.ended) {
      await dropNetworkLock(imagesDir);
      await this.states.remove(st.migrationId);
      return { restored: false, running: false, lost: true };
    }
    const signal = AbortSignal.timeout(LAZY_FILL_TIMEOUT_MS);
    for (const name of await readdir(imagesDir)) {
      const pid = pagemapPid(name);
      if (pid === null) continue;
      const need = parsePagemap(await readFile(join(imagesDir, name))).entries
        .filter((e) => e.flags & PE_LAZY && !(e.flags & PE_PRESENT)).map((e) => ({ start: e.vaddr, end: e.vaddr + e.nrPages * 4096 }));
      const runs: { vaddr: number; pages: Buffer[] }[] = [];
      await lazy.client.fetch(pid, need, (vaddr, data) => { runs.push({ vaddr, pages: [data] }); }, signal);
      runs.sort((a, b) => a.vaddr - b.vaddr);
      await writeDelta(join(imagesDir, lazyDeltaName(pid)), runs);
    }
    this.postcopies.delete(st.migrationId);
    await lazy.finish().catch((e: unknown) => this.log.warn({ migrationId: st.migrationId, err: (e as Error).message }, 'CRIU lazy session did not end cleanly'));
    await this.docker.waitNotRunning(st.containerId, AbortSignal.timeout(30_000));
    const server = await this.servePages(st.migrationId, st.containerId, imagesDir, null);
    try {
      await this.startFromImages(st.containerId, imagesDir);
      await this.waitLazyFill(st.migrationId, AbortSignal.timeout(LAZY_FILL_TIMEOUT_MS));
      await server.done;
    } finally {
      server.close();
    }
    if (st.restartPolicy.name !== '' && st.restartPolicy.name !== 'no') await this.docker.setRestartPolicy(st.containerId, st.restartPolicy);
    const running = await this.docker.isRunning(st.containerId);
    if (!running) throw new FerryError('E_CRIU_RESTORE', `container ${st.containerId.slice(0, 12)} did not come back on ${this.cfg.host}`);
    await this.states.remove(st.migrationId);
    return { restored: true, running, lost: false };
  }

  // ---- pods (containerd CRI; the shim side is shim/) ----------------------------------------------

  /** A running container by id, Docker's or a pod's, with what the pre-copy and final-phase paths need. */
  private async runningContainer(id: string, signal: AbortSignal, described?: CriContainer | null): Promise<{
    id: string; name: string; pid: number; runtime: string; upperDir: string | null; pod: PodIdentity | null; shmDir: string | null;
    restartPolicy: SourceState['restartPolicy']; volumes: string[];
  }> {
    const pc = described === undefined ? await this.cri.describe(id) : described;
    if (pc) {
      if (!pc.running) throw new FerryError('E_PRECONDITION', `${podKey(pc.pod)} is not running on ${this.cfg.host}`);
      const foreign = pc.rejectReasons.filter((r) => r.startsWith('volume'));
      if (foreign.length) throw new FerryError('E_PRECONDITION', `${podKey(pc.pod)}: ${foreign.join('; ')}`);
      return {
        id: pc.id, name: podKey(pc.pod), pid: pc.pid, runtime: CRI_RUNTIME, upperDir: pc.upperDir, pod: pc.pod, shmDir: pc.shmDir,
        restartPolicy: { name: 'no', maximumRetryCount: 0 }, volumes: [],
      };
    }
    const d = await this.docker.describe(id, signal);
    if (!d.running) throw new FerryError('E_PRECONDITION', `container ${d.name} is not running`);
    return {
      id: d.id, name: d.name, pid: d.pid, runtime: d.runtime, upperDir: d.upperDir, pod: null, shmDir: null,
      restartPolicy: d.spec.restartPolicy, volumes: d.spec.volumes.map((v) => v.name),
    };
  }

  /** Source: freeze and dump a pod's container with runc; its rw layer travels, there are no volumes. */
  private async checkpointPod(p: P<'Checkpoint'>, pc: CriContainer, signal: AbortSignal): R<'Checkpoint'> {
    if (!pc.running) throw new FerryError('E_PRECONDITION', `${podKey(pc.pod)} is not running on ${this.cfg.host}`);
    if (!pc.upperDir) throw new FerryError('E_PRECONDITION', `${podKey(pc.pod)}: ${pc.rejectReasons.join('; ')}`);
    await this.assertSettled(pc.id);
    await this.states.create(p.migrationId);
    const st: SourceState = {
      role: 'source', migrationId: p.migrationId, containerId: pc.id, peer: p.peer, token: p.token,
      restartPolicy: { name: 'no', maximumRetryCount: 0 }, volumes: [], upperDir: pc.upperDir,
      dumped: false, manifest: null, cpuQuotaUs: null, pod: pc.pod, shmDir: pc.shmDir, postcopy: false,
    };
    await this.states.save(st);
    const imagesDir = this.states.imagesDir(p.migrationId);
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    try {
      const { frozenAt } = await this.checkpointer.dump(this.cri.runcRoot(), pc.id, pc.pid, imagesDir, this.states.workDir(p.migrationId), signal);
      timings.beforeFreeze = Math.round((frozenAt - t0) * 10) / 10;
    } catch (e) {
      await this.states.remove(p.migrationId).catch(() => undefined);
      throw e;
    }
    timings.dump = since(t0);
    this.metrics.dump.observe(timings.dump / 1000);
    const entries: ManifestEntry[] = [];
    let imageBytes = 0;
    for (const name of (await readdir(imagesDir)).sort()) {
      const s = await stat(join(imagesDir, name));
      if (!s.isFile()) continue;
      entries.push({ kind: 'image-file', name, size: s.size });
      imageBytes += s.size;
    }
    entries.push({ kind: 'rootfs-diff' });
    // POSIX shared memory (e.g. a database's /dev/shm segments) lives in the sandbox's tmpfs, not in the rw layer.
    if (pc.shmDir) entries.push({ kind: 'volume', name: POD_SHM_VOLUME });
    const manifest = { entries };
    await this.states.save({ ...st, dumped: true, manifest });
    return { manifest, imageBytes, timings };
  }

  /**
   * Source rollback of a pod's container. Before the dump it never stopped. After it, its task has ended
   * and containerd has seen it end: containerd cannot take a restored process back under the same task, so
   * the workload is lost, and says so.
   */
  private async rollbackPod(st: SourceState): R<'RollbackSource'> {
    const pc = await this.cri.describe(st.containerId);
    const running = !!pc?.running;
    // The dump locked the task's connections (nftables); only a restore would have unlocked them, and none
    // will come: a lock left behind would black-hole those addresses' traffic on this host for good.
    if (st.dumped) await dropNetworkLock(this.states.imagesDir(st.migrationId));
    await this.states.remove(st.migrationId);
    return { restored: false, running, lost: st.dumped && !running };
  }

  /** Destination: a pod's state waits here for the replacement pod; only one migration per pod container. */
  private async stagePod(mid: string, pod: PodIdentity): R<'PrepareTarget'> {
    const other = (await this.targets()).find((t) => t.pod && podKey(t.pod) === podKey(pod));
    if (other) throw new FerryError('E_CONFLICT', `${podKey(pod)} already has migration ${other.migrationId} staged on ${this.cfg.host}`);
    await this.states.create(mid);
    const upperDir = join(this.states.dir(mid), 'upper');
    await mkdir(upperDir, { recursive: true, mode: 0o700 });
    await mkdir(join(this.states.dir(mid), 'shm'), { recursive: true, mode: 0o700 });
    await this.states.save({
      role: 'target', migrationId: mid, containerId: '', upperDir, createdVolumes: [], volumes: [], pulled: false, restored: false, pod,
    });
    return { containerId: '' };
  }

  /**
   * The replacement pod's container is being created (its shim asks before forwarding Create): if this pod
   * container's state is staged here, wait until it has arrived, copy its rw layer into the new snapshot and
   * hand over the images. Overlay whiteouts (char devices) and opaque dirs (trusted.* xattrs) must survive
   * the copy, hence `cp -a` as root; the staging dir is on tmpfs, the snapshot on disk, so no rename.
   */
  private async shimClaim(p: P<'ShimClaim'>, c: CallContext): R<'ShimClaim'> {
    this.assertOwnShim(c);
    // The rw layer is copied into this path as root: only an overlay snapshot's upper dir qualifies.
    if (!isSnapshotUpperDir(p.upperDir)) throw new FerryError('E_INVALID_ARGUMENT', `${p.upperDir.slice(0, 200)} is not an overlay snapshot's upper dir`);
    const key = podKey(p.pod);
    // One staged state per pod container at most (stagePod refuses a second).
    let st = (await this.targets()).find((t) => t.pod && podKey(t.pod) === key && !t.restored && !t.containerId);
    if (!st) return { migrationId: null, imagesDir: null };
    const mid = st.migrationId;
    this.claimsArrived.add(mid);
    for (const wake of this.claimWaiters.get(mid) ?? []) wake();
    if (!st.pulled) {
      const wait = deadline(p.waitMs, c.signal);
      await new Promise<void>((resolve) => {
        const wake = (): void => { this.pulledWaiters.get(mid)?.delete(wake); resolve(); };
        if (!this.pulledWaiters.has(mid)) this.pulledWaiters.set(mid, new Set());
        this.pulledWaiters.get(mid)!.add(wake);
        wait.addEventListener('abort', wake, { once: true });
      });
      st = await this.target(mid);
      if (!st.pulled) throw new FerryError('E_DEADLINE', `the state of ${key} (migration ${mid}) has not arrived on ${this.cfg.host} within ${p.waitMs} ms`);
    }
    const t0 = performance.now();
    await run('cp', ['-a', `${st.upperDir}/.`, `${p.upperDir}/`], { signal: c.signal, errorCode: 'E_CRIU_RESTORE' });
    // The replacement's /dev/shm is its new sandbox's tmpfs: the shared-memory files the task has open must be there.
    const shm = join(this.states.dir(mid), 'shm');
    const shmTarget = await shmDirOf(this.cri.bundleOf(p.containerId)).catch(() => null);
    if (shmTarget && (await readdir(shm).catch(() => [] as string[])).length > 0)
      await run('cp', ['-a', `${shm}/.`, `${shmTarget}/`], { signal: c.signal, errorCode: 'E_CRIU_RESTORE' });
    await this.states.save({ ...st, containerId: p.containerId, upperDir: p.upperDir });
    const imagesDir = this.states.imagesDir(mid);
    if (await hasLazyDelta(imagesDir)) {
      // Pre-copy's lazy final phase: the memory is this agent's page store plus the delta, served to the
      // lazy-pages daemon that ferry-runc starts for runc-v2's restore (ferry-lazy names the port).
      this.pageServers.get(mid)?.close();
      this.pageServers.set(mid, await this.servePages(mid, p.containerId, imagesDir, this.stores.get(mid)?.store ?? null));
    }
    this.log.info({ migrationId: mid, pod: key, containerId: p.containerId, copyMs: since(t0) }, 'replacement pod claimed its migrated state');
    return { migrationId: mid, imagesDir: this.states.imagesDir(mid) };
  }

  /** Only this host's own shim may claim what is staged here (the shared secret alone says "some Ferry peer"). */
  private assertOwnShim(c: CallContext): void {
    if (c.conn.peerName !== this.cfg.host) throw new FerryError('E_FORBIDDEN', `a shim of ${c.conn.peerName} may not claim state on ${this.cfg.host}`);
  }

  private async shimRestored(p: P<'ShimRestored'>, c: CallContext): R<'ShimRestored'> {
    this.assertOwnShim(c);
    const st = await this.states.load(p.migrationId);
    if (!st || st.role !== 'target' || st.containerId !== p.containerId) {
      // The migration was aborted while the replacement restored: that copy must not run next to the source.
      if (!p.error) await this.cri.kill(this.cfg.runc, p.containerId).catch(() => false);
      throw new FerryError('E_NOT_FOUND', `no staged migration ${p.migrationId} for ${p.containerId.slice(0, 12)} on ${this.cfg.host}`);
    }
    if (!p.error) await this.states.save({ ...st, restored: true });
    this.restoreWaiters.get(p.migrationId)?.(p.error ? { error: p.error } : { pid: p.pid, containerId: p.containerId });
    return {};
  }

  private async awaitClaim(p: P<'AwaitReplacement'>, c: CallContext): R<'AwaitReplacement'> {
    const t0 = performance.now();
    const st = await this.target(p.migrationId);
    if (!st.pod) throw new FerryError('E_INVALID_ARGUMENT', `${p.migrationId} is not a pod migration`);
    if (!this.claimsArrived.has(p.migrationId)) {
      const wait = deadline(p.waitMs, c.signal);
      await new Promise<void>((resolve) => {
        const set = this.claimWaiters.get(p.migrationId) ?? new Set<() => void>();
        this.claimWaiters.set(p.migrationId, set);
        const wake = (): void => { set.delete(wake); resolve(); };
        set.add(wake);
        wait.addEventListener('abort', wake, { once: true });
      });
    }
    return { arrived: this.claimsArrived.has(p.migrationId), waitedMs: since(t0) };
  }

  /** Destination Restore of a pod: the replacement's shim restores it; this waits for its word. */
  private async awaitReplacement(mid: string, signal: AbortSignal): R<'Restore'> {
    const t0 = performance.now();
    const st = await this.target(mid);
    if (st.restored) {
      const pc = await this.cri.describe(st.containerId);
      if (pc?.running) return { containerId: st.containerId, pid: pc.pid, timings: {} };
    }
    const r = await new Promise<{ pid: number; containerId: string } | { error: string }>((resolve, reject) => {
      const onAbort = (): void => { this.restoreWaiters.delete(mid); reject(new FerryError('E_DEADLINE', `no replacement pod for ${st.pod ? podKey(st.pod) : mid} restored on ${this.cfg.host} in time`)); };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.restoreWaiters.set(mid, (x) => { signal.removeEventListener('abort', onAbort); this.restoreWaiters.delete(mid); resolve(x); });
    });
    if ('error' in r) throw new FerryError('E_CRIU_RESTORE', `the replacement pod's restore failed: ${r.error}`);
    this.metrics.restore.observe(since(t0) / 1000);
    return { containerId: r.containerId, pid: r.pid, timings: { awaitReplacement: since(t0) } };
  }

  /** Before the commit point: a replacement that already restored must not run next to the source. */
  private async abortStaged(st: TargetState): R<'AbortTarget'> {
    let removed = false;
    if (st.containerId) removed = await this.cri.kill(this.cfg.runc, st.containerId);
    this.restoreWaiters.get(st.migrationId)?.({ error: 'migration aborted' });
    this.claimsArrived.delete(st.migrationId);
    for (const wake of this.claimWaiters.get(st.migrationId) ?? []) wake();
    for (const wake of this.pulledWaiters.get(st.migrationId) ?? []) wake();
    await this.states.remove(st.migrationId);
    return { removed };
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private async restoreQuota(st: SourceState): Promise<void> {
    if (st.cpuQuotaUs === null) return;
    const i = await this.docker.inspect(st.containerId);
    if (i.State.Pid) await CpuThrottle.restoreQuota(i.State.Pid, st.cpuQuotaUs);
    await this.states.save({ ...st, cpuQuotaUs: null });
  }

  private async target(mid: string): Promise<TargetState> {
    const st = await this.states.load(mid);
    if (!st || st.role !== 'target') throw new FerryError('E_NOT_FOUND', `no target migration ${mid} on ${this.cfg.host}`);
    return st;
  }

  /** `docker start --checkpoint` from Ferry's own image directory, leaving no checkpoint copies behind. */
  private async startFromImages(containerId: string, imagesDir: string): Promise<void> {
    await this.placeCheckpoint(containerId, imagesDir);
    try {
      await this.docker.startFromCheckpoint(containerId, CHECKPOINT_NAME);
    } finally {
      await this.cleanCheckpointLeftovers(containerId);
    }
  }

  /**
   * Docker only restores from its own checkpoints dir and tars it through containerd's content store.
   * We put a placeholder there naming our image dir; Ferry's runc wrapper swaps the path in at restore.
   */
  private async placeCheckpoint(containerId: string, imagesDir: string): Promise<void> {
    const dir = join(await this.dataRoot(), 'containers', containerId, 'checkpoints', CHECKPOINT_NAME);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, 'ferry-images'), `${imagesDir}\n`, { mode: 0o600 });
  }

  private async cleanCheckpointLeftovers(containerId: string): Promise<void> {
    const root = await this.dataRoot();
    await rm(join(root, 'containers', containerId, 'checkpoints', CHECKPOINT_NAME), { recursive: true, force: true });
    // containerd 1.6 never deletes its extracted checkpoint copies (services/tasks/local.go).
    const tmp = join(root, 'tmp');
    for (const n of await readdir(tmp).catch(() => [] as string[])) {
      if (n.startsWith('ctrd-checkpoint')) await rm(join(tmp, n), { recursive: true, force: true });
    }
  }

  private faultArg(name: string): number | null {
    const f = this.cfg.faults.find((x) => x === name || x.startsWith(`${name}:`));
    if (!f) return null;
    return Number(f.split(':')[1] ?? 0);
  }
}

export const newToken = (): string => randomBytes(24).toString('hex');
/** containerd's overlayfs snapshotter keeps a snapshot's upper dir at <root>/snapshots/<n>/fs. */
export const isSnapshotUpperDir = (p: string): boolean =>
  isAbsolute(p) && normalize(p) === p && /\/io\.containerd\.snapshotter\.v1\.overlayfs\/snapshots\/\d+\/fs$/.test(p);

/** The manifest's name for a pod's /dev/shm contents. */
const POD_SHM_VOLUME = 'pod-shm';
/** Marks a post-copy's images (it travels with them): the destination fetches pages from the source. */
const POSTCOPY_MARK = 'ferry-postcopy';
/** runcRoot()'s name for containerd's (CRI's) runc root. */
const CRI_RUNTIME = 'containerd-cri';

function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size;
  return n;
}
