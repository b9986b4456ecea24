// A kubelet stand-in: the exact CRI call sequences kubelet makes to start and to delete a pod, with timings.
//
// Start (kuberuntime_manager.go SyncPod): RunPodSandbox, then for each container in order CreateContainer +
// StartContainer; a failed container does not stop the next one. Delete (killPodWithSyncResult, then the
// garbage collector): StopContainer with the grace period for every container in parallel, StopPodSandbox
// even when a StopContainer failed, and only once everything stopped, RemoveContainer for each and
// RemovePodSandbox; kubelet then removes the pod's cgroup. A failed step is reported with its typed error
// (src/cri/errors.ts), never thrown: kubelet would retry the deletion on its next sync.

import { readdirSync, rmdirSync } from 'node:fs';
import { asFerryError, type FerryError } from '../protocol/errors.js';
import type { CriClient } from './client.js';
import {
  MIN_GRACE_PERIOD_SEC, containerConfig, gracePeriodOf, podCgroupParent, sandboxConfig, type NodeLayout, type PodSpec,
} from './pod-config.js';
import type { PodSandboxConfig } from './types.js';

/** The CRI calls the stand-in makes (CriClient has them; tests may pass a fake). */
export type CriRuntime = Pick<CriClient,
  'runPodSandbox' | 'createContainer' | 'startContainer' | 'stopContainer' | 'stopPodSandbox' | 'removeContainer' |
  'removePodSandbox' | 'listContainers'>;

export type StepName =
  | 'RunPodSandbox' | 'CreateContainer' | 'StartContainer'
  | 'StopContainer' | 'StopPodSandbox' | 'RemoveContainer' | 'RemovePodSandbox' | 'RemovePodCgroup';

/** One CRI call as kubelet saw it. */
export interface Step {
  step: StepName;
  /** Container name for container steps, else the pod's name. */
  name: string;
  /** Sandbox or container id ('' if the call failed before one existed). */
  id: string;
  ms: number;
  error?: FerryError;
}

export interface RunPodResult {
  /** '' when RunPodSandbox failed. */
  podId: string;
  sandboxConfig: PodSandboxConfig;
  /** Container name → id, for the containers that were created. */
  containers: Record<string, string>;
  steps: Step[];
  /** Every step succeeded. */
  ok: boolean;
}

export interface DeletePodResult {
  podId: string;
  /** The grace period passed to StopContainer (at least MIN_GRACE_PERIOD_SEC, as kubelet enforces). */
  graceSec: number;
  steps: Step[];
  /** The pod is gone: every container and the sandbox stopped and removed. */
  ok: boolean;
}

export interface KubeletOptions {
  /** Runtime handler when the pod names none. */
  defaultRuntimeHandler?: string;
  /** Where pod cgroups live (`/sys/fs/cgroup` holds the v1 hierarchies or the v2 tree). */
  cgroupMount?: string;
}

/** One node's kubelet, reduced to its CRI sequences. */
export class KubeletStandIn {
  private readonly handler: string;
  private readonly cgroupMount: string;
  constructor(private readonly cri: CriRuntime, private readonly node: NodeLayout, o: KubeletOptions = {}) {
    this.handler = o.defaultRuntimeHandler ?? 'runc';
    this.cgroupMount = o.cgroupMount ?? '/sys/fs/cgroup';
  }

  /** Starts `pod`: its sandbox, then each container in order. */
  async runPod(pod: PodSpec, signal?: AbortSignal): Promise<RunPodResult> {
    const sb = sandboxConfig(pod, this.node);
    const steps: Step[] = [];
    const containers: Record<string, string> = {};
    const sandbox = await timed(steps, 'RunPodSandbox', pod.name, () => this.cri.runPodSandbox(sb, pod.runtimeHandler ?? this.handler, signal));
    if (sandbox === undefined) return { podId: '', sandboxConfig: sb, containers, steps, ok: false };
    steps[steps.length - 1]!.id = sandbox;
    for (const c of pod.containers) {
      const id = await timed(steps, 'CreateContainer', c.name, () => this.cri.createContainer(sandbox, containerConfig(pod, c), sb, signal));
      if (id === undefined) continue;
      steps[steps.length - 1]!.id = id;
      containers[c.name] = id;
      await timed(steps, 'StartContainer', c.name, () => this.cri.startContainer(id, signal), id);
    }
    return { podId: sandbox, sandboxConfig: sb, containers, steps, ok: steps.every((s) => !s.error) };
  }

