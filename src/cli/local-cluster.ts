// The embedded default: N local hosts (one dockerd each) on this machine, their agents and one controller.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync, closeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../util/package-root.js';
import { FerryError } from '../protocol/index.js';
import { dial } from '../rpc/handshake.js';
import { run } from '../util/exec.js';
import { processAlive } from '../util/process.js';
import { silentLogger } from '../log/logger.js';
import { ClusterConfig, loadCluster, type HostConfig } from '../cluster.js';
import { deadline } from '../util/abort.js';

export { packageRoot } from '../util/package-root.js';

export interface LocalClusterOptions {
  file: string;
  hosts: string[];
  /** Controller port; agents take the following ones. */
  basePort: number;
  stateDir: string;
  logDir?: string;
}

const alive = processAlive;

export class LocalCluster {
  readonly root = packageRoot();
  readonly logDir: string;
  constructor(readonly o: LocalClusterOptions) {
    this.logDir = o.logDir ?? '/var/log/ferry';
  }

  config(): ClusterConfig {
    if (existsSync(this.o.file)) return loadCluster(this.o.file);
    const hosts: HostConfig[] = this.o.hosts.map((name, i) => ({
      name,
      agentUrl: `ws://127.0.0.1:${this.o.basePort + 1 + i}/`,
      listen: `127.0.0.1:${this.o.basePort + 1 + i}`,
      dockerSocket: `/run/ferry/${name}.sock`,
      execRoot: `/run/ferry/${name}`,
      // tmpfs: checkpoint images never touch a disk.
      dataDir: `/dev/shm/ferry/${name}`,
    }));
    const cfg: ClusterConfig = {
      version: 1,
      secret: randomBytes(32).toString('hex'),
      controller: { url: `ws://127.0.0.1:${this.o.basePort}/`, listen: `127.0.0.1:${this.o.basePort}` },
      stateDir: this.o.stateDir,
      hosts,
    };
    mkdirSync(dirname(this.o.file), { recursive: true, mode: 0o700 });
    writeFileSync(this.o.file, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    return cfg;
  }

  /** Starts whatever is not running yet: dockerds, agents, controller. Idempotent. */
  async up(signal: AbortSignal): Promise<ClusterConfig> {
    const cfg = this.config();
    await run('bash', [join(this.root, 'scripts/hosts.sh'), 'up', ...cfg.hosts.map((h) => h.name)], { signal, errorCode: 'E_CONFIG' });
    mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
    for (const h of cfg.hosts) await this.startAgent(cfg, h.name, {}, signal);
    await this.startController(cfg, signal);
    return cfg;
  }

  /** Stops agents and controller, then the hosts; removes the cluster file. Leaves nothing running. */
  async down(signal: AbortSignal): Promise<void> {
    const cfg = existsSync(this.o.file) ? loadCluster(this.o.file) : null;
    const hosts = cfg ? cfg.hosts.map((h) => h.name) : this.o.hosts;
    await this.stopProcess('controller', cfg?.stateDir ?? this.o.stateDir);
    for (const h of hosts) await this.stopProcess(`agent-${h}`, cfg?.stateDir ?? this.o.stateDir);
    await run('bash', [join(this.root, 'scripts/hosts.sh'), 'down', ...hosts], { signal, errorCode: 'E_INTERNAL' });
    for (const h of cfg?.hosts ?? []) {
      rmSync(h.dataDir, { recursive: true, force: true });
      // Their shared parent (/dev/shm/ferry) goes too once the last host's dir is gone.
      try { rmdirSync(dirname(h.dataDir)); } catch { /* not empty or already gone */ }
    }
    rmSync(cfg?.stateDir ?? this.o.stateDir, { recursive: true, force: true });
    rmSync(this.o.file, { force: true });
    // The cluster's own directory goes too when nothing else lives in it.
    try { rmdirSync(dirname(this.o.file)); } catch { /* not empty or already gone */ }
  }

  async startAgent(cfg: ClusterConfig, name: string, env: Record<string, string>, signal: AbortSignal): Promise<void> {
    const h = cfg.hosts.find((x) => x.name === name);
    if (!h) throw new FerryError('E_NOT_FOUND', `unknown host ${name}`);
    if (!(await this.current(`agent-${name}`, cfg.stateDir))) {
      mkdirSync(h.dataDir, { recursive: true, mode: 0o700 });
      this.spawnDaemon(`agent-${name}`, cfg.stateDir, [join(this.root, 'bin/ferry-agent.js')], {
        FERRY_AGENT_HOST: h.name,
        FERRY_AGENT_DOCKER_SOCKET: h.dockerSocket,
        FERRY_AGENT_EXEC_ROOT: h.execRoot,
        FERRY_AGENT_LISTEN: h.listen,
        FERRY_AGENT_DATA_DIR: h.dataDir,
        FERRY_AGENT_SECRET: cfg.secret,
        GLIBC_TUNABLES: agentMallocTunables(process.env.GLIBC_TUNABLES),
        ...env,
      });
    }
    // Also when it was already running: `up` succeeds only if every agent answers.
    await this.waitReachable(h.agentUrl, cfg.secret, signal);
  }

  async stopAgent(cfg: ClusterConfig, name: string, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stopProcess(`agent-${name}`, cfg.stateDir, sig);
  }

  async startController(cfg: ClusterConfig, signal: AbortSignal): Promise<void> {
    if (!(await this.current('controller', cfg.stateDir))) this.spawnDaemon('controller', cfg.stateDir, [join(this.root, 'bin/ferry-controller.js'), this.o.file], {});
    await this.waitReachable(cfg.controller.url, cfg.secret, signal, async (conn) => {
      // Ready means: every agent is connected to the controller, so the first command works.
      const { ListHosts } = await import('../protocol/messages.js');
      const hosts = await conn.request(ListHosts, {});
      return hosts.every((x) => x.connected);
    });
  }

  pid(name: string, stateDir: string): number | null {
    try {
      const pid = Number(readFileSync(join(stateDir, `${name}.pid`), 'utf8').split(' ')[0]);
      return pid > 0 && alive(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /** Identifies the code a daemon runs: a daemon started from an older build is restarted by `up`. */
  private buildId(): string {
    try {
      return String(Math.floor(statSync(fileURLToPath(import.meta.url)).mtimeMs));
    } catch {
      return 'unknown';
    }
  }

  /** Running, and from the current build; a daemon from an older build is stopped here so `up` replaces it. */
  private async current(name: string, stateDir: string): Promise<boolean> {
    const pid = this.pid(name, stateDir);
    if (pid === null) return false;
    const recorded = readFileSync(join(stateDir, `${name}.pid`), 'utf8').split(' ')[1];
    if (recorded === this.buildId()) return true;
    await this.stopProcess(name, stateDir);
    return false;
  }

  private spawnDaemon(name: string, stateDir: string, args: string[], env: Record<string, string>): void {
    mkdirSync(this.logDir, { recursive: true });
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const out = openSync(join(this.logDir, `${name}.log`), 'a');
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out], env: { ...process.env, ...env } });
    closeSync(out);
    child.unref();
    writeFileSync(join(stateDir, `${name}.pid`), `${child.pid} ${this.buildId()}`);
  }

  async stopProcess(name: string, stateDir: string, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pid = this.pid(name, stateDir);
    rmSync(join(stateDir, `${name}.pid`), { force: true });
    if (pid === null) return;
    process.kill(pid, sig);
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }

  private async waitReachable(url: string, secret: string, signal: AbortSignal, ready?: (c: import('../rpc/connection.js').Connection) => Promise<boolean>): Promise<void> {
    const until = deadline(30_000, signal);
    let last = '';
    while (!until.aborted) {
      try {
        const { conn } = await dial({ url, name: 'ferry-cli', role: 'cli', serverRole: 'controller', secret, log: silentLogger(), signal: until });
        try {
          if (!ready || (await ready(conn))) return;
          last = 'not all agents connected yet';
        } finally {
          conn.close();
        }
      } catch (e) {
        last = (e as Error).message;
      }
      // Polling a freshly spawned process: there is no event to wait for across processes.
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new FerryError('E_UNAVAILABLE', `${url} did not become ready: ${last}`);
  }
}

export const defaultLocalCluster = (file: string): LocalCluster =>
  new LocalCluster({ file, hosts: ['host-a', 'host-b'], basePort: 7700, stateDir: resolve(dirname(file), 'state') });

/**
 * glibc settings for an agent. Every 1 MiB chunk buffer is above malloc's mmap threshold, so by default
 * each one is a fresh mmap whose first touch faults in 256 pages and whose free unmaps them again; with
 * the threshold at 32 MiB and trimming held off, freed chunks are reused from the heap. Measured on a
 * 256 MiB image: the agent-to-agent stream 1.2-1.4 s -> 0.9-1.1 s. Settings the caller already has win.
 */
export function agentMallocTunables(existing: string | undefined): string {
  const ours = ['glibc.malloc.mmap_threshold=33554432', 'glibc.malloc.trim_threshold=1073741824'];
  const theirs = (existing ?? '').split(':').filter(Boolean);
  const named = new Set(theirs.map((t) => t.split('=')[0]));
  return [...theirs, ...ours.filter((t) => !named.has(t.split('=')[0]))].join(':');
}
