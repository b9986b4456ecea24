import { describe, expect, it } from 'vitest';
import { criError } from '../../../src/cri/errors.js';
import { KubeletStandIn, type CriRuntime } from '../../../src/cri/kubelet.js';
import { K8S, type PodSpec } from '../../../src/cri/pod-config.js';
import type { Container } from '../../../src/cri/types.js';

/** A CRI runtime that records every call and fails the ones `failing` names. */
function fakeRuntime(failing: Partial<Record<keyof CriRuntime, number>> = {}) {
  const calls: string[] = [];
  const containers: Container[] = [];
  let n = 0;
  const maybeFail = (m: keyof CriRuntime): void => {
    const code = failing[m];
    if (code !== undefined) throw criError(m.charAt(0).toUpperCase() + m.slice(1), { code, details: `${m} refused` });
  };
  const cri: CriRuntime = {
    async runPodSandbox(config, handler) { calls.push(`RunPodSandbox ${config.metadata.name} ${handler}`); maybeFail('runPodSandbox'); return 'pod1'; },
    async createContainer(podId, config) {
      calls.push(`CreateContainer ${podId} ${config.metadata.name}`); maybeFail('createContainer');
      const id = `c${++n}`;
      containers.push({ id, pod_sandbox_id: podId, metadata: config.metadata, image: config.image, image_ref: '', state: 'CONTAINER_CREATED', created_at: '0', labels: config.labels ?? {}, annotations: config.annotations ?? {} });
      return id;
    },
    async startContainer(id) { calls.push(`StartContainer ${id}`); maybeFail('startContainer'); },
    async stopContainer(id, t) { calls.push(`StopContainer ${id} ${t}`); maybeFail('stopContainer'); },
    async stopPodSandbox(id) { calls.push(`StopPodSandbox ${id}`); maybeFail('stopPodSandbox'); },
    async removeContainer(id) { calls.push(`RemoveContainer ${id}`); maybeFail('removeContainer'); },
    async removePodSandbox(id) { calls.push(`RemovePodSandbox ${id}`); maybeFail('removePodSandbox'); },
    async listContainers(f) { calls.push('ListContainers'); return containers.filter((c) => !f?.pod_sandbox_id || c.pod_sandbox_id === f.pod_sandbox_id); },
  };
  return { cri, calls };
}

const pod: PodSpec = {
  name: 'p', namespace: 'default', uid: 'u', runtimeHandler: 'ferry', terminationGracePeriodSeconds: 10,
  containers: [{ name: 'a', image: 'ferry/busybox:1' }, { name: 'b', image: 'ferry/redis:7' }],
};
// A cgroup mount that does not exist: removing the pod cgroup is then a no-op.
const node = { podLogRoot: '/nonexistent/pods', cgroupRoot: '/ferry-cri/t' };
const opts = { cgroupMount: '/nonexistent/cgroup' };

describe('kubelet stand-in sequences', () => {
  it('runPod: sandbox with the handler, then create+start per container, in order', async () => {
    const { cri, calls } = fakeRuntime();
    const r = await new KubeletStandIn(cri, node, opts).runPod(pod);
    expect(r.ok).toBe(true);
    expect(calls).toEqual(['RunPodSandbox p ferry', 'CreateContainer pod1 a', 'StartContainer c1', 'CreateContainer pod1 b', 'StartContainer c2']);
    expect(r.containers).toEqual({ a: 'c1', b: 'c2' });
    expect(r.steps.map((s) => [s.step, s.id])).toEqual([['RunPodSandbox', 'pod1'], ['CreateContainer', 'c1'], ['StartContainer', 'c1'], ['CreateContainer', 'c2'], ['StartContainer', 'c2']]);
  });

  it('runPod: a failed sandbox stops there, with the typed error', async () => {
    const { cri, calls } = fakeRuntime({ runPodSandbox: 2 });
    const r = await new KubeletStandIn(cri, node, opts).runPod(pod);
    expect(r.ok).toBe(false);
    expect(r.podId).toBe('');
    expect(calls).toEqual(['RunPodSandbox p ferry']);
    expect(r.steps[0]?.error).toMatchObject({ code: 'E_CRI', details: { grpcCode: 2 } });
  });

  it('deletePod: stop every container with the grace period, stop the sandbox, remove containers, remove the sandbox', async () => {
    const { cri, calls } = fakeRuntime();
    const k = new KubeletStandIn(cri, node, opts);
    const r0 = await k.runPod(pod);
    calls.length = 0;
    const r = await k.deletePod(r0.podId, 10);
    expect(r.ok).toBe(true);
    expect(r.graceSec).toBe(10);
    expect(calls).toEqual(['ListContainers', 'StopContainer c1 10', 'StopContainer c2 10', 'StopPodSandbox pod1', 'RemoveContainer c1', 'RemoveContainer c2', 'RemovePodSandbox pod1']);
    expect(r.steps.map((s) => s.step)).toEqual(['StopContainer', 'StopContainer', 'StopPodSandbox', 'RemoveContainer', 'RemoveContainer', 'RemovePodSandbox', 'RemovePodCgroup']);
    expect(r.steps.filter((s) => s.step === 'StopPodSandbox')[0]?.name).toBe('p');
  });

  it('deletePod: a grace period under 2 s becomes 2 s, as in kubelet', async () => {
    const { cri, calls } = fakeRuntime();
    const k = new KubeletStandIn(cri, node, opts);
    const r0 = await k.runPod({ ...pod, containers: [pod.containers[0]!] });
    const r = await k.deletePod(r0.podId, 0);
    expect(r.graceSec).toBe(2);
    expect(calls).toContain('StopContainer c1 2');
  });

  it('deletePod: a refused StopContainer comes back typed with gRPC code 9; the sandbox is still stopped, nothing removed', async () => {
    const { cri, calls } = fakeRuntime({ stopContainer: 9 });
    const k = new KubeletStandIn(cri, node, opts);
    const r0 = await k.runPod(pod);
    calls.length = 0;
    const r = await k.deletePod(r0.podId, 30);
    expect(r.ok).toBe(false);
    const refused = r.steps.filter((s) => s.step === 'StopContainer');
    expect(refused).toHaveLength(2);
    for (const s of refused) expect(s.error).toMatchObject({ code: 'E_CRI', details: { method: 'StopContainer', grpcCode: 9, grpcStatus: 'FAILED_PRECONDITION' } });
    expect(calls).toContain('StopPodSandbox pod1');
    expect(calls.filter((c) => c.startsWith('Remove'))).toEqual([]);
  });

  it('deletePod: identity comes from the containers kubelet listed', async () => {
    const { cri } = fakeRuntime();
    const k = new KubeletStandIn(cri, node, opts);
    const r0 = await k.runPod(pod);
    const listed = await cri.listContainers({ pod_sandbox_id: r0.podId });
    expect(listed[0]?.labels[K8S.podUid]).toBe('u');
  });
});
