// Benchmark: Ferry's pre-copy against Ferry's stop-and-copy and Docker's checkpoint path, on memhog containers
// that write random pages at a fixed rate, measured in the same run. Prints JSON.
//
// Stall = what a client outside the container sees: the longest gap between two answered pings on one TCP
// connection that stays open across the move. Each configuration runs BENCH_RUNS migrations (there and back),
// and reports p50/p99 of the stall, the total time, the bytes moved, the rounds, and whether every page verified.

import { release, cpus, totalmem } from 'node:os';
import Docker from 'dockerode';
import { ControllerApi, type MigrationReport } from '../src/protocol/index.js';
import { dial } from '../src/rpc/handshake.js';
import { silentLogger } from '../src/log/logger.js';
import { clusterFile, loadCluster } from '../src/cluster.js';
import { PORT, Pinger, percentile, round, startMemhog, waitPongs } from './lib.js';

const SIZES = (process.env.BENCH_SIZES ?? '256,1024').split(',').map(Number);
/** Dirty rates in MB/s (4 KiB pages written at random). */
const RATES = (process.env.BENCH_RATES ?? '0,10,100').split(',').map(Number);
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const MODES = (process.env.BENCH_MODES ?? 'precopy,stop-and-copy,auto').split(',') as ('auto' | 'precopy' | 'postcopy' | 'stop-and-copy')[];
const NAME = 'bench-precopy';
/** Configurations to leave out, as MiB:MB/s:mode (e.g. `1024:100:precopy`, whose lazy fill alone takes minutes a run). */
const SKIP = new Set((process.env.BENCH_SKIP ?? '').split(',').filter(Boolean));

interface Run { strategy: string; autoReason: string | null; fillMs: number | null; stallMs: number; totalMs: number; downtimeMs: number; bytes: number; rounds: number; reason: string | null; achievedRate: number; freeze: Record<string, number> }

/** The freeze's parts as the agents measured them (checkpoint.* up to restore.*). */
const freezeParts = (r: MigrationReport): Record<string, number> => Object.fromEntries(Object.entries(r.phases).filter(([k]) => /^(checkpoint\.|transfer$|transfer\.|restore\.)/.test(k)));

async function main(): Promise<void> {
  const cluster = loadCluster(clusterFile());
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('need two hosts');
  const docker = new Map(cluster.hosts.map((h) => [h.name, new Docker({ socketPath: h.dockerSocket })]));
  const { conn } = await dial({ url: cluster.controller.url, name: 'bench', role: 'cli', serverRole: 'controller', secret: cluster.secret, log: silentLogger() });
  const rows = [];
  try {
    for (const mib of SIZES) {
      for (const mbs of RATES) {
        const rate = Math.round((mbs * 1e6) / 4096);
        for (const mode of MODES) {
          if (SKIP.has(`${mib}:${mbs}:${mode}`)) continue;
          process.stderr.write(`bench: ${mib} MiB, ${mbs} MB/s, ${mode} × ${RUNS} …\n`);
          await startMemhog(docker.get(a.name)!, NAME, mib, rate);
          const p = await Pinger.open(PORT);
          p.start();
          const runs: Run[] = [];
          let where = a.name;
          let verify = '';
          let kept = false;
          try {
            for (let i = 0; i < RUNS; i++) {
              const to = where === a.name ? b.name : a.name;
              await waitPongs(p, 100);
              p.maxGap = 0;
              const before = Number(/dirtied (\d+)/.exec(await p.command('stats'))![1]);
              const t0 = performance.now();
              const r: MigrationReport = await conn.request(ControllerApi.StartMigration, { container: NAME, to, dryRun: false, timeoutMs: 600_000, mode, maxRounds: 10 });
              const elapsed = (performance.now() - t0) / 1000;
              if (r.result !== 'succeeded') throw new Error(`${mode} migration ${r.result}: ${r.error?.message}`);
              await waitPongs(p, 100);
              const after = Number(/dirtied (\d+)/.exec(await p.command('stats'))![1]);
              runs.push({
                // Every byte that crossed: the rounds' pages plus the final transfer.
                stallMs: round(p.maxGap), totalMs: round(r.totalMs), downtimeMs: round(r.downtimeMs ?? NaN), bytes: r.bytesTotal, freeze: freezeParts(r), strategy: r.strategy, autoReason: r.modeChoice?.reason ?? null, fillMs: r.phases['cleanup.lazyFill'] ?? null,
                rounds: r.rounds?.length ?? 0, reason: r.convergence?.reason ?? null, achievedRate: Math.round((after - before) / elapsed),
              });
              where = to;
            }
            verify = await p.command('verify');
            kept = p.broken === null;
          } finally {
            p.close();
            for (const d of docker.values()) await d.getContainer(NAME).remove({ force: true }).catch(() => undefined);
          }
          const stalls = runs.map((x) => x.stallMs);
          rows.push({
            mib, dirtyMBs: mbs, pagesPerS: rate, mode, runs: runs.length,
            stallP50Ms: percentile(stalls, 50), stallP99Ms: percentile(stalls, 99), stallMaxMs: Math.max(...stalls),
            totalP50Ms: percentile(runs.map((x) => x.totalMs), 50),
            bytesP50: percentile(runs.map((x) => x.bytes), 50),
            bytesVsRss: round((percentile(runs.map((x) => x.bytes), 50) / (mib * 2 ** 20)) * 100) / 100,
            roundsP50: percentile(runs.map((x) => x.rounds), 50),
            stopReasons: [...new Set(runs.map((x) => x.reason))],
            // auto: what it ran (and why, in each run's report); all modes: how long the destination's lazy fill took after the freeze.
            strategies: [...new Set(runs.map((x) => x.strategy))],
            autoReasons: [...new Set(runs.map((x) => x.autoReason).filter((x) => x !== null))],
            fillP50Ms: runs.some((x) => x.fillMs !== null) ? percentile(runs.map((x) => x.fillMs ?? 0), 50) : null,
            writerRateDuringMigration: percentile(runs.map((x) => x.achievedRate), 50),
            verify, connectionKept: kept, pingErrors: p.errors,
            each: runs,
          });
        }
      }
    }
  } finally {
    conn.close();
  }
  process.stdout.write(`${JSON.stringify({
    benchmark: 'precopy',
    date: new Date().toISOString(),
    machine: { kernel: release(), cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30) },
    workload: 'memhog: N MiB of touched anonymous memory, random page writes at the given rate; client pings over one TCP connection',
    targets: { stallP99Ms: '≤ 150 at 1 GiB, 10 MB/s', bytesVsRss: '≤ 1.3 at ≤ 10 MB/s' },
    rows,
  }, null, 2)}\n`);
}

main().catch((e: unknown) => { process.stderr.write(`bench failed: ${(e as Error).stack}\n`); process.exit(1); });
