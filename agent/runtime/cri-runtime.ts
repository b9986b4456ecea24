// containerd (CRI) adapter: finds a pod's container from what containerd and runc-v2 leave on disk, no gRPC.
//
// The agent never creates or starts CRI containers (the pod's owner and kubelet do); it only needs to find one,
// read its identity and rw layer, checkpoint it with runc, and kill a restored copy on abort.

import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, PodIdentity, CriContainerId, podKey, type ContainerSummary } from '../../src/protocol/index.js';
import { processAlive } from '../../src/util/process.js';
import { run } from '../../src/util/exec.js';

export const CRI_NAMESPACE = 'k8s.io';
/** The pod annotation (passed through to the OCI spec by the CRI runtime's pod_annotations) that opts in. */
export const MIGRATE_ANNOTATION = 'ferry.dev/migrate';

export interface CriPaths {
  /** containerd's --state dir: bundles live under io.containerd.runtime.v2.task/<ns>/<id>. */
  stateDir: string;
  /** The runc root the runtime's options name (runc-v2 appends the namespace). */
  runcRoot: string;
}

export interface CriContainer {
  id: string;
  bundle: string;
  pid: number;
  running: boolean;
  pod: PodIdentity;
  optedIn: boolean;
  /** The sandbox's shared-memory dir the container sees as /dev/shm. */
  shmDir: string | null;
  /** The image as the pod spec named it (CRI's image-name annotation), '' if containerd did not say. */
  image: string;
  upperDir: string | null;
  rssBytes: number;
  /** Why this container cannot be migrated; empty when it can. */
  rejectReasons: string[];
}

interface OciMount { destination?: string; type?: string; source?: string }
interface OciSpec { annotations?: Record<string, string>; root?: { path?: string }; mounts?: OciMount[] }

/** The pod's shared memory: CRI binds the sandbox's tmpfs here; its files travel with the container. */
export const POD_SHM = '/dev/shm';
/** Bind mounts CRI itself makes for every container, rebuilt by the replacement pod; anything else is the pod's data. */
const CRI_BINDS = new Set(['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/dev/termination-log', POD_SHM]);

/** Pure: the bind mounts of a pod container that would not travel (emptyDir, hostPath, PVCs), and its shm dir. */
export function podMounts(mounts: OciMount[]): { shmDir: string | null; foreign: string[] } {
  let shmDir: string | null = null;
  const foreign: string[] = [];
  for (const m of mounts) {
    if (m.type !== 'bind' || !m.destination) continue;
    if (m.destination === POD_SHM) shmDir = m.source ?? null;
    else if (!CRI_BINDS.has(m.destination)) foreign.push(m.destination);
  }
  return { shmDir, foreign };
}

/** The /dev/shm source of a container's bundle (the replacement's, at its Create). */
export async function shmDirOf(bundle: string): Promise<string | null> {
  const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as OciSpec;
  return podMounts(spec.mounts ?? []).shmDir;
}

/** Pure: a pod container's identity from its OCI annotations, or null for a sandbox or a non-CRI container. */
export function podOf(annotations: Record<string, string>): PodIdentity | null {
  if (annotations['io.kubernetes.cri.container-type'] !== 'container') return null;
  const p = PodIdentity.safeParse({
    namespace: annotations['io.kubernetes.cri.sandbox-namespace'],
    pod: annotations['io.kubernetes.cri.sandbox-name'],
    container: annotations['io.kubernetes.cri.container-name'],
  });
  return p.success ? p.data : null;
}

/** Pure: the overlay upperdir of the mount at `target` in a /proc/<pid>/mountinfo text. */
export function upperDirOf(mountinfo: string, target: string): string | null {
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f[4] !== target) continue;
    const sep = f.indexOf('-');
    if (sep < 0 || f[sep + 1] !== 'overlay') continue;
    const m = /(?:^|,)upperdir=([^,]+)/.exec(f[sep + 3] ?? '');
    if (m?.[1]) return m[1].replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return null;
}

export class CriRuntime {
  constructor(readonly paths: CriPaths) {}

  private bundleRoot(): string {
    return join(this.paths.stateDir, 'io.containerd.runtime.v2.task', CRI_NAMESPACE);
  }

