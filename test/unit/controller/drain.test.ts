import { describe, expect, it } from 'vitest';
import { FerryError, type MigrationReport, type Method } from '../../../src/protocol/index.js';
import type { HostClient } from '../../../src/controller/agent-registry.js';
import { Drainer } from '../../../src/controller/drain.js';
import { silentLogger } from '../../../src/log/logger.js';

const MiB = 2 ** 20;

/** A host whose containers are described by name → rss; only opted-in ones carry the label. */
class Host implements HostClient {
  connected = true;
  readonly caps = null;
  constructor(readonly name: string, readonly containers: { name: string; rss: number; optIn: boolean; priority?: number }[] = []) {}
  get url(): string { return `ws://${this.name}/`; }
  async call<P, R>(m: Method<P, R>, p: P): Promise<R> {
    if (m.name === 'container/list') {
      return this.containers.map((c) => ({ host: this.name, id: c.name, name: c.name, image: 'i', state: 'running', status: 'Up',
        labels: c.optIn ? { 'ferry.dev/migrate': 'true', 'ferry.dev/priority': String(c.priority ?? 0) } : {} })) as R;
    }
    if (m.name === 'container/inspectForMigration') {
      const c = this.containers.find((x) => x.name === (p as { ref: string }).ref)!;
      return { id: c.name, running: true, spec: {}, rssBytes: c.rss, rejectReasons: [] } as R;
    }
    throw new FerryError('E_INTERNAL', `unexpected ${m.name}`);
  }
}

function setup(containers: Host['containers']) {
  const hosts = new Map<string, Host>([['doomed', new Host('doomed', containers)], ['x', new Host('x')], ['y', new Host('y')]]);
  const cordoned = new Set<string>();
  const moves: { container: string; to: string; timeoutMs: number }[] = [];
  let onMove: (to: string) => void = () => undefined;
  const drainer = new Drainer({
    hosts: { get: (n) => hosts.get(n), names: () => [...hosts.keys()] },
    cordoned,
    log: silentLogger(),
    concurrency: 1,
    migrate: async (container, from, to, timeoutMs) => {
      moves.push({ container, to, timeoutMs });
      onMove(to);
      return { result: 'succeeded', downtimeMs: 100, error: null, totalMs: 500, bytesTotal: 1, container, source: from, destination: to } as unknown as MigrationReport;
    },
  });
  return { drainer, cordoned, moves, hosts, setOnMove: (f: (to: string) => void) => { onMove = f; } };
}

describe('Drainer', () => {
  it('without a deadline (a rebalance recommendation) moves every opted-in container, and only those', async () => {
    const s = setup([{ name: 'a', rss: MiB, optIn: true }, { name: 'b', rss: MiB, optIn: false }, { name: 'c', rss: MiB, optIn: true }]);
    const r = await s.drainer.drain('doomed', null, 'rebalance', false);
    expect(s.moves.map((m) => m.container).sort()).toEqual(['a', 'c']);
    expect(r.results.every((x) => x.result === 'succeeded')).toBe(true);
    expect(s.cordoned.has('doomed')).toBe(true);
  });

  it('a second notice for a destination re-plans: later moves avoid it', async () => {
    const s = setup([{ name: 'a', rss: MiB, optIn: true }, { name: 'b', rss: 2 * MiB, optIn: true }, { name: 'c', rss: 3 * MiB, optIn: true }]);
    // Right after the first move starts, the host it went to gets its own notice.
    let first = true;
    s.setOnMove((to) => { if (first) { first = false; s.cordoned.add(to); } });
    await s.drainer.drain('doomed', performance.now() + 120_000, 'aws termination', false);
    const firstTo = s.moves[0]!.to;
    expect(s.moves.slice(1).every((m) => m.to !== firstTo)).toBe(true);
    // Each migration gets at most the time left before the deadline.
    expect(s.moves.every((m) => m.timeoutMs <= 120_000)).toBe(true);
  });

  it('what cannot fit is not started, and is reported', async () => {
    const s = setup([{ name: 'huge', rss: 64 * 2 ** 30, optIn: true }, { name: 'small', rss: MiB, optIn: true }]);
    const r = await s.drainer.drain('doomed', performance.now() + 30_000, 'gcp preemption', false);
    expect(s.moves.map((m) => m.container)).toEqual(['small']);
    expect(r.plan.find((m) => m.container === 'huge')).toMatchObject({ fits: false });
  });

  it('a dry run plans without cordoning or moving', async () => {
    const s = setup([{ name: 'a', rss: MiB, optIn: true }]);
    const r = await s.drainer.drain('doomed', null, 'manual', true);
    expect(r.plan).toHaveLength(1);
    expect(s.moves).toEqual([]);
    expect(s.cordoned.size).toBe(0);
  });

  it('a second notice for the draining host joins the running drain', async () => {
    const s = setup([{ name: 'a', rss: MiB, optIn: true }]);
    const [r1, r2] = await Promise.all([s.drainer.drain('doomed', null, 'one', false), s.drainer.drain('doomed', null, 'two', false)]);
    expect(r1).toBe(r2);
    expect(s.moves).toHaveLength(1);
  });
});
