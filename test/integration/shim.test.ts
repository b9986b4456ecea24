// containerd-shim-ferry-v1 against a real, standalone containerd 1.6 (no CRI): ctr drives a task through the
// shim exactly as through runc-v2, the shim survives a containerd kill -9, and nothing is left after delete.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const execFileP = promisify(execFile);
const REPO = join(import.meta.dirname, '..', '..');
const BUSYBOX_TAR = '/var/cache/ferry/images/busybox.tar';
const IMAGE = 'docker.io/ferry/busybox:1';
const FERRY = 'io.containerd.ferry.v1';
const RUNC = 'io.containerd.runc.v2';
const NS = 'ferry-shim-it';
const canRun = process.getuid?.() === 0 && existsSync('/usr/bin/containerd') && existsSync(BUSYBOX_TAR) && existsSync(join(REPO, 'dist/shim/main.js'));

/** Polls `check` until it returns a value other than undefined, or throws after `ms`. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const t0 = Date.now();
  let delay = 5;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}

/** Processes whose command line contains `needle`, as pid → argv. */
function processesWith(needle: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes(needle)) out.set(Number(p), cmd);
    } catch {
      // gone
    }
  }
  return out;
}

describe.skipIf(!canRun)('containerd-shim-ferry-v1 with a standalone containerd', () => {
  let dir = '';
  let sock = '';
  let containerd: ChildProcess | undefined;
  const timings: Record<string, number[]> = { [FERRY]: [], [RUNC]: [] };

  const ctr = async (...args: string[]): Promise<string> => {
    const { stdout } = await execFileP('/usr/bin/ctr', ['-a', sock, '-n', NS, ...args], { timeout: 60_000 });
    return stdout;
  };
  /** The task's status column from `ctr task ls`, or null when it is not listed. */
  const status = async (id: string): Promise<string | null> => {
    const line = (await ctr('task', 'ls')).split('\n').find((l) => l.split(/\s+/)[0] === id);
    return line === undefined ? null : (line.trim().split(/\s+/)[2] ?? null);
  };
  const startContainerd = async (): Promise<void> => {
    containerd = spawn('/usr/bin/containerd', ['--config', join(dir, 'config.toml')], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore'],
      env: { ...process.env, PATH: `${join(REPO, 'bin')}:${process.env.PATH ?? ''}`, FERRY_LOG_LEVEL: 'debug' },
    });
    await until('containerd to answer', 20_000, async () => ((await ctr('version').catch(() => '')).includes('Server:') ? true : undefined));
  };

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/ferry-shim-it-');
    sock = join(dir, 'containerd.sock');
    writeFileSync(
      join(dir, 'config.toml'),
      [
        'version = 2',
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = "${sock}"`,
        '[ttrpc]',
        `  address = "${sock}.ttrpc"`,
        '[metrics]',
        '  address = ""',
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'ferry-shim.json'), JSON.stringify({ host: 'it', log: join(dir, 'shim.log') }));
    await startContainerd();
    await ctr('images', 'import', BUSYBOX_TAR);
  });

  afterAll(async () => {
    const errors: unknown[] = [];
    if (containerd?.pid !== undefined && sock !== '') {
      const ids = (await ctr('task', 'ls', '-q').catch(() => '')).split('\n').filter(Boolean);
      for (const id of ids) await ctr('task', 'kill', '-s', 'KILL', id).catch(() => {});
      for (const id of ids) {
        await until(`task ${id} to stop`, 10_000, async () => ((await status(id).catch(() => null)) !== 'RUNNING' ? true : undefined)).catch((e: unknown) => errors.push(e));
        await ctr('task', 'delete', id).catch((e: unknown) => errors.push(e));
      }
      for (const id of (await ctr('containers', 'ls', '-q').catch(() => '')).split('\n').filter(Boolean)) await ctr('containers', 'rm', id).catch((e: unknown) => errors.push(e));
      process.kill(containerd.pid, 'SIGTERM');
      await until('containerd to exit', 10_000, () => (processesWith(`${dir}/config.toml`).size === 0 ? true : undefined)).catch((e: unknown) => errors.push(e));
    }
    // Shims and proxies of this containerd carry its socket path in their argv.
    await until('shims and proxies to exit', 10_000, () => (processesWith(sock).size === 0 ? true : undefined)).catch(() => {
      for (const pid of processesWith(sock).keys()) process.kill(pid, 'SIGKILL');
    });
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const target = line.split(' ')[1];
      if (dir !== '' && target?.startsWith(dir)) await execFileP('umount', ['-l', target]).catch((e: unknown) => errors.push(e));
    }
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
    const t = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`ctr run -d (median of ${timings[FERRY]!.length}): ferry shim ${t(timings[FERRY]!)} ms, runc-v2 ${t(timings[RUNC]!)} ms`);
    expect(errors).toEqual([]);
  });

  /** One full lifecycle with `ctr`; returns what each step printed, normalised so runtimes compare. */
  async function lifecycle(runtime: string, id: string): Promise<string[]> {
    const seen: string[] = [];
    const t0 = performance.now();
    await ctr('run', '-d', '--runtime', runtime, IMAGE, id, 'sh', '-c', 'while :; do sleep 1; done');
    timings[runtime]!.push(Math.round(performance.now() - t0));
    seen.push(`run: ${await status(id)}`);
    const ps = (await ctr('task', 'ps', id)).trim().split('\n');
    seen.push(`ps: ${ps[0]?.trim().split(/\s+/).join(' ')} (${ps.length - 1} processes)`);
    await ctr('task', 'pause', id);
    seen.push(`pause: ${await status(id)}`);
    await ctr('task', 'resume', id);
    seen.push(`resume: ${await status(id)}`);
    await ctr('task', 'kill', '-s', 'KILL', id);
    seen.push(`kill: ${await until('STOPPED', 10_000, async () => ((await status(id)) === 'STOPPED' ? 'STOPPED' : undefined))}`);
    await ctr('task', 'delete', id);
    seen.push(`delete: ${await status(id)}`);
    await ctr('containers', 'rm', id);
    return seen;
  }

  it('ctr run/ls/ps/pause/resume/kill/delete behave through the shim exactly as with runc-v2', async () => {
    const viaRunc = await lifecycle(RUNC, 'it-runc-1');
    const viaFerry = await lifecycle(FERRY, 'it-ferry-1');
    expect(viaRunc).toEqual(['run: RUNNING', 'ps: PID INFO (2 processes)', 'pause: PAUSED', 'resume: RUNNING', 'kill: STOPPED', 'delete: null']);
    expect(viaFerry).toEqual(viaRunc);
    // Two more rounds each for the timing.
    for (let i = 2; i <= 3; i++) {
      await lifecycle(RUNC, `it-runc-${i}`);
      await lifecycle(FERRY, `it-ferry-${i}`);
    }
  });

  it('the task is served by our proxy, which survives kill -9 of containerd; after delete nothing is left', async () => {
    const id = 'it-ferry-restart';
    await ctr('run', '-d', '--runtime', FERRY, IMAGE, id, 'sh', '-c', 'while :; do sleep 1; done');
    const bundle = join(dir, 'state', 'io.containerd.runtime.v2.task', NS, id);
    const address = readFileSync(join(bundle, 'address'), 'utf8');
    expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    const listen = address.slice('unix://'.length);
    const proxies = [...processesWith(listen).entries()].filter(([, cmd]) => cmd.includes('__proxy'));
    expect(proxies).toHaveLength(1);
    const [proxyPid] = proxies[0]!;
    const taskPid = (await ctr('task', 'ls')).split('\n').find((l) => l.startsWith(id))?.trim().split(/\s+/)[1];

    const old = containerd!;
    const exited = new Promise((r) => old.once('exit', r));
    process.kill(old.pid!, 'SIGKILL');
    await exited;
    expect(existsSync(`/proc/${proxyPid}`)).toBe(true);
    await startContainerd();
    expect(await status(id)).toBe('RUNNING');
    expect((await ctr('task', 'ls')).split('\n').find((l) => l.startsWith(id))?.trim().split(/\s+/)[1]).toBe(taskPid);
    expect((await ctr('task', 'ps', id)).trim().split('\n').length).toBeGreaterThan(1);
    // containerd reconnected to our socket (from <bundle>/address), not to runc-v2's.
    const log = readFileSync(join(dir, 'shim.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { pid: number; msg: string });
    expect(log.filter((e) => e.pid === proxyPid && e.msg === 'containerd connected').length).toBeGreaterThanOrEqual(2);

    await ctr('task', 'kill', '-s', 'KILL', id);
    await until('STOPPED', 10_000, async () => ((await status(id)) === 'STOPPED' ? true : undefined));
    await ctr('task', 'delete', id);
    await ctr('containers', 'rm', id);
    await until('the proxy to exit', 10_000, () => (existsSync(`/proc/${proxyPid}`) ? undefined : true));
    expect(existsSync(listen)).toBe(false);
    expect(processesWith(sock).size).toBe(0);
    expect(readFileSync(join(dir, 'shim.log'), 'utf8')).toMatch(/is gone and no containerd is connected/);
  });
});
