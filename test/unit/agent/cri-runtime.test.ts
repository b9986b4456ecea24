import { describe, expect, it } from 'vitest';
import { podMounts, podOf, upperDirOf } from '../../../agent/runtime/cri-runtime.js';

describe('CRI container facts from disk', () => {
  it('names a pod container by namespace, pod and container; sandboxes and plain containers are not pods', () => {
    const a = {
      'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-namespace': 'default',
      'io.kubernetes.cri.sandbox-name': 'redis-0', 'io.kubernetes.cri.container-name': 'redis',
    };
    expect(podOf(a)).toEqual({ namespace: 'default', pod: 'redis-0', container: 'redis' });
    expect(podOf({ ...a, 'io.kubernetes.cri.container-type': 'sandbox' })).toBeNull();
    expect(podOf({})).toBeNull();
    // A name that could not be a Kubernetes name is not trusted as a key.
    expect(podOf({ ...a, 'io.kubernetes.cri.sandbox-name': '../etc' })).toBeNull();
  });

  it('finds the overlay upperdir of the bundle rootfs in mountinfo', () => {
    const mi = [
      '22 1 0:21 / / rw,relatime - ext4 /dev/vda1 rw',
      '812 22 0:90 / /run/b/abc/rootfs rw,relatime - overlay overlay rw,lowerdir=/l/1:/l/2,upperdir=/s/42/fs,workdir=/s/42/work,index=off',
      '813 22 0:91 / /run/b/other/rootfs rw,relatime - tmpfs tmpfs rw',
    ].join('\n');
    expect(upperDirOf(mi, '/run/b/abc/rootfs')).toBe('/s/42/fs');
    expect(upperDirOf(mi, '/run/b/other/rootfs')).toBeNull();
    expect(upperDirOf(mi, '/nope')).toBeNull();
  });
});

describe('which mounts of a pod container travel', () => {
  it("takes the sandbox's /dev/shm along and refuses volumes it cannot move", () => {
    const m = podMounts([
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/etc/hosts', type: 'bind', source: '/s/hosts' },
      { destination: '/etc/resolv.conf', type: 'bind', source: '/s/resolv' },
      { destination: '/dev/shm', type: 'bind', source: '/run/s/shm' },
      { destination: '/data', type: 'bind', source: '/var/lib/kubelet/pods/u/volumes/empty-dir/data' },
    ]);
    expect(m).toEqual({ shmDir: '/run/s/shm', foreign: ['/data'] });
    expect(podMounts([])).toEqual({ shmDir: null, foreign: [] });
  });
});

describe('where a claim may copy a rw layer', () => {
  it('only into an overlay snapshot of containerd', async () => {
    const { isSnapshotUpperDir } = await import('../../../agent/agent.js');
    expect(isSnapshotUpperDir('/var/lib/ferry/hosts/b/cri/root/io.containerd.snapshotter.v1.overlayfs/snapshots/42/fs')).toBe(true);
    expect(isSnapshotUpperDir('/etc')).toBe(false);
    expect(isSnapshotUpperDir('/x/io.containerd.snapshotter.v1.overlayfs/snapshots/42/../../../../etc/fs')).toBe(false);
    expect(isSnapshotUpperDir('relative/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs')).toBe(false);
  });
});
