// Finishing what a crashed or restarted controller left open, from its journal alone.

import { AgentApi, FerryError } from '../protocol/index.js';
import { recoveryFor, type Phase } from '../migration/state.js';
import type { Logger } from '../log/logger.js';
import type { HostClient } from './agent-registry.js';
import type { JournalRecord, JournalStore } from './journal.js';

export interface RecoveryHosts {
  get(name: string): HostClient | undefined;
  waitConnected(name: string, signal: AbortSignal): Promise<void>;
}

/**
 * Before the commit point the answer is always a rollback (destination copy removed first, then the source
 * restored from its own images); after it, the cleanup is finished. Every agent call is idempotent, so
 * running this twice, or after the runner got half-way, is safe.
 */
export async function recoverMigration(rec: JournalRecord, hosts: RecoveryHosts, journal: JournalStore, log: Logger, signal: AbortSignal): Promise<Phase | null> {
  const what = recoveryFor(rec.phase);
  if (what === 'nothing') return null;
  log.warn({ migrationId: rec.migrationId, phase: rec.phase, what }, 'recovering unfinished migration');
  const append = (phase: Phase): void => journal.append({ ...rec, ts: new Date().toISOString(), phase, data: { recovered: true } });
  const host = async (name: string): Promise<HostClient> => {
    await hosts.waitConnected(name, signal);
    const h = hosts.get(name);
    if (!h) throw new FerryError('E_NOT_FOUND', `journal names unknown host ${name}`);
    return h;
  };
  if (what === 'roll-back') {
    if (rec.phase !== 'rolling-back') append('rolling-back');
    await (await host(rec.destination)).call(AgentApi.AbortTarget, { migrationId: rec.migrationId }, { signal });
    if (rec.source) await (await host(rec.source)).call(AgentApi.RollbackSource, { migrationId: rec.migrationId }, { signal });
    append('rolled-back');
    return 'rolled-back';
  }
  if (rec.phase !== 'cleaning') append('cleaning');
  if (rec.source) await (await host(rec.source)).call(AgentApi.CommitSource, { migrationId: rec.migrationId }, { signal });
  await (await host(rec.destination)).call(AgentApi.FinishTarget, { migrationId: rec.migrationId }, { signal });
  append('done');
  return 'done';
}
