// Process liveness that tells a zombie from a live process.

import { readFileSync } from 'node:fs';

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
