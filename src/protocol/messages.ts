// Every method and event of Ferry's wire protocol, declared once; controller, agents and CLI import these.

import { z } from 'zod';
import { event, method } from './define.js';

// Names that end up in paths or docker calls: a conservative charset, no traversal possible.
const safeName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/);
export const migrationId = z.string().regex(/^m-[a-z0-9-]{6,64}$/);
const hostName = safeName;
const str = z.string().max(4096);
const strList = z.array(str).max(4096);

export const CapabilitiesSchema = z.object({
  criuVersion: z.string().nullable(),
  criuUsable: z.boolean(),
  kernel: z.string(),
  softDirty: z.boolean(),
  uffd: z.boolean(),
  dockerVersion: z.string().nullable(),
  runcVersion: z.string().nullable(),
});

/** A named volume the container mounts; its contents travel with it. */
export const VolumeSpec = z.object({ name: safeName, destination: str, readOnly: z.boolean() });
export type VolumeSpec = z.infer<typeof VolumeSpec>;

/** Everything needed to recreate a container identically on another host (see docs/platform-notes.md). */
export const ContainerSpec = z.object({
  name: safeName,
  /** Image ID (sha256:…): the rootfs must be byte-identical for CRIU to restore. */
  imageId: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  imageRef: str,
  cmd: strList.nullable(),
  entrypoint: strList.nullable(),
  env: strList,
  labels: z.record(z.string().max(256), str),
  workingDir: str,
  user: str,
  hostname: str,
  domainname: str,
  tty: z.boolean(),
  openStdin: z.boolean(),
  stopSignal: str.nullable(),
  networkMode: z.enum(['host', 'none']),
  restartPolicy: z.object({ name: z.enum(['', 'no', 'always', 'unless-stopped', 'on-failure']), maximumRetryCount: z.number().int().min(0) }),
  memory: z.number().int().min(0),
  memorySwap: z.number().int(),
  nanoCpus: z.number().int().min(0),
  cpuShares: z.number().int().min(0),
  cpuQuota: z.number().int(),
  cpuPeriod: z.number().int().min(0),
  cpusetCpus: str,
  pidsLimit: z.number().int().nullable(),
  ipcMode: z.enum(['private', '']),
  shmSize: z.number().int().min(0),
  capAdd: strList.nullable(),
  capDrop: strList.nullable(),
  securityOpt: strList.nullable(),
  readonlyRootfs: z.boolean(),
  init: z.boolean().nullable(),
  tmpfs: z.record(str, str).nullable(),
  volumes: z.array(VolumeSpec).max(64),
});
export type ContainerSpec = z.infer<typeof ContainerSpec>;

export const ContainerSummary = z.object({
  host: hostName,
  id: z.string(),
  name: z.string(),
  image: z.string(),
  state: z.string(),
  status: z.string(),
  labels: z.record(z.string().max(256), z.string().max(4096)),
});
export type ContainerSummary = z.infer<typeof ContainerSummary>;

// Kubernetes object names (DNS-1123 subdomain / label): they become parts of keys, never of paths.
const k8sName = z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/);
/**
 * What a replacement pod's container has in common with the one it replaces (a StatefulSet keeps the pod
 * name; the uid and the container ids change): the key by which a destination recognises migrated state.
 */
export const PodIdentity = z.object({ namespace: k8sName, pod: k8sName, container: k8sName });
export type PodIdentity = z.infer<typeof PodIdentity>;
export const podKey = (p: PodIdentity): string => `${p.namespace}/${p.pod}/${p.container}`;
/** containerd (CRI) container ids: 64 hex digits. */
export const CriContainerId = z.string().regex(/^[0-9a-f]{64}$/);

