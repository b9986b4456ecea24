// The shim's hooks over Ferry's wire protocol: a deleted pod's container is migrated by the controller, and a
// replacement pod's container is restored from what this host's agent has staged for it.

import { AgentApi, ControllerApi, PodIdentity, isFerryError, type MigrationReport } from '../src/protocol/index.js';
import { dial } from '../src/rpc/handshake.js';
import type { Connection } from '../src/rpc/connection.js';
import { loadCluster, type ClusterConfig } from '../src/cluster.js';
import type { Logger } from '../src/log/logger.js';
import type { ShimConfig } from './config.js';
import type { ShimHooks } from './hooks.js';
import { DEFAULT_GRACE_PERIOD_S, type ShimContainer } from './container.js';

/** Kept back from the grace period: the answer to the held Kill, and kubelet's own bookkeeping, need time too. */
const GRACE_MARGIN_MS = 2_000;
/**
 * How long a replacement's Create waits for the migrated state to arrive. kubelet gives a CRI call two
 * minutes (--runtime-request-timeout); the source's grace period bounds the migration itself.
 */
const CLAIM_WAIT_MS = 60_000;
/** How long a replacement waits for a predecessor that still runs elsewhere to begin its migration. */
const EXPECT_WAIT_MS = 30_000;

export function podIdentityOf(c: ShimContainer): PodIdentity | null {
  const p = PodIdentity.safeParse({ namespace: c.pod.namespace, pod: c.pod.name, container: c.containerName });
  return p.success ? p.data : null;
}

/** The migration's budget: the grace period, less what the rest of the deletion needs. */
export const migrationBudgetMs = (c: ShimContainer): number =>
  Math.max(1_000, (c.terminationGracePeriodS ?? DEFAULT_GRACE_PERIOD_S) * 1000 - GRACE_MARGIN_MS);

/** Pure: what a finished (or failed) migration means for the held Kill, under the pod's failure policy. */
export function killAfter(c: ShimContainer, outcome: { result: MigrationReport['result'] } | { error: string }): { action: 'forward' } | { action: 'refuse'; message: string } {
  if ('result' in outcome && (outcome.result === 'succeeded' || outcome.result === 'staged')) return { action: 'forward' };
  // Lost or uncertain: the source task is gone or may be; refusing would only make kubelet retry a dead container.
  if ('result' in outcome && (outcome.result === 'lost' || outcome.result === 'failed')) return { action: 'forward' };
  if (c.onFailure === 'proceed') return { action: 'forward' };
  const why = 'error' in outcome ? outcome.error : `migration ${outcome.result}`;
  return { action: 'refuse', message: `ferry: ${why}; deletion refused (ferry.dev/on-failure: refuse), the container keeps running` };
}

export function createHooks(config: ShimConfig, log: Logger): ShimHooks {
  let cluster: ClusterConfig | null = null;
  const conns = new Map<string, Promise<Connection>>();
  const clusterOf = (): ClusterConfig => {
    if (!config.cluster) throw new Error('no Ferry cluster configured for this shim (ferry-shim.json: cluster)');
    return (cluster ??= loadCluster(config.cluster));
  };
  /** One authenticated connection per peer, redialled after it closes. */
  const connect = async (url: string, serverRole: 'controller' | 'agent', signal: AbortSignal): Promise<Connection> => {
    const open = conns.get(url);
    if (open) {
      const c = await open.catch(() => null);
      if (c && !c.closed) return c;
      conns.delete(url);
    }
    const p = dial({ url, name: config.host, role: 'shim', serverRole, secret: clusterOf().secret, log, signal }).then((d) => d.conn);
    conns.set(url, p);
    p.catch(() => conns.delete(url));
    return p;
  };
  const agentUrl = (): string => {
    const h = clusterOf().hosts.find((x) => x.name === config.host);
    if (!h) throw new Error(`host ${config.host} is not in the cluster file ${config.cluster}`);
    return h.agentUrl;
  };

  return {
    async onDelete(c, signal) {
      const budget = migrationBudgetMs(c);
      log.info({ container: c.id, pod: c.pod, budgetMs: budget, to: c.to }, 'pod container deleted: migrating it');
      try {
        const conn = await connect(clusterOf().controller.url, 'controller', signal);
        const r = await conn.request(ControllerApi.MigratePod, {
          host: config.host, containerId: c.id, to: c.to, maxDowntimeMs: c.maxDowntimeMs, timeoutMs: budget, release: c.release, mode: c.mode,
        }, { signal, timeoutMs: budget + GRACE_MARGIN_MS / 2 });
        // The grace period is what kubelet granted the deletion: say how much of it the migration used.
        log.info({
          container: c.id, result: r.result, destination: r.destination, downtimeMs: r.downtimeMs, totalMs: r.totalMs,
          gracePeriodS: c.terminationGracePeriodS ?? DEFAULT_GRACE_PERIOD_S, budgetMs: budget, phases: r.phases, error: r.error,
        }, 'pod migration finished');
        return killAfter(c, { result: r.result });
      } catch (e) {
        const msg = isFerryError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
        log.error({ container: c.id, err: msg }, 'pod migration did not run');
        return killAfter(c, { error: msg });
      }
    },

    async claim(c, signal) {
      const pod = podIdentityOf(c);
      if (!pod || !c.upperDir || !config.cluster) return null;
      // The old pod's deletion may not have reached its host yet: the controller knows whether one is coming.
      const ctl = await connect(clusterOf().controller.url, 'controller', signal);
      log.info({ container: c.id, pod }, 'replacement pod: asking whether migrated state is coming');
      const expect = await ctl.request(ControllerApi.ExpectPod, { host: config.host, pod, waitMs: EXPECT_WAIT_MS }, { signal, timeoutMs: EXPECT_WAIT_MS + 10_000 });
      log.info({ container: c.id, pod, inbound: expect.inbound, reason: expect.reason }, 'replacement pod: is state coming?');
      if (!expect.inbound) return null;
      const conn = await connect(agentUrl(), 'agent', signal);
      const r = await conn.request(AgentApi.ShimClaim, { pod, containerId: c.id, upperDir: c.upperDir, waitMs: CLAIM_WAIT_MS }, { signal, timeoutMs: CLAIM_WAIT_MS + 30_000 });
      if (!r.migrationId || !r.imagesDir) return null;
      log.info({ container: c.id, pod, migrationId: r.migrationId }, 'replacement restores migrated state');
      return { migrationId: r.migrationId, imagesDir: r.imagesDir };
    },

    async restored(migrationId, c, result) {
      const conn = await connect(agentUrl(), 'agent', AbortSignal.timeout(10_000));
      await conn.request(AgentApi.ShimRestored, {
        migrationId, containerId: c.id, pid: 'pid' in result ? result.pid : 0, error: 'error' in result ? result.error.slice(0, 4000) : null,
      }, { timeoutMs: 10_000 });
    },
  };
}
