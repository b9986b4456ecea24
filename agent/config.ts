// The agent's configuration: one typed object, from flags and FERRY_AGENT_* variables, validated once.

import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { FerryError } from '../src/protocol/index.js';

export const AgentConfig = z.object({
  version: z.literal(1).default(1),
  /** Host name announced to peers; also the name the controller knows this host by. */
  host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/),
  /** The host's dockerd socket. */
  dockerSocket: z.string(),
  /** dockerd's --exec-root: runc's state for its containers lives under it. */
  execRoot: z.string(),
  /** Where the WebSocket server listens (host:port). */
  listen: z.string().regex(/^[^:]+:\d+$/),
  /** Per-migration images and state; tmpfs so pages never touch a disk. */
  dataDir: z.string(),
  /** Cluster secret shared by controller and agents (handshake HMAC key). */
  secret: z.string().min(16),
  runc: z.string().default('/usr/sbin/runc'),
  criu: z.string().default('/opt/ferry/bin/criu'),
  criuConfigFile: z.string().nullable().default('/opt/ferry/etc/criu.conf'),
  /** The runtime name dockerd knows Ferry's runc wrapper by. */
  runtimeName: z.string().default('ferry-runc'),
  /** The native dirty tracker pre-copy drives (native/dirtytrack); built by the project's set-up. */
  dirtytrack: z.string().default(fileURLToPath(new URL('../../native/dirtytrack/build/ferry-dirtytrack', import.meta.url))),
  /**
   * Restore lazily from the local image: the container runs as soon as its non-memory state is back and
   * pages are filled in behind it, so the freeze does not grow with memory size.
   */
  lazyRestore: z.boolean().default(true),
  /**
   * Pre-copy's final phase: `criu dump --lazy-pages` (no page written) and the destination serving the restored
   * task's memory from its page store plus the final delta, instead of a full dump and a rebuild. Off: the
   * full dump path (docs/postcopy.md).
   */
  lazyFinal: z.boolean().default(true),
  /** Which provider's preemption notices to watch ('none': no watcher), and where its metadata service is. */
  spotProvider: z.enum(['aws', 'gcp', 'azure', 'none']).default('none'),
  spotEndpoint: z.string().url().optional(),
  spotPollMs: z.number().int().min(1).optional(),
  /** The host's containerd (CRI) dirs (scripts/containerd.sh): state/ and runc/ below it. Default /run/ferry/<host>/cri. */
  criRoot: z.string().nullable().default(null),
  /** Test-only fault injection, e.g. "restore-fail" or "crash-during-pull:1048576". */
  faults: z.array(z.string()).default([]),
});
export type AgentConfig = z.infer<typeof AgentConfig>;

export function loadAgentConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): AgentConfig {
  const fromEnv = (k: string): string | undefined => env[`FERRY_AGENT_${k}`];
  const raw = {
    host: flags.host ?? fromEnv('HOST'),
    dockerSocket: flags.dockerSocket ?? fromEnv('DOCKER_SOCKET'),
    execRoot: flags.execRoot ?? fromEnv('EXEC_ROOT'),
    listen: flags.listen ?? fromEnv('LISTEN'),
    dataDir: flags.dataDir ?? fromEnv('DATA_DIR'),
    secret: flags.secret ?? fromEnv('SECRET') ?? env.FERRY_SECRET,
    runc: flags.runc ?? fromEnv('RUNC'),
    criu: flags.criu ?? fromEnv('CRIU'),
    criuConfigFile: flags.criuConfigFile ?? fromEnv('CRIU_CONFIG_FILE'),
    dirtytrack: fromEnv('DIRTYTRACK'),
    criRoot: fromEnv('CRI_ROOT'),
    faults: (fromEnv('FAULTS') ?? '').split(',').filter(Boolean),
    spotProvider: fromEnv('SPOT_PROVIDER'),
    spotEndpoint: fromEnv('SPOT_ENDPOINT'),
    spotPollMs: fromEnv('SPOT_POLL_MS') === undefined ? undefined : Number(fromEnv('SPOT_POLL_MS')),
    lazyRestore: fromEnv('LAZY_RESTORE') === undefined ? undefined : fromEnv('LAZY_RESTORE') !== '0',
    lazyFinal: fromEnv('LAZY_FINAL') === undefined ? undefined : fromEnv('LAZY_FINAL') !== '0',
  };
  const parsed = AgentConfig.safeParse(Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined)));
  if (!parsed.success) throw new FerryError('E_CONFIG', `invalid agent configuration: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