/** What the source offers for transfer after a checkpoint. */
export const ManifestEntry = z.discriminatedUnion('kind', [
  /** One CRIU image file, sent verbatim. */
  z.object({ kind: z.literal('image-file'), name: z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/), size: z.number().int().min(0) }),
  /** The container's rw layer as a tar stream (size unknown until sent). */
  z.object({ kind: z.literal('rootfs-diff') }),
  /** A named volume's contents as a tar stream. */
  z.object({ kind: z.literal('volume'), name: safeName }),
]);
export type ManifestEntry = z.infer<typeof ManifestEntry>;
export const Manifest = z.object({ entries: z.array(ManifestEntry).max(100_000) });
export type Manifest = z.infer<typeof Manifest>;

/** Per-phase timings an agent measured, in ms. */
const Timings = z.record(z.string().max(64), z.number());

// ---------------------------------------------------------------------------------------------------
// Agent API: called by the controller (and transfer/* by the peer agent of a migration).

export const AgentInfo = method('agent/info', z.object({}), z.object({ host: hostName, caps: CapabilitiesSchema }));

export const ListContainers = method('container/list', z.object({ all: z.boolean() }), z.array(ContainerSummary).max(10_000));

/** Resolve a container by name or id and describe it for migration; fails with E_NOT_FOUND / E_PRECONDITION. */
export const InspectForMigration = method(
  'container/inspectForMigration',
  z.object({ ref: str }),
  z.object({
    id: z.string(), running: z.boolean(),
    /** Docker containers: how to recreate it. Null for a pod's container, which its owner recreates. */
    spec: ContainerSpec.nullable(),
    /** A container of a Kubernetes pod (containerd CRI): the destination restores into its replacement. */
    pod: PodIdentity.nullable().default(null),
    name: str,
    rssBytes: z.number().int().min(0), rejectReasons: z.array(str),
  }),
);

/** Destination: create the container (not started) and its volumes, before the source freezes. */
export const PrepareTarget = method(
  'migration/prepareTarget',
  z.object({ migrationId, spec: ContainerSpec.nullable(), pod: PodIdentity.nullable().default(null) }),
  /** For a pod, containerId is empty: the replacement pod's container does not exist yet. */
  z.object({ containerId: z.string() }),
);

/** What one pre-copy round did, as the source measured it. */
export const RoundStats = z.object({
  round: z.number().int().min(0),
  /** Pages the scan reported written since the previous round (round 0: every page holding data). */
  dirtyPages: z.number().int().min(0),
  pages: z.number().int().min(0),
  bytes: z.number().int().min(0),
  records: z.number().int().min(0),
  scanMs: z.number(),
  /** Time between this round's scan and the previous one: the window in which `dirtyPages` were written. */
  intervalMs: z.number(),
  durationMs: z.number(),
  processes: z.number().int().min(0),
});
export type RoundStats = z.infer<typeof RoundStats>;

/** Source: start tracking the container's writes for pre-copy (it keeps running). */
export const PrecopyStart = method(
  'migration/precopyStart',
  z.object({ migrationId, containerId: z.string(), peer: hostName, token: z.string().max(128) }),
  z.object({ processes: z.number().int().min(0), attachMs: z.number() }),
);

/**
 * Source: how fast the running container writes, for `--mode auto`. The tracker is attached for the window
 * and released before the reply; the container runs on untouched.
 */
export const SampleDirtyRate = method(
  'migration/sampleDirtyRate',
  z.object({ containerId: z.string(), windowMs: z.number().int().min(50).max(10_000) }),
  z.object({ dirtyPages: z.number().int().min(0), windowMs: z.number(), dataPages: z.number().int().min(0), processes: z.number().int().min(0), attachMs: z.number() }),
);

/** Destination: pull one pre-copy round from the source into this host's page store. */
export const PrecopyRound = method(
  'migration/precopyRound',
  z.object({
    migrationId, source: z.object({ host: hostName, url: z.string().max(256) }), token: z.string().max(128),
    round: z.number().int().min(0).max(10_000),
    /** Fraction of the container's CPU to take away during this round (auto-converge); 0 for none. */
    throttle: z.number().min(0).max(0.95),
  }),
  RoundStats.extend({ receiveMs: z.number() }),
);

