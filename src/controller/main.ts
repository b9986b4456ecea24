// ferry-controller: the cluster's coordinator process.

import { createLogger } from '../log/logger.js';
import { isFerryError } from '../protocol/index.js';
import { clusterFile, loadCluster } from '../cluster.js';
import { Controller } from './controller.js';

async function main(): Promise<void> {
  const path = process.argv[2] ?? clusterFile();
  const cluster = loadCluster(path);
  const log = createLogger('controller');
  const c = new Controller(cluster, log);
  await c.start();
  log.info({ url: c.url, hosts: cluster.hosts.map((h) => h.name) }, 'controller listening');
  const shutdown = (): void => {
    setTimeout(() => process.exit(0), 1000).unref();
    void c.stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  process.stdout.write(`ready ${c.url}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`ferry-controller: ${isFerryError(e) ? `${e.code}: ` : ''}${(e as Error).message}\n`);
  process.exit(isFerryError(e) && e.code === 'E_CONFIG' ? 2 : 1);
});
