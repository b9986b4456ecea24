// CRIU dumps through runc directly: Docker's own checkpoint path tars every page through containerd's content store.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../src/protocol/index.js';
import { run } from '../../src/util/exec.js';

export interface RuncConfig {
  /** The real runc binary. */
  runc: string;
  /** CRIU 4.2.x (older versions cannot dump inet sockets on kernels ≥ 6.16). */
  criu: string;
  /** CRIU options runc never sets itself (e.g. the nftables network lock). */
  criuConfigFile: string | null;
}

export class RuncCheckpointer {
  constructor(private readonly cfg: RuncConfig) {}

  /**
   * Dumps a running container's processes into imagesDir; the processes are gone afterwards. On failure
   * CRIU resumes them, so the container keeps running, and the error carries the first CRIU error line.
   */
  async dump(runcRoot: string, id: string, imagesDir: string, workDir: string, signal: AbortSignal): Promise<void> {
    const env = { ...process.env };
    if (this.cfg.criuConfigFile) env.CRIU_CONFIG_FILE = this.cfg.criuConfigFile;
    const args = ['--root', runcRoot, '--criu', this.cfg.criu, 'checkpoint', '--tcp-established', '--image-path', imagesDir, '--work-path', workDir, id];
    const r = await run(this.cfg.runc, args, { signal, env, allowFailure: true });
    if (r.code !== 0) {
      const log = join(workDir, 'dump.log');
      throw new FerryError('E_CRIU_DUMP', `checkpoint of ${id.slice(0, 12)} failed: ${await firstCriuError(log) ?? r.stderr.trim().slice(-400)}`, { details: { log } });
    }
  }
}

/** CRIU's first "Error (" line is the cause; everything after it is fallout. */
export async function firstCriuError(logPath: string): Promise<string | null> {
  try {
    const text = await readFile(logPath, 'utf8');
    // The RLIMIT_NOFILE complaint appears in every run here and is harmless.
    const line = text.split('\n').find((l) => l.includes('Error (') && !l.includes('RLIMIT_NOFILE'));
    return line?.trim() ?? null;
  } catch {
    return null;
  }
}