/** Peer agent → source agent: stream one round's dirty pages as page records (src/protocol/pages.ts). */
export const TransferPrecopy = method(
  'transfer/precopy',
  z.object({ migrationId, token: z.string().max(128), round: z.number().int().min(0).max(10_000), throttle: z.number().min(0).max(0.95) }),
  RoundStats,
);

/** Source: freeze and dump the container (it stops running here) and offer its state for transfer. */
export const Checkpoint = method(
  'migration/checkpoint',
  z.object({
    migrationId, containerId: z.string(), peer: hostName, token: z.string().max(128),
    /**
     * Pure post-copy: `dump --lazy-pages` and the dumped tasks killed at once (CRIU keeps serving their pages
     * from its page pipes, docs/postcopy.md), so the destination fetches every page from here after it runs.
     */
    postcopy: z.boolean().default(false),
  }),
  z.object({ manifest: Manifest, imageBytes: z.number().int().min(0), timings: Timings }),
);

/** Peer agent → source agent of a post-copy: pages of the frozen dump, up to 4 MiB per request. */
export const TransferPages = method(
  'transfer/pages',
  z.object({ migrationId, token: z.string().max(128), pid: z.number().int().min(1), vaddr: z.number().int().min(0), nr: z.number().int().min(1).max(1024) }),
  z.object({ data: z.instanceof(Uint8Array) }),
);

/** Destination: pull the state from the source agent, verifying every chunk. */
export const Pull = method(
  'migration/pull',
  z.object({ migrationId, source: z.object({ host: hostName, url: z.string().max(256) }), token: z.string().max(128), manifest: Manifest }),
  z.object({ bytes: z.number().int().min(0), timings: Timings }),
);

/** Destination: restore from the pulled images and report the container running. */
export const Restore = method(
  'migration/restore',
  z.object({ migrationId }),
  z.object({ containerId: z.string(), pid: z.number().int(), timings: Timings }),
);

/** Source, after the commit point: remove the frozen original and its images. Idempotent. */
export const CommitSource = method('migration/commitSource', z.object({ migrationId }), z.object({ removed: z.boolean() }));
/** How long a destination waits for a lazy restore's memory to arrive in full before FinishTarget gives up. */
export const LAZY_FILL_TIMEOUT_MS = 10 * 60_000;
/** Destination, after the commit point: wait for a lazy fill to complete, drop transfer leftovers. Idempotent. */
export const FinishTarget = method('migration/finishTarget', z.object({ migrationId }), z.object({
  lazyFillMs: z.number().optional(),
  /** Post-copy: the page bytes fetched from the source after the destination ran (the report counts them). */
  fetchedBytes: z.number().int().min(0).optional(),
}));
/** Destination, before the commit point: remove everything this migration created. Idempotent. */
export const AbortTarget = method('migration/abortTarget', z.object({ migrationId }), z.object({ removed: z.boolean() }));
/** Source, before the commit point: make sure the container runs here again with its state. Idempotent. */
export const RollbackSource = method(
  'migration/rollbackSource',
  z.object({ migrationId }),
  /**
   * lost: the source cannot run it again (a pod's container whose task containerd already saw end): the
   * migration is reported as lost, never as a rollback.
   */
  z.object({ restored: z.boolean(), running: z.boolean(), lost: z.boolean().default(false) }),
);

/** Peer agent → source agent: stream the manifest's entries as chunk frames tagged with this request's id. */
export const TransferPull = method(
  'transfer/pull',
  z.object({ migrationId, token: z.string().max(128) }),
  z.object({
    entries: z.array(z.object({ bytes: z.number().int().min(0), chunks: z.number().int().min(0) })).max(100_000),
    /** A lazy dump: how long its killed tasks took to free their addresses, and how much of it the stream did not hide. */
    releaseMs: z.number().min(0).optional(),
    releaseWaitMs: z.number().min(0).optional(),
  }),
);

