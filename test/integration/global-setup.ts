// Brings up the test cluster (own dockerds t-a and t-b, agents, controller) once, and removes all of it afterwards.

import type { TestProject } from 'vitest/node';
import { existsSync } from 'node:fs';
import { LocalCluster } from '../../src/cli/local-cluster.js';
import { TEST_CLUSTER_FILE, testCluster } from './cluster.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const lc: LocalCluster = testCluster();
  // A crashed earlier run may have left a test cluster behind: start from nothing.
  if (existsSync(TEST_CLUSTER_FILE)) await lc.down(AbortSignal.timeout(120_000));
  await lc.up(AbortSignal.timeout(300_000));
  project.provide('clusterFile', TEST_CLUSTER_FILE);
  return async () => {
    await lc.down(AbortSignal.timeout(120_000));
  };
}

declare module 'vitest' {
  export interface ProvidedContext { clusterFile: string }
}
