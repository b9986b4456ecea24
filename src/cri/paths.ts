// Where one lab host's CRI containerd keeps its sockets, state and pods: the same layout as scripts/containerd.sh.

/** The directories and sockets of host NAME's CRI containerd (docs/containerd.md). */
export interface CriHostPaths {
  /** Host name, as given to `containerd.sh up`. */
  host: string;
  /** containerd's CRI gRPC socket (kubelet's `--container-runtime-endpoint`). */
  socket: string;
  /** Everything under /run: state, sockets, config, runc root. */
  runDir: string;
  /** containerd's root: content store, snapshots, and the pods' log directories. */
  rootDir: string;
  /** The runc root of the `runc` handler's containers; runc-v2 appends the namespace (`k8s.io`). */
  runcRoot: string;
  /** What `containerd-shim-ferry-v1` reads next to the socket. */
  shimConfig: string;
  /** Parent of the pods' log directories (kubelet's /var/log/pods). */
  podLogRoot: string;
  /** The cgroup root of this host's pods (kubelet's `--cgroup-root`); pods go to `<root>/kubepods/besteffort/pod<uid>`. */
  cgroupRoot: string;
}

/** The CRI namespace kubelet's objects live in; containerd.sh imports the images there. */
export const CRI_NAMESPACE = 'k8s.io';

const HOST_NAME = /^[a-z0-9][a-z0-9_.-]{0,31}$/;

/** Paths of host `host`; throws on a name containerd.sh would refuse (its socket path must stay short). */
export function criHostPaths(host: string): CriHostPaths {
  if (!HOST_NAME.test(host)) throw new RangeError(`bad host name '${host}' (use [a-z0-9_.-], at most 32 characters)`);
  const runDir = `/run/ferry/${host}/cri`;
  const rootDir = `/var/lib/ferry/hosts/${host}/cri`;
  return {
    host,
    socket: `${runDir}/containerd.sock`,
    runDir,
    rootDir,
    runcRoot: `${runDir}/runc`,
    shimConfig: `${runDir}/ferry-shim.json`,
    podLogRoot: `${rootDir}/pods`,
    cgroupRoot: `/ferry-cri/${host}`,
  };
}
