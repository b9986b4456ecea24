// The integration tests' cluster: two hosts of their own, on ports apart from the demo's.

import { LocalCluster } from '../../src/cli/local-cluster.js';

export const TEST_CLUSTER_FILE = '/var/lib/ferry/test/cluster.json';
export const TEST_HOSTS = ['t-a', 't-b'] as const;

export const testCluster = (): LocalCluster =>
  new LocalCluster({ file: TEST_CLUSTER_FILE, hosts: [...TEST_HOSTS], basePort: 7800, stateDir: '/var/lib/ferry/test/state', logDir: '/var/log/ferry/test' });
