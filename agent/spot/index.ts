// The spot-notice entry point: builds the watcher for the configured provider and re-exports the public API.

import { z } from 'zod';
import type { Logger } from '../../src/log/logger.js';
import { FerryError } from '../../src/protocol/errors.js';
import { AwsWatcher } from './aws-watcher.js';
import { AzureWatcher } from './azure-watcher.js';
import type { Clock } from './clock.js';
import { GcpWatcher } from './gcp-watcher.js';
import type { Notice } from './notice.js';
import type { SpotWatcher } from './spot-watcher.js';

/** Which provider's notices to watch (`none`: no watcher), where, and how often. */
export interface SpotConfig {
  provider: 'aws' | 'gcp' | 'azure' | 'none';
  /** Base URL of the metadata service; defaults to the provider's documented address. */
  endpoint?: string | undefined;
  /** Poll interval in ms; defaults per provider (AWS 5000, GCP 1000 as minimum gap, Azure 1000). */
  pollMs?: number | undefined;
}

/** The documented metadata addresses. */
export const DEFAULT_ENDPOINTS = {
  aws: 'http://169.254.169.254',
  gcp: 'http://metadata.google.internal',
  azure: 'http://169.254.169.254',
} as const;

const ConfigSchema = z.object({
  provider: z.enum(['aws', 'gcp', 'azure', 'none']),
  endpoint: z.url({ protocol: /^https?$/ }).optional(),
  pollMs: z.number().int().positive().optional(),
});

/**
 * Builds the watcher for `c.provider`, or null for `none`. `onNotice`, if given, is subscribed to `notice`. Start
 * it with `watcher.run(signal)`. Throws `E_CONFIG` for an invalid configuration.
 */
export function createWatcher(c: SpotConfig, log: Logger, onNotice?: (n: Notice) => void, clock?: Clock): SpotWatcher | null {
  const parsed = ConfigSchema.safeParse(c);
  if (!parsed.success) throw new FerryError('E_CONFIG', `invalid spot configuration: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { provider, endpoint, pollMs } = parsed.data;
  if (provider === 'none') return null;
  const o = {
    endpoint: endpoint ?? DEFAULT_ENDPOINTS[provider],
    log: log.child({ spotProvider: provider }),
    ...(clock === undefined ? {} : { clock }),
    ...(pollMs === undefined ? {} : { pollMs }),
  };
  const w: SpotWatcher = provider === 'aws' ? new AwsWatcher(o) : provider === 'gcp' ? new GcpWatcher(o) : new AzureWatcher(o);
  if (onNotice !== undefined) w.on('notice', onNotice);
  return w;
}

export { AwsWatcher, type AwsWatcherOptions } from './aws-watcher.js';
export { AzureWatcher, type AzureWatcherOptions } from './azure-watcher.js';
export { GcpWatcher, type GcpWatcherOptions } from './gcp-watcher.js';
export { ManualNoticeSource, type ManualTrigger } from './manual.js';
export { SpotWatcher, type WatcherOptions } from './spot-watcher.js';
export { realClock, type Clock } from './clock.js';
export { deadlineFromWall, type Notice, type NoticeEvents, type NoticeKind, type NoticeProvider } from './notice.js';
