import { describe, expect, it } from 'vitest';
import { AgentApi, FerryError, type Capabilities, type Method } from '../../../src/protocol/index.js';
import type { HostClient } from '../../../src/controller/agent-registry.js';
import { MemoryJournal } from '../../../src/controller/journal.js';
import { MigrationRunner } from '../../../src/controller/migration-runner.js';
import { silentLogger } from '../../../src/log/logger.js';

const caps: Capabilities = { criuVersion: '4.2.1', criuUsable: true, kernel: '6.18', softDirty: false, uffd: true, dockerVersion: '20.10', runcVersion: '1.1.5' };
const POD_ID = 'f'.repeat(64);
const pod = { namespace: 'default', pod: 'redis-0', container: 'redis' };

/** A scripted host whose only container belongs to a pod; records calls and params. */
class PodHost implements HostClient {
  readonly calls: { m: string; p: unknown }[] = [];
  connected = true;
  caps: Capabilities | null = caps;
  failOn = new Set<string>();
  lostOnRollback = false;
  constructor(readonly name: string, readonly has: boolean) {}
  get url(): string { return `ws://${this.name}/`; }
  async call<P, R>(m: Method<P, R>, p: P): Promise<R> {
    this.calls.push({ m: m.name, p });
    if (this.failOn.has(m.name)) throw new FerryError('E_FAULT_INJECTED', `${m.name} failed`);
    switch (m.name) {
      case AgentApi.InspectForMigration.name:
        if (!this.has) throw new FerryError('E_NOT_FOUND', 'no such container');
        return { id: POD_ID, running: true, spec: null, pod, name: 'default/redis-0/redis', rssBytes: 1, rejectReasons: [] } as R;
      case AgentApi.Checkpoint.name: return { manifest: { entries: [] }, imageBytes: 0, timings: {} } as R;
      case AgentApi.Pull.name: return { bytes: 10, timings: {} } as R;
      case AgentApi.Restore.name: return { containerId: 'e'.repeat(64), pid: 1, timings: {} } as R;
      case AgentApi.RollbackSource.name: return { restored: false, running: !this.lostOnRollback, lost: this.lostOnRollback } as R;
      default: return {} as R;
    }
  }
}

function setup(podRequest: boolean) {
  const a = new PodHost('a', true);
  const b = new PodHost('b', false);
  const hosts = new Map([[a.name, a], [b.name, b]]);
  const journal = new MemoryJournal();
  const runner = () => new MigrationRunner({ container: POD_ID, from: 'a', to: 'b', dryRun: false, timeoutMs: 60_000, mode: 'stop-and-copy', pod: podRequest }, {
    hosts: { get: (n) => hosts.get(n), names: () => [...hosts.keys()] },
    journal, log: silentLogger(), claim: () => () => undefined, progress: () => undefined,
  });
  return { a, b, journal, runner };
}

describe('pod migrations (containerd shim)', () => {
  it('stages the state for the replacement pod instead of creating a container', async () => {
    const s = setup(true);
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('succeeded');
    expect(r.container).toBe('default/redis-0/redis');
    const prep = s.b.calls.find((c) => c.m === AgentApi.PrepareTarget.name);
    expect(prep?.p).toMatchObject({ spec: null, pod });
  });

  it('refuses a pod container to `ferry migrate`: only its pod deletion moves it', async () => {
    const s = setup(false);
    await expect(s.runner().run(new AbortController().signal)).rejects.toMatchObject({ code: 'E_PRECONDITION', message: expect.stringMatching(/belongs to a pod/) });
    expect(s.a.calls.map((c) => c.m)).toEqual([AgentApi.InspectForMigration.name]);
  });

  it('reports a pod whose task ended at the dump and then failed to restore as lost, not rolled back', async () => {
    const s = setup(true);
    s.b.failOn.add(AgentApi.Restore.name);
    s.a.lostOnRollback = true;
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('lost');
    expect(r.error?.code).toBe('E_LOST');
    expect(s.journal.records.at(-1)?.phase).toBe('failed');
  });

  it('rolls back when the failure came before the dump', async () => {
    const s = setup(true);
    s.a.failOn.add(AgentApi.Checkpoint.name);
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('rolled_back');
  });
});
