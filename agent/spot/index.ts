// Picks the watcher for the configured provider.

import type { Logger } from '../../src/log/logger.js';
import { AwsWatcher } from './aws.js';
import { AzureWatcher } from './azure.js';
import { GcpWatcher } from './gcp.js';
import { realClock, type Clock, type Notice } from './notice.js';
import type { Watcher } from './watcher.js';

export interface SpotConfig { provider: 'aws' | 'gcp' | 'azure' | 'none'; endpoint?: string | undefined; pollMs?: number | undefined }

/** Documented metadata addresses; tests and unusual set-ups pass their own endpoint. */
const DEFAULT_ENDPOINT = { aws: 'http://169.254.169.254', gcp: 'http://metadata.google.internal', azure: 'http://169.254.169.254' } as const;
/** AWS and Azure recommend polling every few seconds; GCP's hanging GET returns on change. */
const DEFAULT_POLL_MS = { aws: 5_000, gcp: 1_000, azure: 5_000 } as const;

export function createWatcher(c: SpotConfig, log: Logger, onNotice: (n: Notice) => void, clock: Clock = realClock): Watcher | null {
  if (c.provider === 'none') return null;
  const o = { endpoint: c.endpoint ?? DEFAULT_ENDPOINT[c.provider], pollMs: c.pollMs ?? DEFAULT_POLL_MS[c.provider], timeoutMs: 2_000, log, onNotice };
  switch (c.provider) {
    case 'aws': return new AwsWatcher(o, clock);
    case 'gcp': return new GcpWatcher(o, clock);
    case 'azure': return new AzureWatcher(o, null, clock);
  }
}

export type { Notice } from './notice.js';
