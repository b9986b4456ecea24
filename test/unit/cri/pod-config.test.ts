import { describe, expect, it } from 'vitest';
import {
  BEST_EFFORT, K8S, MIN_GRACE_PERIOD_SEC, containerConfig, containerHash, normalizeImage, podCgroupParent, sandboxConfig,
  type PodSpec,
} from '../../../src/cri/pod-config.js';
import { criHostPaths } from '../../../src/cri/paths.js';

const pod: PodSpec = {
  name: 'redis-0', namespace: 'db', uid: 'u-1', labels: { app: 'redis' },
  annotations: { 'ferry.dev/migrate': 'true' }, terminationGracePeriodSeconds: 7,
  containers: [{ name: 'redis', image: 'ferry/redis:7', command: ['redis-server'], args: ['--port', '28001'], env: { B: '2', A: '1' } }],
};
const node = criHostPaths('c-a');

describe('CRI pod configs as kubelet builds them', () => {
  it.each([
    ['ferry/redis:7', 'docker.io/ferry/redis:7'],
    ['redis', 'docker.io/library/redis:latest'],
    ['busybox:1', 'docker.io/library/busybox:1'],
    ['docker.io/ferry/pause:1', 'docker.io/ferry/pause:1'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['quay.io/a/b@sha256:00', 'quay.io/a/b@sha256:00'],
  ])('normalises %s to %s', (ref, want) => expect(normalizeImage(ref)).toBe(want));

  it('sandbox: hostNetwork, no hostname, identity labels, pod annotations, log dir and cgroup per host', () => {
    const sb = sandboxConfig(pod, node);
    expect(sb.metadata).toEqual({ name: 'redis-0', namespace: 'db', uid: 'u-1', attempt: 0 });
    expect(sb.hostname).toBeUndefined();
    expect(sb.linux?.security_context?.namespace_options).toEqual({ network: 'NODE', pid: 'CONTAINER', ipc: 'POD' });
    expect(sb.labels).toEqual({ app: 'redis', [K8S.podName]: 'redis-0', [K8S.podNamespace]: 'db', [K8S.podUid]: 'u-1' });
    expect(sb.annotations).toEqual({ 'ferry.dev/migrate': 'true' });
    expect(sb.log_directory).toBe('/var/lib/ferry/hosts/c-a/cri/pods/db_redis-0_u-1');
    expect(sb.linux?.cgroup_parent).toBe('/ferry-cri/c-a/kubepods/besteffort/podu-1');
    expect(podCgroupParent(node.cgroupRoot, 'u-1')).toBe(sb.linux?.cgroup_parent);
  });

  it('container: qualified image, identity labels only, kubelet annotations with the grace period, BestEffort', () => {
    const c = containerConfig(pod, pod.containers[0]!);
    expect(c.image).toEqual({ image: 'docker.io/ferry/redis:7', user_specified_image: 'ferry/redis:7' });
    expect(c.command).toEqual(['redis-server']);
    expect(c.args).toEqual(['--port', '28001']);
    expect(c.envs).toEqual([{ key: 'B', value: '2' }, { key: 'A', value: '1' }]);
    expect(c.labels).toEqual({ [K8S.podName]: 'redis-0', [K8S.podNamespace]: 'db', [K8S.podUid]: 'u-1', [K8S.containerName]: 'redis' });
    expect(c.annotations?.[K8S.terminationGracePeriod]).toBe('7');
    expect(c.annotations?.[K8S.restartCount]).toBe('0');
    expect(c.annotations?.['ferry.dev/migrate']).toBeUndefined();   // pod annotations reach the container through containerd's passthrough
    expect(c.log_path).toBe('redis/0.log');
    expect(c.linux?.resources).toEqual({ cpu_period: BEST_EFFORT.cpuPeriod, cpu_shares: 2, oom_score_adj: 1000 });
    expect(c.linux?.security_context?.namespace_options?.network).toBe('NODE');
    expect(c.working_dir).toBeUndefined();
  });

  it('the default grace period is 30 s; kubelet stops with at least 2 s', () => {
    const c = containerConfig({ ...pod, terminationGracePeriodSeconds: undefined }, pod.containers[0]!);
    expect(c.annotations?.[K8S.terminationGracePeriod]).toBe('30');
    expect(MIN_GRACE_PERIOD_SEC).toBe(2);
  });

  it('the container hash is stable across env order and changes with the spec', () => {
    const c = pod.containers[0]!;
    expect(containerHash(c)).toMatch(/^[0-9a-f]{1,8}$/);
    expect(containerHash({ ...c, env: { A: '1', B: '2' } })).toBe(containerHash(c));
    expect(containerHash({ ...c, args: ['--port', '28002'] })).not.toBe(containerHash(c));
  });

  it('host paths match scripts/containerd.sh and refuse names it refuses', () => {
    expect(node).toMatchObject({
      socket: '/run/ferry/c-a/cri/containerd.sock', runcRoot: '/run/ferry/c-a/cri/runc',
      shimConfig: '/run/ferry/c-a/cri/ferry-shim.json', rootDir: '/var/lib/ferry/hosts/c-a/cri',
    });
    expect(() => criHostPaths('../x')).toThrow(RangeError);
    expect(() => criHostPaths('a'.repeat(33))).toThrow(RangeError);
  });
});
