// Test helpers shared by the spot watcher tests: a readable logger, a notice queue, a running watcher, a dead port.

import type { EventEmitter } from 'node:events';
import { createServer } from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { onTestFinished } from 'vitest';
import type { Logger } from '../../../src/log/logger.js';
import type { Notice, NoticeEvents } from '../../../agent/spot/notice.js';
import type { SpotWatcher } from '../../../agent/spot/spot-watcher.js';

/** One pino line: 20 debug, 30 info, 40 warn, 50 error. */
export interface LogLine { level: number; msg: string; [k: string]: unknown }

/** A debug-level logger whose lines the test can read. */
export function captureLog(): { log: Logger; lines: LogLine[]; at(level: number): LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as LogLine); cb(); } });
  return { log: pino({ level: 'debug' }, sink), lines, at: (level) => lines.filter((l) => l.level === level) };
}

export const WARN = 40;
export const INFO = 30;

/** Queues a source's notices; `next()` resolves with the next one not yet taken. */
export function collect(source: EventEmitter<NoticeEvents>): { notices: Notice[]; next(): Promise<Notice> } {
  const notices: Notice[] = [];
  const waiting: ((n: Notice) => void)[] = [];
  let taken = 0;
  source.on('notice', (n) => {
    notices.push(n);
    const w = waiting.shift();
    if (w !== undefined) { taken++; w(n); }
  });
  return {
    notices,
    next: () => {
      if (taken < notices.length) return Promise.resolve(notices[taken++] as Notice);
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/** Runs a watcher until the test ends (or `stop()`); `done` is run()'s promise. */
export function startWatcher(w: SpotWatcher): { signal: AbortSignal; done: Promise<void>; stop(): Promise<void> } {
  const ac = new AbortController();
  const done = w.run(ac.signal);
  const stop = async (): Promise<void> => { ac.abort(); await done; };
  onTestFinished(stop);
  return { signal: ac.signal, done, stop };
}

/** A port nothing listens on (taken from the OS, then released): connections to it are refused. */
export async function deadPort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