  /**
   * Deletes the pod with sandbox `podId` as kubelet does after `kubectl delete pod` (the API server's
   * grace period `graceSec`, default the pod's terminationGracePeriodSeconds as recorded on its containers).
   */
  async deletePod(podId: string, graceSec: number, signal?: AbortSignal): Promise<DeletePodResult> {
    const grace = Math.max(MIN_GRACE_PERIOD_SEC, Math.ceil(graceSec));
    const steps: Step[] = [];
    let pod = podId;
    let uid = '';
    let listed;
    try {
      listed = await this.cri.listContainers({ pod_sandbox_id: podId }, signal);
    } catch (e) {
      // kubelet's view of the pod comes from the runtime: without it there is nothing it can stop.
      return { podId, graceSec: grace, steps: [{ step: 'StopContainer', name: podId, id: '', ms: 0, error: asFerryError(e, 'E_CRI') }], ok: false };
    }
    const first = listed[0];
    if (first) {
      pod = first.labels['io.kubernetes.pod.name'] ?? podId;
      uid = first.labels['io.kubernetes.pod.uid'] ?? '';
    }
    const stops: Step[] = await Promise.all(listed.map(async (c) => {
      const one: Step[] = [];
      await timed(one, 'StopContainer', c.metadata?.name ?? c.id, () => this.cri.stopContainer(c.id, grace, signal), c.id);
      return one[0]!;
    }));
    steps.push(...stops);
    await timed(steps, 'StopPodSandbox', pod, () => this.cri.stopPodSandbox(podId, signal), podId);
    if (steps.some((s) => s.error)) return { podId, graceSec: grace, steps, ok: false };
    for (const c of listed) await timed(steps, 'RemoveContainer', c.metadata?.name ?? c.id, () => this.cri.removeContainer(c.id, signal), c.id);
    await timed(steps, 'RemovePodSandbox', pod, () => this.cri.removePodSandbox(podId, signal), podId);
    if (uid) await timed(steps, 'RemovePodCgroup', pod, async () => this.removePodCgroup(uid), podId);
    return { podId, graceSec: grace, steps, ok: steps.every((s) => !s.error) };
  }

  /** The grace period kubelet would use for a pod created from `pod`. */
  static gracePeriod(pod: PodSpec): number {
    return gracePeriodOf(pod);
  }

  /** kubelet's pod cgroup manager Destroy: the pod's cgroup in every hierarchy, once runc removed the containers'. */
  private removePodCgroup(uid: string): void {
    const rel = podCgroupParent(this.node.cgroupRoot, uid);
    let hierarchies: string[];
    try {
      hierarchies = readdirSync(this.cgroupMount, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => `${this.cgroupMount}/${d.name}`);
    } catch {
      return;
    }
    for (const dir of [this.cgroupMount, ...hierarchies]) {
      try {
        rmdirSync(`${dir}${rel}`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  }
}

/** Runs one CRI call, records it in `steps` (with its error, if any) and returns its value or undefined. */
async function timed<T>(steps: Step[], step: StepName, name: string, f: () => Promise<T>, id = ''): Promise<T | undefined> {
  const t0 = performance.now();
  try {
    const v = await f();
    steps.push({ step, name, id, ms: Math.round((performance.now() - t0) * 10) / 10 });
    return v;
  } catch (e) {
    steps.push({ step, name, id, ms: Math.round((performance.now() - t0) * 10) / 10, error: asFerryError(e, 'E_CRI') });
    return undefined;
  }
}