  /** runc's root for this namespace: where `runc checkpoint` finds the container. */
  runcRoot(): string {
    return join(this.paths.runcRoot, CRI_NAMESPACE);
  }

  async ids(): Promise<string[]> {
    return (await readdir(this.bundleRoot()).catch(() => [] as string[])).filter((n) => CriContainerId.safeParse(n).success);
  }

  /** By full id, a unique id prefix of ≥ 12 digits, or `namespace/pod/container`. Null when nothing matches. */
  async find(ref: string): Promise<CriContainer | null> {
    const ids = await this.ids();
    if (/^[0-9a-f]{12,64}$/.test(ref)) {
      const hits = ids.filter((i) => i.startsWith(ref));
      if (hits.length > 1) throw new FerryError('E_INVALID_ARGUMENT', `${ref} is ambiguous among this host's pod containers`);
      return hits[0] ? this.describe(hits[0]) : null;
    }
    if (!/^[^/]+\/[^/]+\/[^/]+$/.test(ref)) return null;
    for (const id of ids) {
      const c = await this.describe(id).catch(() => null);
      if (c && `${c.pod.namespace}/${c.pod.pod}/${c.pod.container}` === ref && c.running) return c;
    }
    return null;
  }

  async describe(id: string): Promise<CriContainer | null> {
    // The id becomes a path: only containerd's own form is looked up.
    if (!CriContainerId.safeParse(id).success) return null;
    const bundle = join(this.bundleRoot(), id);
    let spec: OciSpec;
    try {
      spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as OciSpec;
    } catch {
      return null;
    }
    const pod = podOf(spec.annotations ?? {});
    if (!pod) return null;
    const pid = Number((await readFile(join(bundle, 'init.pid'), 'utf8').catch(() => '0')).trim()) || 0;
    const running = pid > 0 && processAlive(pid);
    const reasons: string[] = [];
    if (!running) reasons.push('container is not running');
    const mounts = podMounts(spec.mounts ?? []);
    // Volumes (emptyDir, hostPath, PVCs) are not Ferry's to move: refusing beats restoring without their data.
    for (const d of mounts.foreign) reasons.push(`volume mounted at ${d} cannot be moved (only the rw layer and /dev/shm travel)`);
    let upperDir: string | null = null;
    if (running) {
      // runc-v2 mounts the snapshot at <bundle>/rootfs in the host's mount namespace.
      upperDir = upperDirOf(await readFile('/proc/self/mountinfo', 'utf8'), join(bundle, 'rootfs'));
      if (!upperDir) reasons.push('rootfs is not an overlay snapshot');
    }
    return {
      id, bundle, pid, running, pod, optedIn: spec.annotations?.[MIGRATE_ANNOTATION] === 'true', upperDir,
      image: spec.annotations?.['io.kubernetes.cri.image-name'] ?? '', shmDir: mounts.shmDir,
      rssBytes: running ? await rssOf(pid) : 0, rejectReasons: reasons,
    };
  }

  /** Pod containers for `ferry ps`: named namespace/pod/container; no labels, so a drain never picks them (their pod's deletion moves them). */
  async list(all: boolean, host: string): Promise<ContainerSummary[]> {
    const out: ContainerSummary[] = [];
    for (const id of await this.ids()) {
      const c = await this.describe(id).catch(() => null);
      if (!c || (!all && !c.running)) continue;
      out.push({
        host, id, name: podKey(c.pod), image: c.image, state: c.running ? 'running' : 'exited',
        status: `pod container (containerd)${c.optedIn ? ', ferry.dev/migrate' : ''}`, labels: {},
      });
    }
    return out;
  }

  /** The bundle of a container of this host's containerd. */
  bundleOf(id: string): string {
    if (!CriContainerId.safeParse(id).success) throw new FerryError('E_INVALID_ARGUMENT', `bad container id ${id.slice(0, 80)}`);
    return join(this.bundleRoot(), id);
  }

  /** SIGKILL for a restored copy that must not run (abort before the commit point). */
  async kill(runc: string, id: string, signal?: AbortSignal): Promise<boolean> {
    const r = await run(runc, ['--root', this.runcRoot(), 'kill', id, 'KILL'], { allowFailure: true, ...(signal ? { signal } : {}) });
    return r.code === 0;
  }
}

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}
