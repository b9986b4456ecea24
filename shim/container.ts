// What the shim knows about a container: parsed once from its Create request and its bundle's OCI config.json.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CreateTaskRequestValue } from './proto/task.js';

/** OCI annotations the shim reads. CRI (containerd 1.6 pkg/cri/annotations) sets the `io.kubernetes.cri.*` ones. */
export const Annotation = {
  CONTAINER_TYPE: 'io.kubernetes.cri.container-type',
  SANDBOX_ID: 'io.kubernetes.cri.sandbox-id',
  CONTAINER_NAME: 'io.kubernetes.cri.container-name',
  SANDBOX_NAME: 'io.kubernetes.cri.sandbox-name',
  SANDBOX_NAMESPACE: 'io.kubernetes.cri.sandbox-namespace',
  SANDBOX_UID: 'io.kubernetes.cri.sandbox-uid',
  MIGRATE: 'ferry.dev/migrate',
  TO: 'ferry.dev/to',
  MAX_DOWNTIME: 'ferry.dev/max-downtime',
  ON_FAILURE: 'ferry.dev/on-failure',
  RELEASE: 'ferry.dev/release',
  MODE: 'ferry.dev/mode',
  GRACE_PERIOD: 'io.kubernetes.pod.terminationGracePeriod',
} as const;

/** Everything the proxy and the hooks need to know about one container of this shim. */
export interface ShimContainer {
  /** containerd's container id (= the task id in every Task request). */
  readonly id: string;
  /** containerd namespace. */
  readonly namespace: string;
  /** The bundle directory (`CreateTaskRequest.bundle`). */
  readonly bundle: string;
  /** CRI's container type; `null` outside CRI (e.g. `ctr run`). */
  readonly kind: 'sandbox' | 'container' | null;
  readonly sandboxId: string | null;
  readonly containerName: string | null;
  /** The pod, when CRI named it. */
  readonly pod: { readonly name: string | null; readonly namespace: string | null; readonly uid: string | null };
  /** `ferry.dev/migrate: "true"`. */
  readonly migrate: boolean;
  /** `ferry.dev/to`: preferred destination host. */
  readonly to: string | null;
  /** `ferry.dev/max-downtime` in ms. */
  readonly maxDowntimeMs: number | null;
  /** `ferry.dev/on-failure`: what a failed migration does with the deletion (default proceed). */
  readonly onFailure: 'proceed' | 'refuse';
  /** `ferry.dev/release`: let the deletion go on once the container runs on the destination (default), or once its state is staged there (StatefulSets). */
  readonly release: 'running' | 'staged';
  /** `ferry.dev/mode`: how the memory moves (default stop-and-copy; `precopy` or `auto` for large, live memory). */
  readonly mode: 'stop-and-copy' | 'precopy' | 'auto';
  /** `io.kubernetes.pod.terminationGracePeriod` in seconds. */
  readonly terminationGracePeriodS: number | null;
  /** The overlay rootfs's `upperdir=` (the container's rw layer), from the Create request's mounts. */
  readonly upperDir: string | null;
  /** Every OCI annotation, as given. */
  readonly annotations: Readonly<Record<string, string>>;
  /** Annotations that were present but could not be understood (ignored; for the log). */
  readonly invalid: readonly string[];
}

/** Default termination grace period (kubelet's default `terminationGracePeriodSeconds`). */
export const DEFAULT_GRACE_PERIOD_S = 30;

/** Whether the shim intercepts this container: an app container (not the sandbox) that opted in. */
export const isOptedIn = (c: ShimContainer): boolean => c.kind === 'container' && c.migrate;

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000 } as const;

