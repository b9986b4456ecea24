// Benchmark: what Ferry's dirty tracker costs the running workload. A memhog writing random pages as fast
// as it can, its write rate measured untracked, then while the tracker re-arms every page at pre-copy's
// round pace (a scan every 100 ms and every 1 s), then untracked again. Prints JSON.

import { release, cpus, totalmem } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { clusterFile, loadCluster } from '../src/cluster.js';
import { silentLogger } from '../src/log/logger.js';
import { DirtyTracker } from '../agent/precopy/tracker.js';
import { containerProcs } from '../agent/runtime/cgroup.js';
import { PORT, Pinger, round, startMemhog } from './lib.js';

const NAME = 'bench-tracker';
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 3000);
const SIZES = (process.env.BENCH_SIZES ?? '256,1024').split(',').map(Number);
const BINARY = fileURLToPath(new URL('../../native/dirtytrack/build/ferry-dirtytrack', import.meta.url));

async function writes(p: Pinger): Promise<number> {
  return Number(/dirtied (\d+)/.exec(await p.command('stats'))![1]);
}

/** Writes per second over the window, with `during` running alongside (a measurement window, not a wait for state). */
async function rate(p: Pinger, during?: (until: number) => Promise<void>): Promise<number> {
  const w0 = await writes(p);
  const t0 = performance.now();
  await (during ? during(t0 + WINDOW_MS) : sleep(WINDOW_MS));
  const w1 = await writes(p);
  return (w1 - w0) / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const cluster = loadCluster(clusterFile());
  const host = cluster.hosts[0]!;
  const docker = new Docker({ socketPath: host.dockerSocket });
  const rows = [];
  for (const mib of SIZES) {
    process.stderr.write(`bench: tracker overhead, ${mib} MiB …\n`);
    // As fast as it can: the pacing never catches up with a rate this high.
    await startMemhog(docker, NAME, mib, 1e9);
    const p = await Pinger.open(PORT);
    try {
      const pid = (await docker.getContainer(NAME).inspect()).State.Pid;
      const before = await rate(p);
      const tracked: Record<string, number> = {};
      const scans: Record<string, number> = {};
      for (const everyMs of [100, 1000]) {
        const t = DirtyTracker.start(BINARY, silentLogger());
        try {
          await t.attach(await containerProcs(pid));
          await t.scan(true);
          let n = 0;
          let pages = 0;
          tracked[`scanEvery${everyMs}ms`] = Math.round(await rate(p, async (until) => {
            while (performance.now() + everyMs <= until) { await sleep(everyMs); pages += (await t.scan(false)).pages; n++; }
            await sleep(Math.max(0, until - performance.now()));
          }));
          scans[`scanEvery${everyMs}ms`] = Math.round(pages / Math.max(1, n));
        } finally {
          await t.close();
        }
      }
      const after = await rate(p);
      const base = (before + after) / 2;
      rows.push({
        mib,
        writesPerSecUntracked: Math.round(base),
        writesPerSecTracked: tracked,
        pagesPerScan: scans,
        overheadPct: Object.fromEntries(Object.entries(tracked).map(([k, v]) => [k, round((1 - v / base) * 100)])),
        untrackedBeforeAfter: [Math.round(before), Math.round(after)],
        verify: await p.command('verify'),
      });
    } finally {
      p.close();
      await docker.getContainer(NAME).remove({ force: true }).catch(() => undefined);
    }
  }
  process.stdout.write(`${JSON.stringify({
    benchmark: 'tracker-overhead',
    date: new Date().toISOString(),
    machine: { kernel: release(), cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30) },
    workload: 'memhog: N MiB, random 4 KiB-page writes as fast as it can; the tracker attached and re-armed by a scan at the given interval',
    rows,
  }, null, 2)}\n`);
}

main().catch((e: unknown) => { process.stderr.write(`bench failed: ${(e as Error).stack}\n`); process.exit(1); });
