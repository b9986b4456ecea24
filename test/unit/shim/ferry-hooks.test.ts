import { describe, expect, it } from 'vitest';
import { killAfter, migrationBudgetMs, podIdentityOf } from '../../../shim/ferry-hooks.js';
import { parseShimContainer } from '../../../shim/container.js';

const container = (annotations: Record<string, string>) => parseShimContainer({ id: 'c'.repeat(64), bundle: '/b', rootfs: [] }, {
  annotations: {
    'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-name': 'db-0',
    'io.kubernetes.cri.sandbox-namespace': 'default', 'io.kubernetes.cri.container-name': 'redis', 'ferry.dev/migrate': 'true', ...annotations,
  },
}, 'k8s.io');

describe('what a finished pod migration means for the held Kill', () => {
  it('lets the deletion go on once the container runs elsewhere, or once it is staged', () => {
    expect(killAfter(container({}), { result: 'succeeded' })).toEqual({ action: 'forward' });
    expect(killAfter(container({ 'ferry.dev/release': 'staged' }), { result: 'staged' })).toEqual({ action: 'forward' });
  });

  it('refuses only what did not move and still runs, and only when the pod asked for it', () => {
    const refuse = container({ 'ferry.dev/on-failure': 'refuse' });
    expect(killAfter(refuse, { result: 'rolled_back' })).toMatchObject({ action: 'refuse', message: expect.stringMatching(/keeps running/) });
    expect(killAfter(refuse, { error: 'E_UNAVAILABLE: controller down' })).toMatchObject({ action: 'refuse' });
    expect(killAfter(container({}), { result: 'rolled_back' })).toEqual({ action: 'forward' });
    // Lost or uncertain: the task is gone (or may be); refusing would only make kubelet retry a dead container.
    expect(killAfter(refuse, { result: 'lost' })).toEqual({ action: 'forward' });
    expect(killAfter(refuse, { result: 'failed' })).toEqual({ action: 'forward' });
  });

  it('bounds the migration by the grace period, keeping back time for the rest of the deletion', () => {
    expect(migrationBudgetMs(container({ 'io.kubernetes.pod.terminationGracePeriod': '30' }))).toBe(28_000);
    expect(migrationBudgetMs(container({ 'io.kubernetes.pod.terminationGracePeriod': '0' }))).toBe(1_000);
    expect(migrationBudgetMs(container({}))).toBe(28_000);
  });

  it('names the pod container by namespace, pod and container, or not at all', () => {
    expect(podIdentityOf(container({}))).toEqual({ namespace: 'default', pod: 'db-0', container: 'redis' });
    expect(podIdentityOf(container({ 'io.kubernetes.cri.sandbox-name': 'Not_A_Name' }))).toBeNull();
  });
});
