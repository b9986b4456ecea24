// Docker adapter: container lifecycle through dockerode, with Docker's quirks and errors mapped in one place.

import Docker from 'dockerode';
import { FerryError, type ContainerSpec, type ContainerSummary, type VolumeSpec } from '../../src/protocol/index.js';

export interface MigratableContainer {
  id: string;
  name: string;
  running: boolean;
  pid: number;
  spec: ContainerSpec;
  runtime: string;
  upperDir: string | null;
  rssBytes: number;
  /** Why this container cannot be migrated; empty when it can. */
  rejectReasons: string[];
}

type Inspect = Docker.ContainerInspectInfo & {
  HostConfig: Docker.HostConfig & { Init?: boolean | null; NanoCpus?: number; CpusetCpus?: string };
};

/** Maps a dockerode failure to a typed error: 404 → E_NOT_FOUND, 409 → E_CONFLICT, rest → E_DOCKER. */
export function dockerError(e: unknown, what: string): FerryError {
  if (e instanceof FerryError) return e;
  const status = (e as { statusCode?: number }).statusCode;
  const msg = (e as { json?: { message?: string } }).json?.message ?? (e as Error).message ?? String(e);
  if ((e as Error).name === 'AbortError') return new FerryError('E_ABORTED', `${what}: aborted`, { cause: e });
  if (status === 404) return new FerryError('E_NOT_FOUND', `${what}: ${msg}`, { cause: e });
  if (status === 409) return new FerryError('E_CONFLICT', `${what}: ${msg}`, { cause: e });
  return new FerryError('E_DOCKER', `${what}: ${msg}`, { cause: e, details: status ? { status } : {} });
}

export class DockerRuntime {
  readonly docker: Docker;
  constructor(readonly socketPath: string) {
    this.docker = new Docker({ socketPath });
  }

  async version(): Promise<string> {
    const v = await this.docker.version();
    return v.Version;
  }

  async dataRoot(): Promise<string> {
    const info = (await this.docker.info()) as { DockerRootDir: string };
    return info.DockerRootDir;
  }

