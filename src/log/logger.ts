// Structured JSON logs on stderr (stdout belongs to command results).

import { pino } from 'pino';

export type Logger = pino.Logger;

export function createLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { level: process.env.FERRY_LOG_LEVEL ?? 'info', base: { component, ...bindings }, redact: ['secret', '*.secret', 'token', '*.token'] },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that drops everything: for tests and for quiet CLI paths. */
export const silentLogger = (): Logger => pino({ level: 'silent' });
