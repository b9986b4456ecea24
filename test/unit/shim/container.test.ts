import { describe, expect, it } from 'vitest';
import { DEFAULT_GRACE_PERIOD_S, isOptedIn, parseDurationMs, parseShimContainer, upperDirOf } from '../../../shim/container.js';
import { deleteBoundMs } from '../../../shim/interceptor.js';

const rootfs = [
  { type: 'bind', source: '/x', target: '', options: ['rbind'] },
  {
    type: 'overlay',
    source: 'overlay',
    target: '',
    options: ['index=off', 'workdir=/var/lib/containerd/snapshots/12/work', 'upperdir=/var/lib/containerd/snapshots/12/fs', 'lowerdir=/l1:/l2'],
  },
];

// Annotations as containerd 1.6's CRI plugin writes them into the OCI spec of an app container.
const criApp = {
  'io.kubernetes.cri.container-type': 'container',
  'io.kubernetes.cri.sandbox-id': 'a1b2',
  'io.kubernetes.cri.container-name': 'redis',
  'io.kubernetes.cri.sandbox-name': 'redis-0',
  'io.kubernetes.cri.sandbox-namespace': 'default',
  'io.kubernetes.cri.sandbox-uid': 'uid-1',
  'ferry.dev/migrate': 'true',
  'ferry.dev/to': 'host-b',
  'ferry.dev/max-downtime': '100ms',
  'ferry.dev/on-failure': 'refuse',
  'ferry.dev/release': 'staged',
  'io.kubernetes.pod.terminationGracePeriod': '45',
};

describe('parseShimContainer', () => {
  it('reads every annotation of a CRI app container and the overlay upperdir', () => {
    const c = parseShimContainer({ id: 'c1', bundle: '/b/c1', rootfs }, { ociVersion: '1.0.2', annotations: criApp }, 'k8s.io');
    expect(c).toEqual({
      id: 'c1',
      namespace: 'k8s.io',
      bundle: '/b/c1',
      kind: 'container',
      sandboxId: 'a1b2',
      containerName: 'redis',
      pod: { name: 'redis-0', namespace: 'default', uid: 'uid-1' },
      migrate: true,
      to: 'host-b',
      maxDowntimeMs: 100,
      onFailure: 'refuse',
      release: 'staged',
      mode: 'stop-and-copy',
      terminationGracePeriodS: 45,
      upperDir: '/var/lib/containerd/snapshots/12/fs',
      annotations: criApp,
      invalid: [],
    });
    expect(isOptedIn(c)).toBe(true);
    expect(deleteBoundMs(c)).toBe(43_000);
  });

  it('defaults: not opted in, proceed on failure, no grace period (bound 28 s), no pod', () => {
    const c = parseShimContainer({ id: 'c2', bundle: '/b', rootfs: [] }, {}, 'default');
    expect(c).toMatchObject({ kind: null, migrate: false, onFailure: 'proceed', terminationGracePeriodS: null, upperDir: null, to: null, maxDowntimeMs: null });
    expect(c.pod).toEqual({ name: null, namespace: null, uid: null });
    expect(isOptedIn(c)).toBe(false);
    expect(deleteBoundMs(c)).toBe(DEFAULT_GRACE_PERIOD_S * 1000 - 2000);
  });

  it('the sandbox never opts in, even with the annotation', () => {
    const c = parseShimContainer({ id: 's', bundle: '/b', rootfs: [] }, { annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'ferry.dev/migrate': 'true' } }, 'k8s.io');
    expect(c.kind).toBe('sandbox');
    expect(isOptedIn(c)).toBe(false);
  });

  it('lists annotations it cannot understand and ignores them', () => {
    const a = {
      'io.kubernetes.cri.container-type': 'vm',
      'ferry.dev/migrate': 'yes',
      'ferry.dev/max-downtime': 'fast',
      'ferry.dev/on-failure': 'explode',
      'ferry.dev/release': 'later',
      'io.kubernetes.pod.terminationGracePeriod': '-1',
      'not.a.string': 3,
    };
    const c = parseShimContainer({ id: 'x', bundle: '/b', rootfs: [] }, { annotations: a }, 'ns');
    expect(c.invalid).toEqual([
      'io.kubernetes.cri.container-type',
      'ferry.dev/migrate',
      'ferry.dev/max-downtime',
      'ferry.dev/on-failure',
      'ferry.dev/release',
      'io.kubernetes.pod.terminationGracePeriod',
    ]);
    expect(c).toMatchObject({ kind: null, migrate: false, maxDowntimeMs: null, onFailure: 'proceed', release: 'running', terminationGracePeriodS: null });
    expect(c.annotations).not.toHaveProperty('not.a.string');
  });

  it('a short grace period still gives onDelete its minimum', () => {
    const c = parseShimContainer({ id: 'x', bundle: '/b', rootfs: [] }, { annotations: { 'io.kubernetes.pod.terminationGracePeriod': '0' } }, 'ns');
    expect(deleteBoundMs(c)).toBe(1000);
  });
});

describe('parseDurationMs / upperDirOf', () => {
  it.each([
    ['100ms', 100],
    ['1.5s', 1500],
    ['2m', 120_000],
    [' 250ms ', 250],
    ['100', null],
    ['-1s', null],
    ['1h', null],
  ] as const)('%j = %j', (s, ms) => expect(parseDurationMs(s)).toBe(ms));

  it('takes the first overlay mount with an upperdir', () => {
    expect(upperDirOf(rootfs)).toBe('/var/lib/containerd/snapshots/12/fs');
    expect(upperDirOf([{ type: 'overlay', source: 'o', target: '', options: ['lowerdir=/a'] }])).toBeNull();
  });
});
