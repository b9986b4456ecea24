// The shim's JSON log: a file from the config, never stdout (containerd reads the shim's stdout).

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import type { Logger } from '../src/log/logger.js';

/**
 * A pino logger appending to `file` (synchronously: the `start` action exits right after logging).
 * If the file cannot be opened the log goes to stderr, which containerd keeps in its own log.
 */
export function createShimLogger(file: string, bindings: Record<string, unknown> = {}): Logger {
  const opts = { level: process.env.FERRY_LOG_LEVEL ?? 'info', base: { component: 'shim', pid: process.pid, ...bindings } };
  try {
    mkdirSync(dirname(file), { recursive: true });
    return pino(opts, pino.destination({ dest: file, append: true, sync: true }));
  } catch {
    return pino(opts, pino.destination({ fd: 2, sync: true }));
  }
}
