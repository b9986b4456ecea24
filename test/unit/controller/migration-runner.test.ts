import { describe, expect, it } from 'vitest';
import { AgentApi, FerryError, type Capabilities, type ContainerSpec, type Method } from '../../../src/protocol/index.js';
import type { HostClient } from '../../../src/controller/agent-registry.js';
import { MemoryJournal } from '../../../src/controller/journal.js';
import { MigrationRunner } from '../../../src/controller/migration-runner.js';
import { silentLogger } from '../../../src/log/logger.js';

const caps: Capabilities = { criuVersion: '4.2.1', criuUsable: true, kernel: '6.18', softDirty: false, uffd: true, dockerVersion: '20.10', runcVersion: '1.1.5' };
const spec = { name: 'web', imageId: `sha256:${'a'.repeat(64)}`, networkMode: 'none', volumes: [] } as unknown as ContainerSpec;

/** A scripted host: records every call, fails the ones it is told to. */
class FakeHost implements HostClient {
  readonly calls: string[] = [];
  connected = true;
  caps: Capabilities | null = caps;
  failOn = new Set<string>();
  has = false;
  constructor(readonly name: string) {}
  get url(): string { return `ws://${this.name}/`; }
  async call<P, R>(m: Method<P, R>, _p: P): Promise<R> {
    this.calls.push(m.name);
    if (this.failOn.has(m.name)) throw new FerryError('E_FAULT_INJECTED', `${m.name} failed`);
    switch (m.name) {
      case AgentApi.InspectForMigration.name:
        if (!this.has || (_p as { ref: string }).ref !== 'web') throw new FerryError('E_NOT_FOUND', 'no such container');
        return { id: 'c1', running: true, spec, rssBytes: 1, rejectReasons: [] } as R;
      case AgentApi.Checkpoint.name: return { manifest: { entries: [] }, imageBytes: 0, timings: {} } as R;
      case AgentApi.Pull.name: return { bytes: 10, timings: {} } as R;
      case AgentApi.Restore.name: return { containerId: 'c2', pid: 1, timings: {} } as R;
      default: return {} as R;
    }
  }
}

function setup() {
  const a = new FakeHost('a');
  const b = new FakeHost('b');
  a.has = true;
  const hosts = new Map([[a.name, a], [b.name, b]]);
  const journal = new MemoryJournal();
  const claims = new Map<string, string>();
  const runner = (container = 'web', to = 'b') => new MigrationRunner({ container, to, dryRun: false, timeoutMs: 60_000 }, {
    hosts: { get: (n) => hosts.get(n), names: () => [...hosts.keys()] },
    journal,
    log: silentLogger(),
    claim: (k, mid) => {
      if (claims.has(k)) throw new FerryError('E_CONFLICT', 'busy');
      claims.set(k, mid);
      return () => claims.delete(k);
    },
    progress: () => undefined,
  });
  return { a, b, journal, runner, claims };
}

