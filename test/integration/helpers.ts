// What the integration tests share: docker clients per host, the controller, the CLI, and workload probes.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import Docker from 'dockerode';
import { expect } from 'vitest';
import { ControllerApi, Progress, type MigrationReport, type ProgressEvent } from '../../src/protocol/index.js';
import { dial } from '../../src/rpc/handshake.js';
import type { Connection } from '../../src/rpc/connection.js';
import { silentLogger } from '../../src/log/logger.js';
import { run } from '../../src/util/exec.js';
import { loadCluster, type ClusterConfig } from '../../src/cluster.js';
import { packageRoot } from '../../src/cli/local-cluster.js';
import { TEST_CLUSTER_FILE, TEST_HOSTS, testCluster } from './cluster.js';

/**
 * Waits until `probe` returns a value `ok` accepts, checking every 50 ms, bounded by `timeoutMs`; usable in
 * hooks, where expect.poll is not. This waits for a state, never for an amount of time.
 */
export async function waitFor<T>(probe: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const until = performance.now() + timeoutMs;
  let last: T | undefined;
  let err: unknown;
  while (performance.now() < until) {
    try {
      last = await probe();
      if (ok(last)) return last;
    } catch (e) {
      err = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)}${err ? `, error: ${(err as Error).message}` : ''})`);
}

export const cluster = (): ClusterConfig => loadCluster(TEST_CLUSTER_FILE);
export const docker = (host: string): Docker => new Docker({ socketPath: `/run/ferry/${host}.sock` });

export async function controller(): Promise<Connection> {
  const c = cluster();
  const { conn } = await dial({ url: c.controller.url, name: 'test', role: 'cli', serverRole: 'controller', secret: c.secret, log: silentLogger() });
  return conn;
}

/** A connection to one host's agent as the controller would open it. */
export async function agent(host: string): Promise<Connection> {
  const c = cluster();
  const h = c.hosts.find((x) => x.name === host)!;
  const { conn } = await dial({ url: h.agentUrl, name: 'test', role: 'controller', serverRole: 'agent', secret: c.secret, log: silentLogger() });
  return conn;
}

export interface MigrateOptions { dryRun?: boolean; mode?: 'auto' | 'precopy' | 'postcopy' | 'stop-and-copy'; maxRounds?: number; maxDowntimeMs?: number; autoConverge?: boolean }

export async function migrate(container: string, to: string, extra: MigrateOptions = {}, onProgress?: (e: ProgressEvent) => void): Promise<MigrationReport> {
  const c = await controller();
  if (onProgress) c.on('event', (m, p) => { if (m === Progress.name) onProgress(Progress.payload.parse(p)); });
  try {
    return await c.request(ControllerApi.StartMigration, { ...extra, container, to, dryRun: !!extra.dryRun, timeoutMs: 120_000 });
  } finally {
    c.close();
  }
}

/** Runs the real CLI against the test cluster; returns exit code and output. */
export function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(packageRoot(), 'bin/ferry.js'), ...args], { env: { ...process.env, FERRY_CLUSTER: TEST_CLUSTER_FILE } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Restarts one host's agent, optionally with fault injection, and waits until the controller sees it. */
export async function restartAgent(host: string, env: Record<string, string> = {}): Promise<void> {
  const lc = testCluster();
  const cfg = cluster();
  await lc.stopAgent(cfg, host);
  await lc.startAgent(cfg, host, env, AbortSignal.timeout(60_000));
  await waitFor(async () => {
    const c = await controller();
    try {
      return (await c.request(ControllerApi.ListHosts, {})).find((h) => h.name === host)?.connected;
    } finally {
      c.close();
    }
  }, (v) => v === true, 30_000, `the controller to reconnect to ${host}`);
}

export async function killAgent(host: string): Promise<void> {
  await testCluster().stopAgent(cluster(), host, 'SIGKILL');
}

export async function containersNamed(host: string, name: string): Promise<Docker.ContainerInfo[]> {
  return docker(host).listContainers({ all: true, filters: { name: [`^/${name}$`] } });
}

/** Asserts the one-copy rule: running on `on`, absent from every other host. */
export async function expectOnlyOn(name: string, on: string): Promise<void> {
  for (const h of cluster().hosts) {
    const cs = await containersNamed(h.name, name);
    if (h.name === on) {
      expect(cs, `${name} on ${h.name}`).toHaveLength(1);
      expect(cs[0]!.State).toBe('running');
    } else {
      expect(cs, `${name} must be gone from ${h.name}`).toHaveLength(0);
    }
  }
}

/** Asserts nothing of any migration is left: no image dirs, no checkpoint copies, no never-started containers, no network locks. */
export async function expectNoResidue(): Promise<void> {
  // A CRIU dump locks the container's connections with an nftables table that only a restore removes.
  const tables = (await run('nft', ['list', 'tables'], { allowFailure: true })).stdout;
  expect(tables.split('\n').filter((l) => l.includes('CRIU-')), 'CRIU network locks left behind').toEqual([]);
  // Pre-copy's tracker must never outlive its migration: it holds ptrace-injected userfaultfds.
  const trackers = (await run('pgrep', ['-f', 'ferry-dirtytrack'], { allowFailure: true })).stdout.trim();
  expect(trackers, 'dirty trackers left running').toBe('');
  for (const h of cluster().hosts) {
    const dirs = existsSync(h.dataDir) ? readdirSync(h.dataDir) : [];
    expect(dirs, `migration state left on ${h.name}`).toEqual([]);
    const tmp = `/var/lib/ferry/hosts/${h.name}/tmp`;
    const ctrd = existsSync(tmp) ? readdirSync(tmp).filter((n) => n.startsWith('ctrd-checkpoint')) : [];
    expect(ctrd, `containerd checkpoint copies left on ${h.name}`).toEqual([]);
    const created = await docker(h.name).listContainers({ all: true, filters: { status: ['created'] } });
    expect(created.map((c) => c.Names[0]), `never-started containers left on ${h.name}`).toEqual([]);
  }
}

export async function removeEverywhere(name: string): Promise<void> {
  for (const h of cluster().hosts) {
    for (const c of await containersNamed(h.name, name)) await docker(h.name).getContainer(c.Id).remove({ force: true, v: true });
  }
}

/** A Redis on the host network of `host`, answering PING; state only in memory (no RDB, no AOF). */
export async function startRedis(host: string, name: string, port: number): Promise<void> {
  await removeEverywhere(name);
  const c = await docker(host).createContainer({
    name, Image: 'ferry/redis:7', Hostname: name,
    Cmd: ['redis-server', '--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes'],
    HostConfig: { NetworkMode: 'host' },
  });
  await c.start();
  await waitFor(async () => {
    const r = await RedisConn.open(port);
    const pong = await r.cmd('PING');
    r.close();
    return pong;
  }, (p) => p === '+PONG', 10_000, 'redis to answer');
}

export async function removeVolumeEverywhere(name: string): Promise<void> {
  for (const h of cluster().hosts) await docker(h.name).getVolume(name).remove().catch(() => undefined);
}

/** Minimal RESP client over one TCP connection: the connection itself is what must survive a migration. */
export class RedisConn {
  private buf = '';
  private waiters: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  closedWith: string | null = null;
  private constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\r\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        this.waiters.shift()?.resolve(line);
      }
    });
    const fail = (why: string): void => {
      this.closedWith ??= why;
      for (const w of this.waiters.splice(0)) w.reject(new Error(`connection ${why}`));
    };
    sock.on('close', () => fail('closed'));
    sock.on('error', (e) => fail(e.message));
  }
  static open(port: number): Promise<RedisConn> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new RedisConn(s)));
      s.once('error', reject);
    });
  }
  /** Sends one command and returns its single-line reply (use commands with integer or status replies). */
  cmd(...args: string[]): Promise<string> {
    if (this.closedWith) return Promise.reject(new Error(`connection ${this.closedWith}`));
    const wire = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.sock.write(wire);
    });
  }
  close(): void { this.sock.destroy(); }
}

/** Sends one line to a line-protocol server (memhog) on its own connection and returns the reply line. */
export function lineCommand(port: number, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(`${cmd}\n`));
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) { s.destroy(); resolve(buf.slice(0, i)); }
    });
    s.once('error', reject);
  });
}

/** The counter workload's log, read from its volume on whichever host holds it: one number per line. */
export async function counterLog(host: string, volume: string): Promise<number[]> {
  const v = await docker(host).getVolume(volume).inspect();
  return readFileSync(join(v.Mountpoint, 'log'), 'utf8').trim().split('\n').map(Number);
}

/** Index of the first line that breaks 0, 1, 2, … (a gap, a duplicate, a restart from zero), or -1. */
export const firstBreak = (xs: number[]): number => xs.findIndex((x, i) => x !== i);

/** A memhog container on the first test host (host network), started afresh from `cmd`. */
export async function startMemhog(name: string, cmd: string[]): Promise<void> {
  await removeEverywhere(name);
  const c = await docker(TEST_HOSTS[0]).createContainer({ name, Image: 'ferry/memhog:1', Hostname: name, Cmd: cmd, HostConfig: { NetworkMode: 'host' } });
  await c.start();
}

/** One memhog writing random pages at `rate`/s, started on the first test host and answering with every page consistent. */
export async function startRandomHog(name: string, port: number, mib: number, rate: number): Promise<void> {
  await startMemhog(name, ['memhog', '--mib', String(mib), '--rate', String(rate), '--pattern', 'random', '--port', String(port)]);
  await waitFor(() => lineCommand(port, 'verify'), (r) => r === `ok ${mib * 256}`, 30_000, 'memhog to answer');
}