/** Controller → agent: the drain this host's notice asked for is done; tell the provider (Azure's StartRequests). */
export const AcknowledgeNotice = method('spot/acknowledge', z.object({ id: z.string().max(256) }), z.object({ acknowledged: z.boolean() }));

/**
 * Destination, pods only: wait (bounded) until the replacement pod's container has come to claim the staged
 * state. The source freezes only then, so the freeze does not include the replacement pod's start.
 */
export const AwaitReplacement = method(
  'migration/awaitReplacement',
  z.object({ migrationId, waitMs: z.number().int().min(0).max(600_000) }),
  z.object({ arrived: z.boolean(), waitedMs: z.number() }),
);

// Shim → its own host's agent (role shim): the destination side of a pod migration.

/**
 * The replacement pod's container is being created: if a migration of this pod container is staged here,
 * wait (bounded) until its state has arrived, put its rw layer into upperDir and name the images to restore
 * from; null: nothing staged, start fresh.
 */
export const ShimClaim = method(
  'shim/claim',
  z.object({ pod: PodIdentity, containerId: CriContainerId, upperDir: str, waitMs: z.number().int().min(0).max(600_000) }),
  z.object({ migrationId: migrationId.nullable(), imagesDir: str.nullable() }),
);
/** The claimed container's Start came back: restored and running with this pid, or why not. */
export const ShimRestored = method(
  'shim/restored',
  z.object({ migrationId, containerId: CriContainerId, pid: z.number().int().min(0), error: str.nullable() }),
  z.object({}),
);

export const AgentApi = {
  AgentInfo, ListContainers, InspectForMigration, PrepareTarget, SampleDirtyRate, PrecopyStart, PrecopyRound, Checkpoint, Pull, Restore,
  CommitSource, FinishTarget, AbortTarget, RollbackSource, TransferPull, TransferPrecopy, AcknowledgeNotice, ShimClaim, ShimRestored,
  AwaitReplacement, TransferPages,
} as const;

// ---------------------------------------------------------------------------------------------------
// Controller API: called by the CLI.

export const HostStatus = z.object({
  name: hostName,
  url: z.string(),
  connected: z.boolean(),
  caps: CapabilitiesSchema.nullable(),
  error: z.string().nullable(),
  /** No migration may land here: a drain is under way or an operator said so. */
  cordoned: z.boolean(),
});
export type HostStatus = z.infer<typeof HostStatus>;

export const Phase = z.enum(['preflight', 'prepare', 'precopy', 'checkpoint', 'transfer', 'restore', 'commit', 'cleanup', 'rollback']);
export type PhaseName = z.infer<typeof Phase>;

/** How the memory moves: all of it inside the freeze, or in rounds while the container runs. */
export const MigrationMode = z.enum(['stop-and-copy', 'precopy', 'postcopy']);
export type MigrationMode = z.infer<typeof MigrationMode>;
/** What a caller may ask for: a mode, or `auto` (the controller measures and picks; the report says why). */
export const RequestedMode = z.enum(['auto', 'stop-and-copy', 'precopy', 'postcopy']);
export type RequestedMode = z.infer<typeof RequestedMode>;

/** How `--mode auto` chose (src/migration/mode-choice.ts). */
export const ModeChoiceReport = z.object({
  requested: RequestedMode,
  reason: z.string().max(64),
  explain: z.string().max(1024),
  dirtyPagesPerSec: z.number().nullable(),
  linkBytesPerSec: z.number(),
  predictedStopCopyFreezeMs: z.number(),
  predictedPrecopyFreezeMs: z.number().nullable(),
  predictedPrecopyTotalMs: z.number().nullable(),
  predictedPostcopyFreezeMs: z.number().nullable().optional(),
});
export type ModeChoiceReport = z.infer<typeof ModeChoiceReport>;

