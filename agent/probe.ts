// Capability probe at start: what this host's kernel, CRIU, Docker and runc can do.

import { release } from 'node:os';
import type { Capabilities } from '../src/protocol/index.js';
import { run } from '../src/util/exec.js';
import type { DockerRuntime } from './runtime/docker-runtime.js';

export async function probeCapabilities(criu: string, runc: string, docker: DockerRuntime): Promise<Capabilities> {
  const criuVersion = await run(criu, ['--version'], { allowFailure: true })
    .then((r) => /Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? null, () => null);
  const feature = (f: string): Promise<boolean> =>
    run(criu, ['check', '--feature', f], { allowFailure: true }).then((r) => r.code === 0, () => false);
  const [softDirty, uffd, dockerVersion, runcVersion] = await Promise.all([
    criuVersion ? feature('mem_dirty_track') : Promise.resolve(false),
    criuVersion ? feature('uffd-noncoop') : Promise.resolve(false),
    docker.version().catch(() => null),
    run(runc, ['--version'], { allowFailure: true }).then((r) => /runc version (\S+)/.exec(r.stdout)?.[1] ?? null, () => null),
  ]);
  return { criuVersion, criuUsable: criuAtLeast(criuVersion, 4, 2), kernel: release(), softDirty, uffd, dockerVersion, runcVersion };
}

export function criuAtLeast(v: string | null, major: number, minor: number): boolean {
  const m = v ? /^(\d+)\.(\d+)/.exec(v) : null;
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}
