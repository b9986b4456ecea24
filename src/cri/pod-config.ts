// The CRI configs kubelet would build for a pod (pure): sandbox config, container configs, labels, annotations.
//
// Modelled on kubelet's kuberuntime (pkg/kubelet/kuberuntime: kuberuntime_sandbox.go generatePodSandboxConfig,
// kuberuntime_container.go generateContainerConfig, labels.go newPodLabels/newContainerLabels/
// newContainerAnnotations), for what Ferry's lab runs: hostNetwork pods, BestEffort QoS, no volumes.

import type { ContainerConfig, KeyValue, Labels, NamespaceOption, PodSandboxConfig } from './types.js';

/** The label and annotation keys kubelet sets (pkg/kubelet/types/labels.go, kuberuntime/labels.go). */
export const K8S = {
  podName: 'io.kubernetes.pod.name',
  podNamespace: 'io.kubernetes.pod.namespace',
  podUid: 'io.kubernetes.pod.uid',
  containerName: 'io.kubernetes.container.name',
  containerHash: 'io.kubernetes.container.hash',
  restartCount: 'io.kubernetes.container.restartCount',
  terminationMessagePath: 'io.kubernetes.container.terminationMessagePath',
  terminationMessagePolicy: 'io.kubernetes.container.terminationMessagePolicy',
  terminationGracePeriod: 'io.kubernetes.pod.terminationGracePeriod',
} as const;

/** kubelet never gives a container less than this to stop (kuberuntime_container.go minimumGracePeriodInSeconds). */
export const MIN_GRACE_PERIOD_SEC = 2;
/** The pod API's default terminationGracePeriodSeconds. */
export const DEFAULT_GRACE_PERIOD_SEC = 30;
/** BestEffort QoS: what kubelet gives a container without requests (cm/qos: MinShares, qos/policy.go). */
export const BEST_EFFORT = { cpuShares: 2, oomScoreAdj: 1000, cpuPeriod: 100_000 } as const;

/** securitycontext.DefaultMaskedPaths / DefaultReadonlyPaths (ProcMount Default). */
export const DEFAULT_MASKED_PATHS = [
  '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
] as const;
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'] as const;

/** One container of a pod spec (the subset of core/v1 Container Ferry's lab uses). */
export interface ContainerSpec {
  name: string;
  /** As written in a pod spec: `ferry/redis:7`; sent to CRI fully qualified (`docker.io/ferry/redis:7`). */
  image: string;
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  workingDir?: string;
}

/** A hostNetwork pod (the subset of core/v1 Pod Ferry's lab uses). */
export interface PodSpec {
  name: string;
  namespace: string;
  uid: string;
  /** The sandbox's attempt: 0 for a new pod, +1 each time kubelet recreates its sandbox. */
  attempt?: number;
  labels?: Labels;
  annotations?: Labels;
  /** spec.runtimeClassName's handler: `runc` or `ferry`. */
  runtimeHandler?: string;
  terminationGracePeriodSeconds?: number;
  containers: ContainerSpec[];
}

/** Where the pods of one node go: the node's log root and cgroup root (src/cri/paths.ts). */
export interface NodeLayout { podLogRoot: string; cgroupRoot: string }

/** Docker's reference normalisation, as containerd's CRI applies it: `ferry/redis:7` → `docker.io/ferry/redis:7`. */
export function normalizeImage(ref: string): string {
  const slash = ref.indexOf('/');
  const first = slash < 0 ? '' : ref.slice(0, slash);
  const hasDomain = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost');
  let name = hasDomain ? ref : `docker.io/${slash < 0 ? `library/${ref}` : ref}`;
  const lastSegment = name.slice(name.lastIndexOf('/') + 1);
  if (!lastSegment.includes(':') && !lastSegment.includes('@')) name += ':latest';
  return name;
}

/** kubelet's pod log directory: `<root>/<namespace>_<name>_<uid>` (kuberuntime/helpers.go BuildPodLogsDirectory). */
export const podLogDirectory = (root: string, pod: Pick<PodSpec, 'namespace' | 'name' | 'uid'>): string =>
  `${root}/${pod.namespace}_${pod.name}_${pod.uid}`;