describe('MigrationRunner', () => {
  it('runs the steps in order and commits only after the destination restored', async () => {
    const { a, b, journal, runner, claims } = setup();
    const r = await runner().run(new AbortController().signal);
    expect(r.result).toBe('succeeded');
    expect(b.calls).toEqual(['container/inspectForMigration', 'migration/prepareTarget', 'migration/pull', 'migration/restore', 'migration/finishTarget']);
    expect(a.calls).toEqual(['container/inspectForMigration', 'migration/checkpoint', 'migration/commitSource']);
    const phases = journal.records.map((x) => x.phase);
    expect(phases).toEqual(['preparing', 'checkpointing', 'transferring', 'restoring', 'committed', 'cleaning', 'done']);
    expect(claims.size).toBe(0);
  });

  // The failure-injection sweep: whatever step fails before the commit point, the source ends up running.
  it.each([
    ['b', 'migration/prepareTarget', ['migration/abortTarget'], []],
    ['a', 'migration/checkpoint', ['migration/abortTarget'], ['migration/rollbackSource']],
    ['b', 'migration/pull', ['migration/abortTarget'], ['migration/rollbackSource']],
    ['b', 'migration/restore', ['migration/abortTarget'], ['migration/rollbackSource']],
  ] as const)('a failure of %s:%s rolls back', async (host, step, destUndo, srcUndo) => {
    const s = setup();
    (host === 'a' ? s.a : s.b).failOn.add(step);
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('rolled_back');
    expect(r.error?.code).toBe('E_FAULT_INJECTED');
    const after = (h: FakeHost) => h.calls.slice(h.calls.indexOf(step) + 1);
    expect(host === 'b' ? after(s.b) : s.b.calls.filter((c) => c === 'migration/abortTarget')).toEqual(destUndo);
    expect(s.a.calls.filter((c) => c === 'migration/rollbackSource')).toEqual(srcUndo);
    expect(s.a.calls).not.toContain('migration/commitSource');
    expect(s.journal.records.at(-1)?.phase).toBe('rolled-back');
    expect(s.claims.size).toBe(0);
  });

  it('a destination that cannot be reached after a restore attempt blocks the source rollback (no second copy)', async () => {
    const s = setup();
    s.b.failOn.add('migration/restore');
    s.b.failOn.add('migration/abortTarget');
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('failed');
    expect(s.a.calls).not.toContain('migration/rollbackSource');
    // Left open for recovery.
    expect(s.journal.open().map((x) => x.phase)).toEqual(['rolling-back']);
  });

  it('cleanup failures after the commit point do not undo the migration', async () => {
    const s = setup();
    s.a.failOn.add('migration/commitSource');
    const r = await s.runner().run(new AbortController().signal);
    expect(r.result).toBe('succeeded');
    expect(r.checks?.some((c) => c.startsWith('cleanup pending'))).toBe(true);
    expect(s.a.calls).not.toContain('migration/rollbackSource');
    // Left open for recovery, which finishes the cleanup once the source's agent is back.
    expect(s.journal.open().map((x) => x.phase)).toEqual(['cleaning']);
  });

  it.each([
    ['unknown container', 'nope', 'b', 'E_NOT_FOUND'],
    ['unknown host', 'web', 'zz', 'E_NOT_FOUND'],
    ['same host', 'web', 'a', 'E_INVALID_ARGUMENT'],
  ])('rejects %s without touching any host', async (_n, container, to, code) => {
    const s = setup();
    await expect(s.runner(container, to).run(new AbortController().signal)).rejects.toMatchObject({ code });
    expect([...s.a.calls, ...s.b.calls].filter((c) => c !== 'container/inspectForMigration')).toEqual([]);
    expect(s.journal.records).toEqual([]);
  });

  it('a second migration of the same container conflicts', async () => {
    const s = setup();
    const first = s.runner().run(new AbortController().signal);
    await expect(s.runner().run(new AbortController().signal)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    expect((await first).result).toBe('succeeded');
  });

  it('refuses hosts without a usable CRIU', async () => {
    const s = setup();
    s.b.caps = { ...caps, criuVersion: '4.1.1', criuUsable: false };
    await expect(s.runner().run(new AbortController().signal)).rejects.toMatchObject({ code: 'E_PRECONDITION' });
  });
});

describe('MigrationRunner, post-copy', () => {
  const postcopy = (s: ReturnType<typeof setup>) => new MigrationRunner({ container: 'web', to: 'b', dryRun: false, timeoutMs: 60_000, mode: 'postcopy' }, {
    hosts: { get: (n) => (n === 'a' ? s.a : n === 'b' ? s.b : undefined), names: () => ['a', 'b'] },
    journal: s.journal, log: silentLogger(), claim: () => () => undefined, progress: () => undefined,
  });

  it('lets the destination finish its fill before the source ends the session the pages come from', async () => {
    const s = setup();
    const order: string[] = [];
    for (const h of [s.a, s.b]) {
      const call = h.call.bind(h);
      h.call = async (m, p) => { order.push(`${h.name}:${m.name}`); return call(m, p); };
    }
    const r = await postcopy(s).run(new AbortController().signal);
    expect(r).toMatchObject({ result: 'succeeded', strategy: 'postcopy' });
    expect(order.slice(-2)).toEqual(['b:migration/finishTarget', 'a:migration/commitSource']);
  });

  it('a fill that fails after the destination ran is lost, not succeeded and not rolled back', async () => {
    const s = setup();
    s.b.failOn.add('migration/finishTarget');
    const r = await postcopy(s).run(new AbortController().signal);
    expect(r).toMatchObject({ result: 'lost', error: { code: 'E_LOST' } });
    expect(r.downtimeMs).not.toBeNull();
    expect(s.a.calls).not.toContain('migration/rollbackSource');
  });
});