/** `"100ms"`, `"1.5s"`, `"2m"` in ms; `null` if it is none of these. */
export function parseDurationMs(s: string): number | null {
  const m = DURATION.exec(s.trim());
  if (m === null) return null;
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/** The OCI spec's annotations; anything that is not a string map counts as none. */
export function annotationsOf(spec: unknown): Record<string, string> {
  const a = (spec as { annotations?: unknown } | null)?.annotations;
  if (typeof a !== 'object' || a === null) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The `upperdir=` option of the first overlay mount, if any. */
export function upperDirOf(rootfs: CreateTaskRequestValue['rootfs']): string | null {
  for (const m of rootfs) {
    if (m.type !== 'overlay') continue;
    const opt = m.options.find((o) => o.startsWith('upperdir='));
    if (opt !== undefined) return opt.slice('upperdir='.length);
  }
  return null;
}

/** Builds the record from a Create request and its bundle's parsed config.json. Pure. */
export function parseShimContainer(req: Pick<CreateTaskRequestValue, 'id' | 'bundle' | 'rootfs'>, spec: unknown, namespace: string): ShimContainer {
  const a = annotationsOf(spec);
  const invalid: string[] = [];
  const str = (k: string): string | null => (a[k] === undefined || a[k] === '' ? null : a[k]);

  const type = str(Annotation.CONTAINER_TYPE);
  let kind: ShimContainer['kind'] = null;
  if (type === 'sandbox' || type === 'container') kind = type;
  else if (type !== null) invalid.push(Annotation.CONTAINER_TYPE);

  const migrateRaw = str(Annotation.MIGRATE);
  if (migrateRaw !== null && migrateRaw !== 'true' && migrateRaw !== 'false') invalid.push(Annotation.MIGRATE);

  const downtimeRaw = str(Annotation.MAX_DOWNTIME);
  const maxDowntimeMs = downtimeRaw === null ? null : parseDurationMs(downtimeRaw);
  if (downtimeRaw !== null && maxDowntimeMs === null) invalid.push(Annotation.MAX_DOWNTIME);

  const failureRaw = str(Annotation.ON_FAILURE);
  const onFailure = failureRaw === 'refuse' ? 'refuse' : 'proceed';
  if (failureRaw !== null && failureRaw !== 'refuse' && failureRaw !== 'proceed') invalid.push(Annotation.ON_FAILURE);

  const releaseRaw = str(Annotation.RELEASE);
  const release = releaseRaw === 'staged' ? 'staged' : 'running';
  if (releaseRaw !== null && releaseRaw !== 'staged' && releaseRaw !== 'running') invalid.push(Annotation.RELEASE);

  const modeRaw = str(Annotation.MODE);
  const mode = modeRaw === 'precopy' || modeRaw === 'auto' ? modeRaw : 'stop-and-copy';
  if (modeRaw !== null && mode !== modeRaw) invalid.push(Annotation.MODE);

  const graceRaw = str(Annotation.GRACE_PERIOD);
  let terminationGracePeriodS: number | null = null;
  if (graceRaw !== null) {
    const n = Number(graceRaw);
    if (/^\d+$/.test(graceRaw) && Number.isSafeInteger(n)) terminationGracePeriodS = n;
    else invalid.push(Annotation.GRACE_PERIOD);
  }

  return {
    id: req.id,
    namespace,
    bundle: req.bundle,
    kind,
    sandboxId: str(Annotation.SANDBOX_ID),
    containerName: str(Annotation.CONTAINER_NAME),
    pod: { name: str(Annotation.SANDBOX_NAME), namespace: str(Annotation.SANDBOX_NAMESPACE), uid: str(Annotation.SANDBOX_UID) },
    migrate: migrateRaw === 'true',
    to: str(Annotation.TO),
    maxDowntimeMs,
    onFailure,
    release,
    mode,
    terminationGracePeriodS,
    upperDir: upperDirOf(req.rootfs),
    annotations: a,
    invalid,
  };
}

/**
 * Reads `<bundle>/config.json` and builds the record. A missing or unreadable spec gives a record with
 * no annotations (not opted in), and `specError` says why, so the proxy can log it and still forward.
 */
export async function readShimContainer(
  req: Pick<CreateTaskRequestValue, 'id' | 'bundle' | 'rootfs'>,
  namespace: string,
): Promise<{ container: ShimContainer; specError: string | null }> {
  try {
    const spec: unknown = JSON.parse(await readFile(join(req.bundle, 'config.json'), 'utf8'));
    return { container: parseShimContainer(req, spec, namespace), specError: null };
  } catch (e: unknown) {
    return { container: parseShimContainer(req, {}, namespace), specError: e instanceof Error ? e.message : String(e) };
  }
}