/** Why pre-copy stopped and what it predicted for the freeze. */
export const Convergence = z.object({
  reason: z.string().max(64),
  explain: z.string().max(1024),
  predictedFreezeMs: z.number(),
  throttle: z.number(),
});

export const MigrationReport = z.object({
  migrationId,
  container: z.string(),
  source: hostName,
  destination: hostName,
  strategy: MigrationMode,
  /**
   * lost: failed after the source could no longer run it (a pod's container whose task had ended).
   * staged: only from MigratePod with release "staged": the state is on the destination, waiting for the
   * replacement pod; the migration goes on and its final report follows as a cluster event.
   */
  result: z.enum(['succeeded', 'rolled_back', 'failed', 'lost', 'staged', 'dry_run']),
  /** Freeze: from the moment the source stopped running to the moment the destination ran. */
  downtimeMs: z.number().nullable(),
  totalMs: z.number(),
  bytesTotal: z.number().int().min(0),
  phases: z.record(z.string().max(64), z.number()),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  checks: z.array(z.string()).optional(),
  /** Pre-copy only: every round, and why the rounds stopped. */
  rounds: z.array(RoundStats.extend({ receiveMs: z.number(), throttle: z.number() })).max(10_000).optional(),
  convergence: Convergence.optional(),
  /** Only when the caller asked for `auto`: what was measured and why this strategy. */
  modeChoice: ModeChoiceReport.optional(),
});
export type MigrationReport = z.infer<typeof MigrationReport>;

export const ListHosts = method('cluster/hosts', z.object({}), z.array(HostStatus).max(1000));
export const ClusterContainers = method('cluster/containers', z.object({ all: z.boolean() }), z.array(ContainerSummary).max(100_000));
export const StartMigration = method(
  'migration/start',
  z.object({
    container: str,
    to: hostName,
    from: hostName.optional(),
    dryRun: z.boolean(),
    timeoutMs: z.number().int().min(1000).max(24 * 3600_000),
    /** Omitted: stop-and-copy (the API's default stays what it was; the CLI defaults to auto). */
    mode: RequestedMode.optional(),
    /** Pre-copy: the freeze to aim for, the round cap, and whether to throttle a writer that outruns the link. */
    maxDowntimeMs: z.number().int().min(1).max(3600_000).optional(),
    maxRounds: z.number().int().min(1).max(1000).optional(),
    autoConverge: z.boolean().optional(),
  }),
  MigrationReport,
);

/** Containers opt in to being moved off a doomed host with this label; a higher priority label goes first. */
export const OPT_IN_LABEL = 'ferry.dev/migrate';
export const PRIORITY_LABEL = 'ferry.dev/priority';

export const PlannedMoveSchema = z.object({
  container: z.string(),
  to: z.string().nullable(),
  estimateMs: z.number(),
  startsAtMs: z.number(),
  endsAtMs: z.number(),
  fits: z.boolean(),
  reason: z.string().nullable(),
});

export const DrainReport = z.object({
  host: hostName,
  reason: z.string(),
  /** Time that was left when the drain began, in ms; null without a deadline. */
  remainingMs: z.number().nullable(),
  plan: z.array(PlannedMoveSchema),
  results: z.array(z.object({ container: z.string(), to: z.string(), result: z.string(), downtimeMs: z.number().nullable(), error: z.string().nullable() })),
  dryRun: z.boolean(),
  totalMs: z.number(),
});
export type DrainReport = z.infer<typeof DrainReport>;

export const Drain = method('cluster/drain', z.object({ host: hostName, deadlineMs: z.number().int().min(0).nullable(), dryRun: z.boolean() }), DrainReport);
export const Cordon = method('cluster/cordon', z.object({ host: hostName, cordoned: z.boolean() }), z.object({ host: hostName, cordoned: z.boolean() }));

