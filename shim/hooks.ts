// The interception points the proxy offers Ferry: the interface, a no-op default, and the loader of the lead's implementation.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../src/log/logger.js';
import type { ShimConfig } from './config.js';
import type { ShimContainer } from './container.js';

/** What happens to the held Kill/Delete calls once `onDelete` settles. */
export type DeleteDecision = { readonly action: 'forward' } | { readonly action: 'refuse'; readonly message: string };

/** A staged migration the new container restores from. */
export interface Claim {
  readonly migrationId: string;
  /** CRIU image directory; becomes `CreateTaskRequest.checkpoint`, so runc-v2 runs `runc restore` at Start. */
  readonly imagesDir: string;
}

/** Result of the Start of a claimed container. */
export type RestoreResult = { readonly pid: number } | { readonly error: string };

/**
 * Ferry's side of the shim. Only opted-in app containers (`isOptedIn`) reach these. A hook that throws
 * never blocks a deletion or a start: the proxy logs it and carries on as if there were no Ferry.
 */
export interface ShimHooks {
  /**
   * First Kill (signal != 0, exec_id '') of an opted-in app container: migrate it away. The Kill and
   * every later Kill/Delete of that container wait for this. `signal` aborts at the container's
   * termination grace period (minus a margin) or when the proxy exits.
   */
  onDelete(c: ShimContainer, signal: AbortSignal): Promise<DeleteDecision>;
  /** Create of an opted-in app container: a staged migration to restore from, or null to start fresh. */
  claim(c: ShimContainer, signal: AbortSignal): Promise<Claim | null>;
  /** After the Start of a claimed container (or a failed Create): its pid, or why it failed. */
  restored(migrationId: string, c: ShimContainer, result: RestoreResult): Promise<void>;
}

/** Hooks of a shim without Ferry: deletions proceed, containers start fresh. */
export class NoopHooks implements ShimHooks {
  async onDelete(): Promise<DeleteDecision> {
    return { action: 'forward' };
  }
  async claim(): Promise<Claim | null> {
    return null;
  }
  async restored(): Promise<void> {}
}

/** The module the lead writes (`shim/ferry-hooks.ts`), compiled next to this file. */
export interface HooksModule {
  createHooks(config: ShimConfig, log: Logger): ShimHooks | Promise<ShimHooks>;
}

/** Where the hooks came from, for the log and for tests. */
export type LoadedHooks = { readonly hooks: ShimHooks; readonly source: 'ferry-hooks' | 'noop'; readonly reason?: string };

/** Imports `./ferry-hooks.js` next to this module; `null` when there is no such file. */
export async function importFerryHooks(): Promise<unknown> {
  const url = new URL('./ferry-hooks.js', import.meta.url);
  if (!existsSync(fileURLToPath(url))) return null;
  return import(url.href);
}

/**
 * Loads `./ferry-hooks.js` (`createHooks(config, log)`). If it is absent, or fails to load, the shim
 * runs with {@link NoopHooks} and says why in the log: a broken hook module must not stop containers.
 * `importer` is injectable for tests; it returns `null` for "no module".
 */
export async function loadHooks(config: ShimConfig, log: Logger, importer: () => Promise<unknown> = importFerryHooks): Promise<LoadedHooks> {
  let mod: unknown;
  try {
    mod = await importer();
  } catch (e: unknown) {
    const reason = `ferry-hooks.js failed to load: ${e instanceof Error ? e.message : String(e)}`;
    log.error({ reason }, 'shim hooks: using NoopHooks');
    return { hooks: new NoopHooks(), source: 'noop', reason };
  }
  if (mod === null) {
    const reason = 'ferry-hooks.js not found';
    log.info({ reason }, 'shim hooks: using NoopHooks');
    return { hooks: new NoopHooks(), source: 'noop', reason };
  }
  const create = (mod as Partial<HooksModule> | null)?.createHooks;
  if (typeof create !== 'function') {
    const reason = 'ferry-hooks.js does not export createHooks';
    log.error({ reason }, 'shim hooks: using NoopHooks');
    return { hooks: new NoopHooks(), source: 'noop', reason };
  }
  try {
    const hooks = await create(config, log);
    log.info('shim hooks: ferry-hooks loaded');
    return { hooks, source: 'ferry-hooks' };
  } catch (e: unknown) {
    const reason = `createHooks threw: ${e instanceof Error ? e.message : String(e)}`;
    log.error({ reason }, 'shim hooks: using NoopHooks');
    return { hooks: new NoopHooks(), source: 'noop', reason };
  }
}

/**
 * Hooks that are still loading: each call waits for `loaded` first. The proxy listens before the hook
 * module (and Ferry's RPC stack behind it, ~80 ms to import) is ready, so `start` returns sooner; only
 * opted-in containers ever call a hook, so nothing else waits.
 */
export function deferredHooks(loaded: Promise<ShimHooks>): ShimHooks {
  return {
    onDelete: async (c, signal) => (await loaded).onDelete(c, signal),
    claim: async (c, signal) => (await loaded).claim(c, signal),
    restored: async (id, c, result) => (await loaded).restored(id, c, result),
  };
}
