// How fast a running container writes, for `--mode auto`: arm the tracker, wait, count what was written.

import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../src/log/logger.js';
import { containerProcs } from '../runtime/cgroup.js';
import { DirtyTracker } from './tracker.js';

export interface DirtySample {
  /** Distinct pages written between the two scans. */
  dirtyPages: number;
  /** Time between the two scans, ms (the window the count covers, not the one asked for). */
  windowMs: number;
  /** Pages holding data when the window opened. */
  dataPages: number;
  processes: number;
  attachMs: number;
}

/**
 * The tracker is closed on every path (the helper's exit releases every registration in the kernel even
 * if its own release fails), so the container never stays tracked after a sample.
 */
export async function sampleDirtyRate(binary: string, initPid: number, windowMs: number, log: Logger, signal: AbortSignal): Promise<DirtySample> {
  const tracker = DirtyTracker.start(binary, log);
  try {
    const t0 = performance.now();
    const attached = await tracker.attach(await containerProcs(initPid));
    const attachMs = performance.now() - t0;
    signal.throwIfAborted();
    const first = await tracker.scan(true);
    const opened = performance.now();
    await sleep(windowMs, undefined, { signal });
    const closed = performance.now();
    const second = await tracker.scan(false);
    return {
      dirtyPages: second.pages,
      windowMs: Math.round((closed - opened) * 10) / 10,
      dataPages: first.pages,
      processes: attached.mms.length,
      attachMs: Math.round(attachMs * 10) / 10,
    };
  } finally {
    await tracker.close();
  }
}
