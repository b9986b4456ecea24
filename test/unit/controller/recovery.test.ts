import { describe, expect, it } from 'vitest';
import { FerryError, type Method } from '../../../src/protocol/index.js';
import type { HostClient } from '../../../src/controller/agent-registry.js';
import { MemoryJournal, type JournalRecord } from '../../../src/controller/journal.js';
import { recoverMigration } from '../../../src/controller/recovery.js';
import { silentLogger } from '../../../src/log/logger.js';

class Host implements HostClient {
  readonly calls: string[] = [];
  readonly connected = true;
  readonly caps = null;
  fail = false;
  constructor(readonly name: string) {}
  get url(): string { return `ws://${this.name}/`; }
  async call<P, R>(m: Method<P, R>): Promise<R> {
    this.calls.push(m.name);
    if (this.fail) throw new FerryError('E_UNAVAILABLE', 'down');
    return {} as R;
  }
}

const rec = (phase: JournalRecord['phase']): JournalRecord =>
  ({ ts: 't', migrationId: 'm-abcdef', phase, container: 'c', source: 'a', destination: 'b' });

function setup() {
  const a = new Host('a');
  const b = new Host('b');
  const hosts = { get: (n: string) => ({ a, b } as Record<string, Host>)[n], waitConnected: async () => undefined };
  return { a, b, hosts, journal: new MemoryJournal() };
}

describe('controller recovery from the journal', () => {
  it.each(['preparing', 'checkpointing', 'transferring', 'restoring', 'rolling-back'] as const)(
    'a migration left in %s is rolled back: destination removed first, then the source restored', async (phase) => {
      const s = setup();
      expect(await recoverMigration(rec(phase), s.hosts, s.journal, silentLogger(), AbortSignal.timeout(1000))).toBe('rolled-back');
      expect(s.b.calls).toEqual(['migration/abortTarget']);
      expect(s.a.calls).toEqual(['migration/rollbackSource']);
      expect(s.journal.records.at(-1)?.phase).toBe('rolled-back');
      expect(s.journal.open()).toEqual([]);
    });

  it.each(['committed', 'cleaning'] as const)('a migration left in %s is finished, never rolled back', async (phase) => {
    const s = setup();
    expect(await recoverMigration(rec(phase), s.hosts, s.journal, silentLogger(), AbortSignal.timeout(1000))).toBe('done');
    expect(s.a.calls).toEqual(['migration/commitSource']);
    expect(s.b.calls).toEqual(['migration/finishTarget']);
    expect(s.journal.open()).toEqual([]);
  });

  it('a destination that cannot be reached leaves the migration open, and the source untouched', async () => {
    const s = setup();
    s.b.fail = true;
    await expect(recoverMigration(rec('restoring'), s.hosts, s.journal, silentLogger(), AbortSignal.timeout(1000))).rejects.toMatchObject({ code: 'E_UNAVAILABLE' });
    expect(s.a.calls).toEqual([]);
    expect(s.journal.open().map((r) => r.phase)).toEqual(['rolling-back']);
  });

  it('terminal migrations need nothing', async () => {
    const s = setup();
    expect(await recoverMigration(rec('done'), s.hosts, s.journal, silentLogger(), AbortSignal.timeout(1000))).toBeNull();
    expect([...s.a.calls, ...s.b.calls]).toEqual([]);
  });
});
