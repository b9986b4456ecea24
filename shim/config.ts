// The shim's configuration: one JSON file next to containerd's socket, so each containerd gets its own.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ShimError } from './ttrpc/errors.js';

/** Name of the config file, looked up in the directory of containerd's `-address` socket. */
export const CONFIG_FILE_NAME = 'ferry-shim.json';

/** runc-v2, the shim we proxy to. */
export const DEFAULT_UPSTREAM = '/usr/bin/containerd-shim-runc-v2';
/** Where the shim logs when the config does not say. */
export const DEFAULT_LOG = '/var/log/ferry/shim.log';

const ShimConfigSchema = z.strictObject({
  /** Ferry host name this containerd belongs to (given to the hooks). */
  host: z.string().min(1).default('local'),
  /** Ferry cluster file, or null when the shim runs without a cluster (hooks then do nothing useful). */
  cluster: z.string().min(1).nullable().default(null),
  /** runc `--root` runc-v2 should use; null leaves runc-v2's default (`/run/containerd/runc/<ns>`). */
  runcRoot: z.string().min(1).nullable().default(null),
  /** runc binary runc-v2 should run; null leaves runc-v2's default (`runc` on PATH). */
  runcBinary: z.string().min(1).nullable().default(null),
  /** The shim binary we proxy to. */
  upstream: z.string().min(1).default(DEFAULT_UPSTREAM),
  /** JSON log file (never stdout: stdout belongs to containerd). */
  log: z.string().min(1).default(DEFAULT_LOG),
});

/** The validated config; every field present. */
export type ShimConfig = z.infer<typeof ShimConfigSchema>;

/** The config file for a containerd whose socket is `address` (`-address` of the shim's argv). */
export const configPathFor = (address: string): string => join(dirname(address.replace(/^unix:\/\//, '')), CONFIG_FILE_NAME);

/** Parses and validates a config object; missing fields get their defaults. Throws `E_SHIM_CONFIG`. */
export function parseShimConfig(raw: unknown, source = 'config'): ShimConfig {
  const r = ShimConfigSchema.safeParse(raw);
  if (!r.success) {
    throw new ShimError('E_SHIM_CONFIG', `${source}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, { source });
  }
  return r.data;
}

/** Loads `<dirname of address>/ferry-shim.json`; a missing file gives the defaults. Throws `E_SHIM_CONFIG`. */
export function loadShimConfig(address: string): ShimConfig {
  const file = configPathFor(address);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e: unknown) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return parseShimConfig({}, file);
    throw new ShimError('E_SHIM_CONFIG', `${file}: ${(e as Error).message}`, { source: file });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e: unknown) {
    throw new ShimError('E_SHIM_CONFIG', `${file}: not JSON: ${(e as Error).message}`, { source: file });
  }
  return parseShimConfig(raw, file);
}
