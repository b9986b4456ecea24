// The cluster file: which hosts exist, where their agents and the controller listen, and the shared secret.

import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FerryError } from './protocol/index.js';

export const HostConfig = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/),
  /** Where the controller and peer agents reach this host's agent. */
  agentUrl: z.string().url(),
  /** The agent's listen address (host:port). */
  listen: z.string(),
  dockerSocket: z.string(),
  execRoot: z.string(),
  dataDir: z.string(),
});
export type HostConfig = z.infer<typeof HostConfig>;

export const ClusterConfig = z.object({
  version: z.literal(1),
  secret: z.string().min(16),
  controller: z.object({ url: z.string().url(), listen: z.string() }),
  /** Controller journal and process bookkeeping. */
  stateDir: z.string(),
  hosts: z.array(HostConfig).min(1),
});
export type ClusterConfig = z.infer<typeof ClusterConfig>;

export const DEFAULT_CLUSTER_FILE = '/var/lib/ferry/cluster.json';
export const clusterFile = (env: NodeJS.ProcessEnv = process.env): string => env.FERRY_CLUSTER ?? DEFAULT_CLUSTER_FILE;

export function loadCluster(path: string): ClusterConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FerryError('E_CONFIG', code === 'ENOENT' ? `no cluster at ${path}: run \`ferry up\` first` : `cannot read ${path}: ${(e as Error).message}`);
  }
  const p = ClusterConfig.safeParse(raw);
  if (!p.success) throw new FerryError('E_CONFIG', `invalid cluster file ${path}: ${z.prettifyError(p.error)}`);
  return p.data;
}
