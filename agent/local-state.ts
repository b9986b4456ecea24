// What an agent remembers about each migration it takes part in, on disk so a restarted agent can finish or undo it.

import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FerryError, migrationId as MigrationIdSchema, ContainerSpec, Manifest, PodIdentity } from '../src/protocol/index.js';

export const SourceState = z.object({
  role: z.literal('source'),
  migrationId: z.string(),
  containerId: z.string(),
  /** The peer allowed to pull, and the one-time token it must present. */
  peer: z.string(),
  token: z.string(),
  /** The restart policy to put back on rollback: it is switched off while the container is dumped. */
  restartPolicy: ContainerSpec.shape.restartPolicy,
  volumes: z.array(z.string()),
  upperDir: z.string(),
  /** True once CRIU has dumped (and so stopped) the container. */
  dumped: z.boolean(),
  manifest: Manifest.nullable(),
  /** Pre-copy: the container's CFS quota before auto-converge throttled it, to put back on every path. */
  cpuQuotaUs: z.number().int().nullable().default(null),
  /** A pod's container (containerd CRI): containerd, not Docker, owns it; its task ends at the dump. */
  pod: PodIdentity.nullable().default(null),
  /** A pod's /dev/shm (the sandbox's tmpfs): its files travel as the volume POD_SHM_VOLUME. */
  shmDir: z.string().nullable().default(null),
  /** Pure post-copy: the dumped tasks are dead, their pages live only in CRIU's lazy session (this agent's memory). */
  postcopy: z.boolean().default(false),
});
export type SourceState = z.infer<typeof SourceState>;

export const TargetState = z.object({
  role: z.literal('target'),
  migrationId: z.string(),
  containerId: z.string(),
  upperDir: z.string(),
  /** Volumes this migration created (and so removes on abort); pre-existing ones are left alone. */
  createdVolumes: z.array(z.string()),
  volumes: z.array(z.string()),
  pulled: z.boolean(),
  restored: z.boolean(),
  /**
   * A pod's container: nothing is created here; the state waits (staged) for the replacement pod's
   * container, whose shim claims it. containerId is empty until then, upperDir the staging dir.
   */
  pod: PodIdentity.nullable().default(null),
});
export type TargetState = z.infer<typeof TargetState>;

const State = z.discriminatedUnion('role', [SourceState, TargetState]);
export type LocalState = z.infer<typeof State>;

export class LocalStates {
  constructor(readonly root: string) {}

  dir(mid: string): string {
    // The id is validated by the protocol schema; re-check here because it becomes a path.
    if (!MigrationIdSchema.safeParse(mid).success) throw new FerryError('E_INVALID_ARGUMENT', `bad migration id ${mid}`);
    return join(this.root, mid);
  }
  imagesDir(mid: string): string { return join(this.dir(mid), 'images'); }
  workDir(mid: string): string { return join(this.dir(mid), 'work'); }
  /** The destination's pre-copy page store: outside imagesDir, which a pull empties first. */
  pagesDir(mid: string): string { return join(this.dir(mid), 'pages'); }

  async create(mid: string): Promise<void> {
    await mkdir(this.imagesDir(mid), { recursive: true, mode: 0o700 });
    await mkdir(this.workDir(mid), { recursive: true, mode: 0o700 });
  }

  async save(s: LocalState): Promise<void> {
    const p = join(this.dir(s.migrationId), 'state.json');
    // Write-then-rename: a crash leaves the old or the new state, never half of one.
    await writeFile(`${p}.tmp`, JSON.stringify(s), { mode: 0o600 });
    await rename(`${p}.tmp`, p);
  }

  async load(mid: string): Promise<LocalState | null> {
    try {
      return State.parse(JSON.parse(await readFile(join(this.dir(mid), 'state.json'), 'utf8')));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new FerryError('E_INTERNAL', `state of ${mid} unreadable`, { cause: e });
    }
  }

  async remove(mid: string): Promise<void> {
    await rm(this.dir(mid), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    try {
      return (await readdir(this.root)).filter((n) => MigrationIdSchema.safeParse(n).success);
    } catch {
      return [];
    }
  }
}
