// Process liveness that tells a zombie from a live process.

import { readFileSync, readdirSync } from 'node:fs';
import { FerryError } from '../protocol/index.js';

/** Alive and not a zombie: daemons outlive whoever started them, and not every init reaps orphans. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Resolves once none of `pids` holds an open file any more (polled each millisecond): a killed task closes its
 * files (sockets) after unmapping its memory and before it turns zombie; a pid namespace's init may then stay
 * in its exit, waiting for children that a ptracer (CRIU) still holds, so "gone" would be too strong. Every
 * thread is looked at: the files go with the last one.
 */
export async function waitFilesClosed(pids: readonly number[], timeoutMs: number): Promise<void> {
  const until = performance.now() + timeoutMs;
  let left = pids.filter(holdsFiles);
  while (left.length) {
    if (performance.now() > until) throw new FerryError('E_INTERNAL', `processes ${left.join(', ')} still hold open files after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 1));
    left = left.filter(holdsFiles);
  }
}

function holdsFiles(pid: number): boolean {
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return false; }
  for (const t of tids) {
    try { if (readdirSync(`/proc/${pid}/task/${t}/fd`).length > 0) return true; } catch { /* exited */ }
  }
  return false;
}