/** Subscribes this connection to cluster events (notices, drains, migrations) until it closes. */
export const WatchEvents = method('cluster/watch', z.object({}), z.object({}));

/**
 * Shim → controller: a pod's container is being deleted on `host`; move it to `to` (or a host the controller
 * picks), where its replacement pod will restore it. Stop-and-copy, bounded by the grace period.
 */
export const MigratePod = method(
  'pod/migrate',
  z.object({
    host: hostName,
    containerId: CriContainerId,
    to: hostName.nullable(),
    maxDowntimeMs: z.number().int().min(1).max(3600_000).nullable(),
    timeoutMs: z.number().int().min(1000).max(24 * 3600_000),
    /**
     * When the deletion may go on: once the container runs on the destination (an owner that creates the
     * replacement while the old pod terminates), or once its state is staged there (a StatefulSet, which
     * creates the same-named replacement only after the old pod is gone). timeoutMs bounds the migration up
     * to that point; a staged state then waits REPLACEMENT_WAIT_MS for its replacement.
     */
    release: z.enum(['running', 'staged']).default('running'),
    /** How the memory moves (pod annotation ferry.dev/mode); stop-and-copy unless the pod asks. */
    mode: RequestedMode.default('stop-and-copy'),
  }),
  MigrationReport,
);
/** How long a staged pod state waits for its replacement pod (release "staged") before it counts as lost. */
export const REPLACEMENT_WAIT_MS = 10 * 60_000;

/**
 * Shim → controller: a pod container is being created on `host`. Is it the replacement of one that is being
 * (or is about to be) migrated here? inbound: a migration of this pod container to `host` is under way (its
 * state is staged there; ShimClaim waits for it to arrive). While a container of the same identity still runs
 * on another host (its deletion may not have reached its shim yet) the answer waits, up to waitMs.
 */
export const ExpectPod = method(
  'pod/expect',
  z.object({ host: hostName, pod: PodIdentity, waitMs: z.number().int().min(0).max(600_000) }),
  z.object({ inbound: z.boolean(), reason: str }),
);

export const ControllerApi = { ListHosts, ClusterContainers, StartMigration, Drain, Cordon, WatchEvents, MigratePod, ExpectPod } as const;

// ---------------------------------------------------------------------------------------------------
// Events.

export const Progress = event(
  'migration/progress',
  z.object({
    migrationId,
    phase: Phase,
    state: z.enum(['started', 'progress', 'done', 'failed']),
    bytes: z.number().int().min(0).optional(),
    totalBytes: z.number().int().min(0).optional(),
    message: z.string().max(1024).optional(),
    /** Pre-copy rounds: which round this is and what it moved. */
    round: RoundStats.partial().optional(),
  }),
);
export type ProgressEvent = z.infer<typeof Progress.payload>;

/** Agent → controller: the provider announced this host's end (or recommends leaving it). */
export const HostNotice = event(
  'host/notice',
  z.object({
    host: hostName,
    provider: z.enum(['aws', 'gcp', 'azure', 'manual']),
    kind: z.enum(['termination', 'rebalance', 'preemption']),
    id: z.string().max(256),
    /** Ms left at the moment the agent sent it (converted from the provider's time on the agent, once). */
    remainingMs: z.number().min(0).nullable(),
  }),
);
export type HostNoticeEvent = z.infer<typeof HostNotice.payload>;

/** Controller → watching CLIs: something happened in the cluster. */
export const ClusterEvent = event(
  'cluster/event',
  z.object({
    type: z.enum(['notice', 'drain-started', 'drain-finished', 'migration']),
    host: z.string().max(64).nullable(),
    message: z.string().max(4096),
    data: z.record(z.string(), z.unknown()).optional(),
  }),
);
export type ClusterEventPayload = z.infer<typeof ClusterEvent.payload>;