  async list(all: boolean, host: string): Promise<ContainerSummary[]> {
    const cs = await this.docker.listContainers({ all });
    return cs.map((c) => ({ host, id: c.Id, name: (c.Names[0] ?? '').replace(/^\//, ''), image: c.Image, state: c.State, status: c.Status, labels: c.Labels ?? {} }));
  }

  async inspect(ref: string, signal?: AbortSignal): Promise<Inspect> {
    try {
      return (await this.docker.getContainer(ref).inspect({ abortSignal: signal } as object)) as Inspect;
    } catch (e) {
      throw dockerError(e, `container ${ref}`);
    }
  }

  async isRunning(id: string): Promise<boolean> {
    try {
      return (await this.inspect(id)).State.Running;
    } catch (e) {
      if (e instanceof FerryError && e.code === 'E_NOT_FOUND') return false;
      throw e;
    }
  }

  /** Reads what is needed to recreate the container elsewhere, and lists what blocks a migration. */
  async describe(ref: string, signal?: AbortSignal): Promise<MigratableContainer> {
    const c = await this.inspect(ref, signal);
    const h = c.HostConfig;
    const reasons: string[] = [];
    if (!c.State.Running) reasons.push(`container is ${c.State.Status}, not running`);
    if (c.State.Paused) reasons.push('container is paused');
    const net = h.NetworkMode ?? 'default';
    if (net !== 'host' && net !== 'none') reasons.push(`network mode ${net} is not supported (use host or none)`);
    const ipc = h.IpcMode ?? '';
    if (ipc !== 'private' && ipc !== '') reasons.push(`ipc mode ${ipc} would lose /dev/shm contents (use private)`);
    const volumes: VolumeSpec[] = [];
    for (const m of c.Mounts) {
      if (m.Type === 'volume' && m.Name && (m.Driver ?? 'local') === 'local') volumes.push({ name: m.Name, destination: m.Destination, readOnly: !m.RW });
      else reasons.push(`${m.Type} mount at ${m.Destination} cannot be moved (only local named volumes travel)`);
    }
    const cfg = c.Config;
    const spec: ContainerSpec = {
      name: c.Name.replace(/^\//, ''),
      imageId: c.Image,
      imageRef: cfg.Image,
      cmd: cfg.Cmd ?? null,
      entrypoint: typeof cfg.Entrypoint === 'string' ? [cfg.Entrypoint] : (cfg.Entrypoint ?? null),
      env: cfg.Env ?? [],
      // Our own bookkeeping label describes the last migration, not the workload: it does not travel.
      labels: Object.fromEntries(Object.entries(cfg.Labels ?? {}).filter(([k]) => !k.startsWith('dev.ferry.'))),
      workingDir: cfg.WorkingDir ?? '',
      user: cfg.User ?? '',
      // CRIU restores the UTS namespace from the image; the new container must agree with it.
      hostname: cfg.Hostname,
      domainname: cfg.Domainname ?? '',
      tty: cfg.Tty,
      openStdin: cfg.OpenStdin,
      stopSignal: (cfg as { StopSignal?: string }).StopSignal ?? null,
      networkMode: net === 'host' ? 'host' : 'none',
      restartPolicy: {
        name: (h.RestartPolicy?.Name ?? '') as ContainerSpec['restartPolicy']['name'],
        maximumRetryCount: h.RestartPolicy?.MaximumRetryCount ?? 0,
      },
      memory: h.Memory ?? 0,
      memorySwap: h.MemorySwap ?? 0,
      nanoCpus: h.NanoCpus ?? 0,
      cpuShares: h.CpuShares ?? 0,
      cpuQuota: h.CpuQuota ?? 0,
      cpuPeriod: h.CpuPeriod ?? 0,
      cpusetCpus: h.CpusetCpus ?? '',
      pidsLimit: h.PidsLimit ?? null,
      ipcMode: ipc === 'private' ? 'private' : '',
      shmSize: h.ShmSize ?? 0,
      capAdd: h.CapAdd ?? null,
      capDrop: h.CapDrop ?? null,
      securityOpt: h.SecurityOpt ?? null,
      readonlyRootfs: h.ReadonlyRootfs ?? false,
      init: h.Init ?? null,
      tmpfs: (h.Tmpfs as Record<string, string> | undefined) ?? null,
      volumes,
    };
    const upper = (c.GraphDriver?.Data as Record<string, string> | undefined)?.UpperDir ?? null;
    return {
      id: c.Id, name: spec.name, running: c.State.Running, pid: c.State.Pid, spec, runtime: h.Runtime ?? 'runc',
      upperDir: upper, rssBytes: await rssOf(c.Id, c.State.Pid), rejectReasons: reasons,
    };
  }

  /** The tag if it names exactly this image here (so `docker ps` shows it), else the bare id. */
  async imageName(imageId: string, ref: string): Promise<string> {
    try {
      return (await this.docker.getImage(ref).inspect()).Id === imageId ? ref : imageId;
    } catch {
      return imageId;
    }
  }

  async hasImage(imageId: string): Promise<boolean> {
    try {
      await this.docker.getImage(imageId).inspect();
      return true;
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return false;
      throw dockerError(e, `image ${imageId}`);
    }
  }

  /** Creates the volume if missing; returns its mountpoint and whether this call created it. */
  async ensureVolume(name: string, labels: Record<string, string>): Promise<{ mountpoint: string; created: boolean }> {
    try {
      const v = await this.docker.getVolume(name).inspect();
      return { mountpoint: v.Mountpoint, created: false };
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 404) throw dockerError(e, `volume ${name}`);
    }
    try {
      const v = (await this.docker.createVolume({ Name: name, Labels: labels })) as unknown as { Mountpoint?: string };
      const mp = v.Mountpoint ?? (await this.docker.getVolume(name).inspect()).Mountpoint;
      return { mountpoint: mp, created: true };
    } catch (e) {
      throw dockerError(e, `create volume ${name}`);
    }
  }

  async volumeMountpoint(name: string): Promise<string> {
    try {
      return (await this.docker.getVolume(name).inspect()).Mountpoint;
    } catch (e) {
      throw dockerError(e, `volume ${name}`);
    }
  }

  /** Removes a volume unless another container still uses it (Docker answers 409 then). */
  async removeVolumeIfUnused(name: string): Promise<boolean> {
    try {
      await this.docker.getVolume(name).remove();
      return true;
    } catch (e) {
      const s = (e as { statusCode?: number }).statusCode;
      if (s === 404 || s === 409) return false;
      throw dockerError(e, `remove volume ${name}`);
    }
  }

  /** Creates (does not start) the container from a spec, labelled with the migration that made it. */
  async create(spec: ContainerSpec, extraLabels: Record<string, string>, signal?: AbortSignal): Promise<{ id: string; upperDir: string }> {
    const opts: Docker.ContainerCreateOptions & Record<string, unknown> = {
      name: spec.name,
      Image: await this.imageName(spec.imageId, spec.imageRef),
      Cmd: spec.cmd ?? undefined,
      Entrypoint: spec.entrypoint ?? undefined,
      Env: spec.env,
      Labels: { ...spec.labels, ...extraLabels },
      WorkingDir: spec.workingDir,
      User: spec.user,
      Hostname: spec.hostname,
      Domainname: spec.domainname,
      Tty: spec.tty,
      OpenStdin: spec.openStdin,
      StopSignal: spec.stopSignal ?? undefined,
      HostConfig: {
        NetworkMode: spec.networkMode,
        RestartPolicy: { Name: spec.restartPolicy.name, MaximumRetryCount: spec.restartPolicy.maximumRetryCount },
        Memory: spec.memory,
        MemorySwap: spec.memorySwap,
        NanoCpus: spec.nanoCpus,
        CpuShares: spec.cpuShares,
        CpuQuota: spec.cpuQuota,
        CpuPeriod: spec.cpuPeriod,
        CpusetCpus: spec.cpusetCpus,
        PidsLimit: spec.pidsLimit ?? undefined,
        IpcMode: 'private',
        ShmSize: spec.shmSize || undefined,
        CapAdd: spec.capAdd ?? undefined,
        CapDrop: spec.capDrop ?? undefined,
        SecurityOpt: spec.securityOpt ?? undefined,
        ReadonlyRootfs: spec.readonlyRootfs,
        Init: spec.init ?? undefined,
        Tmpfs: spec.tmpfs ?? undefined,
        Mounts: spec.volumes.map((v) => ({ Type: 'volume' as const, Source: v.name, Target: v.destination, ReadOnly: v.readOnly })),
      } as Docker.HostConfig,
      abortSignal: signal,
    };
    try {
      const c = await this.docker.createContainer(opts);
      const i = await this.inspect(c.id);
      const upper = (i.GraphDriver?.Data as Record<string, string> | undefined)?.UpperDir;
      if (!upper) throw new FerryError('E_PRECONDITION', 'the destination storage driver has no overlay upperdir');
      return { id: c.id, upperDir: upper };
    } catch (e) {
      throw dockerError(e, `create container ${spec.name}`);
    }
  }

  async setRestartPolicy(id: string, policy: ContainerSpec['restartPolicy']): Promise<void> {
    try {
      await this.docker.getContainer(id).update({ RestartPolicy: { Name: policy.name, MaximumRetryCount: policy.maximumRetryCount } });
    } catch (e) {
      throw dockerError(e, `update restart policy of ${id}`);
    }
  }

  /** `docker start --checkpoint NAME`: the checkpoint must already sit in the container's checkpoints dir. */
  async startFromCheckpoint(id: string, checkpoint: string): Promise<void> {
    try {
      // dockerode sends options as a JSON body unless told otherwise; the API refuses a body on start.
      await this.docker.getContainer(id).start({ _query: { checkpoint }, _body: {} } as object);
    } catch (e) {
      const err = dockerError(e, `restore of ${id}`);
      throw err.code === 'E_DOCKER' ? new FerryError('E_CRIU_RESTORE', err.message, { cause: e }) : err;
    }
  }

  async remove(id: string): Promise<boolean> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: false });
      return true;
    } catch (e) {
      const s = (e as { statusCode?: number }).statusCode;
      if (s === 404) return false;
      throw dockerError(e, `remove ${id}`);
    }
  }

  /** Waits (bounded) until Docker agrees the container is no longer running, e.g. after runc killed it. */
  async waitNotRunning(id: string, signal: AbortSignal): Promise<void> {
    const w = this.docker.getContainer(id).wait({ condition: 'not-running', abortSignal: signal } as object);
    await w.catch((e: unknown) => { throw dockerError(e, `wait for ${id}`); });
  }
}

/** Resident memory of the container's init (what the checkpoint will roughly weigh). */
async function rssOf(_id: string, pid: number): Promise<number> {
  if (!pid) return 0;
  try {
    const { readFile } = await import('node:fs/promises');
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