/** The pod's cgroup with the cgroupfs driver, BestEffort: `<root>/kubepods/besteffort/pod<uid>`. */
export const podCgroupParent = (cgroupRoot: string, uid: string): string => `${cgroupRoot}/kubepods/besteffort/pod${uid}`;

/** kubelet's namespacesForPod for hostNetwork pods: network NODE, PID per container, one IPC per pod. */
export const HOST_NETWORK_NAMESPACES: NamespaceOption = { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' };

/** newPodLabels: the pod's labels plus its identity. */
export function podLabels(pod: PodSpec): Labels {
  return { ...pod.labels, [K8S.podName]: pod.name, [K8S.podNamespace]: pod.namespace, [K8S.podUid]: pod.uid };
}

/** newContainerLabels: identity only (a pod's own labels stay on the sandbox). */
export function containerLabels(pod: PodSpec, c: ContainerSpec): Labels {
  return { [K8S.podName]: pod.name, [K8S.podNamespace]: pod.namespace, [K8S.podUid]: pod.uid, [K8S.containerName]: c.name };
}

export const gracePeriodOf = (pod: PodSpec): number => pod.terminationGracePeriodSeconds ?? DEFAULT_GRACE_PERIOD_SEC;

/** newContainerAnnotations: hash, restart count, termination message settings, the pod's grace period. */
export function containerAnnotations(pod: PodSpec, c: ContainerSpec, restartCount = 0): Labels {
  return {
    [K8S.containerHash]: containerHash(c),
    [K8S.restartCount]: String(restartCount),
    [K8S.terminationMessagePath]: '/dev/termination-log',
    [K8S.terminationMessagePolicy]: 'File',
    [K8S.terminationGracePeriod]: String(gracePeriodOf(pod)),
  };
}

/** Like kubelet's HashContainer: FNV-1a 32 over the container's spec, in hex; changes whenever the spec does. */
export function containerHash(c: ContainerSpec): string {
  const canonical = JSON.stringify([c.name, c.image, c.command ?? null, c.args ?? null, c.workingDir ?? null,
    Object.entries(c.env ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(canonical, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

/** generatePodSandboxConfig for a hostNetwork pod: no hostname (a shared UTS namespace cannot have its own). */
export function sandboxConfig(pod: PodSpec, node: NodeLayout): PodSandboxConfig {
  return {
    metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, attempt: pod.attempt ?? 0 },
    log_directory: podLogDirectory(node.podLogRoot, pod),
    labels: podLabels(pod),
    annotations: { ...pod.annotations },
    linux: {
      cgroup_parent: podCgroupParent(node.cgroupRoot, pod.uid),
      security_context: { namespace_options: HOST_NETWORK_NAMESPACES, privileged: false },
    },
  };
}

/** generateContainerConfig for a BestEffort container of `pod`. */
export function containerConfig(pod: PodSpec, c: ContainerSpec, restartCount = 0): ContainerConfig {
  const envs: KeyValue[] = Object.entries(c.env ?? {}).map(([key, value]) => ({ key, value }));
  const config: ContainerConfig = {
    metadata: { name: c.name, attempt: restartCount },
    image: { image: normalizeImage(c.image), user_specified_image: c.image },
    envs,
    labels: containerLabels(pod, c),
    annotations: containerAnnotations(pod, c, restartCount),
    log_path: `${c.name}/${restartCount}.log`,
    stdin: false,
    tty: false,
    linux: {
      resources: { cpu_period: BEST_EFFORT.cpuPeriod, cpu_shares: BEST_EFFORT.cpuShares, oom_score_adj: BEST_EFFORT.oomScoreAdj },
      security_context: {
        privileged: false,
        namespace_options: HOST_NETWORK_NAMESPACES,
        masked_paths: [...DEFAULT_MASKED_PATHS],
        readonly_paths: [...DEFAULT_READONLY_PATHS],
      },
    },
  };
  if (c.command) config.command = c.command;
  if (c.args) config.args = c.args;
  if (c.workingDir) config.working_dir = c.workingDir;
  return config;
}
