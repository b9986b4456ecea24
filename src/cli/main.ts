// ferry: the command line. Results on stdout, progress and diagnostics on stderr.

import { Command, InvalidArgumentError, Option } from 'commander';
import { dirname, resolve } from 'node:path';
import {
  ClusterEvent, ControllerApi, FerryError, Progress, asFerryError, isFerryError, type MigrationReport,
} from '../protocol/index.js';
import { dial } from '../rpc/handshake.js';
import type { Connection } from '../rpc/connection.js';
import { silentLogger } from '../log/logger.js';
import { clusterFile, loadCluster } from '../cluster.js';
import { EXIT, exitForError, exitForReport } from './exit-codes.js';
import { containersTable, drainText, hostsTable, ProgressLine, reportText } from './render.js';
import { LocalCluster } from './local-cluster.js';

function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError('expected a duration such as 90s, 5m or 1500ms');
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * mult);
}

function parseCount(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < 1 || n > 1000) throw new InvalidArgumentError('expected a whole number from 1 to 1000');
  return n;
}

async function controller(): Promise<Connection> {
  const cluster = loadCluster(clusterFile());
  const { conn } = await dial({ url: cluster.controller.url, name: 'ferry-cli', role: 'cli', serverRole: 'controller', secret: cluster.secret, log: silentLogger() });
  return conn;
}

function localCluster(hosts: string[]): LocalCluster {
  const file = clusterFile();
  return new LocalCluster({ file, hosts, basePort: Number(process.env.FERRY_BASE_PORT ?? 7700), stateDir: resolve(dirname(file), 'state') });
}

const program = new Command('ferry')
  .description('Live-migrate running containers between hosts')
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE));

program.command('up')
  .description('start the embedded local cluster: one dockerd, agent and controller per host on this machine')
  .option('--hosts <names>', 'comma-separated host names', 'host-a,host-b')
  .action(async (o: { hosts: string }) => {
    const cfg = await localCluster(o.hosts.split(',')).up(AbortSignal.timeout(300_000));
    process.stdout.write(`cluster up: ${cfg.hosts.map((h) => h.name).join(', ')} (controller ${cfg.controller.url})\n`);
  });

program.command('down')
  .description('stop the embedded local cluster and remove everything it created')
  .action(async () => {
    await localCluster(['host-a', 'host-b']).down(AbortSignal.timeout(300_000));
    process.stdout.write('cluster down\n');
  });

program.command('hosts')
  .description('list hosts and their agents')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const c = await controller();
    const hs = await c.request(ControllerApi.ListHosts, {}, { timeoutMs: 10_000 });
    c.close();
    process.stdout.write(o.json ? `${JSON.stringify(hs)}\n` : `${hostsTable(hs)}\n`);
  });

program.command('ps')
  .description('list containers across all hosts')
  .option('-a, --all', 'include stopped containers')
  .option('--json', 'machine-readable output')
  .action(async (o: { all?: boolean; json?: boolean }) => {
    const c = await controller();
    const cs = await c.request(ControllerApi.ClusterContainers, { all: !!o.all }, { timeoutMs: 30_000 });
    c.close();
    process.stdout.write(o.json ? `${JSON.stringify(cs)}\n` : `${containersTable(cs)}\n`);
  });

program.command('migrate')
  .description('move a running container to another host, keeping its memory, files and TCP connections')
  .argument('<container>', 'container name or id')
  .requiredOption('--to <host>', 'destination host')
  .option('--from <host>', 'source host (default: wherever the container runs)')
  .option('--json', 'NDJSON progress events and the final report on stdout')
  .option('--dry-run', 'run the preflight checks only; change nothing')
  .option('--timeout <duration>', 'give up (and roll back) after this long', parseDuration, 600_000)
  .addOption(new Option('--mode <mode>', 'auto: measure the container\'s write rate and pick; precopy: move memory in rounds while the container runs; postcopy: run on the destination at once and fetch the memory after (lost if the source fails meanwhile); stop-and-copy: all of it inside the freeze').choices(['auto', 'precopy', 'postcopy', 'stop-and-copy']).default('auto'))
  .option('--max-downtime <duration>', 'pre-copy: stop the rounds once the predicted freeze fits this', parseDuration, 100)
  .option('--max-rounds <n>', 'pre-copy: at most this many rounds', parseCount, 30)
  .option('--auto-converge', 'pre-copy: throttle the container\'s CPU in steps while it writes faster than the link moves pages (always restored)')
  .action(async (container: string, o: { to: string; from?: string; json?: boolean; dryRun?: boolean; timeout: number; mode: 'auto' | 'precopy' | 'postcopy' | 'stop-and-copy'; maxDowntime: number; maxRounds: number; autoConverge?: boolean }) => {
    const c = await controller();
    const tty = !o.json && process.stderr.isTTY === true;
    const line = tty ? new ProgressLine(process.stderr) : null;
    c.on('event', (m, p) => {
      if (m !== Progress.name) return;
      const ev = Progress.payload.safeParse(p);
      if (!ev.success) return;
      if (o.json) process.stdout.write(`${JSON.stringify({ type: 'progress', ...ev.data })}\n`);
      else line?.update(ev.data);
    });
    // First Ctrl-C cancels (the controller rolls back); a second one leaves at once.
    const ac = new AbortController();
    let interrupted = false;
    process.on('SIGINT', () => {
      if (interrupted) process.exit(EXIT.INTERRUPTED);
      interrupted = true;
      process.stderr.write('\ninterrupted: rolling back (Ctrl-C again to detach)\n');
      ac.abort(new FerryError('E_ABORTED', 'interrupted by the user'));
    });
    let report: MigrationReport;
    try {
      report = await c.request(ControllerApi.StartMigration, {
        container, to: o.to, ...(o.from ? { from: o.from } : {}), dryRun: !!o.dryRun, timeoutMs: o.timeout,
        mode: o.mode, maxDowntimeMs: o.maxDowntime, maxRounds: o.maxRounds, autoConverge: !!o.autoConverge,
      }, { signal: ac.signal, awaitAfterCancel: true });
    } finally {
      line?.end();
      c.close();
    }
    process.stdout.write(o.json ? `${JSON.stringify({ type: 'report', ...report })}\n` : `${reportText(report)}\n`);
    process.exitCode = exitForReport(report, interrupted);
  });

program.command('drain')
  .description('move every opted-in container (label ferry.dev/migrate=true) off a host, within a deadline')
  .argument('<host>', 'the host to empty')
  .option('--deadline <duration>', 'time left before the host dies (e.g. 120s)', parseDuration)
  .option('--dry-run', 'show the plan: what goes where, expected times, what does not fit')
  .option('--json', 'machine-readable output')
  .action(async (host: string, o: { deadline?: number; dryRun?: boolean; json?: boolean }) => {
    const c = await controller();
    try {
      const r = await c.request(ControllerApi.Drain, { host, deadlineMs: o.deadline ?? null, dryRun: !!o.dryRun }, { awaitAfterCancel: true });
      process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${drainText(r)}\n`);
      // Nonzero when something that should have moved did not: automation must not assume the host is empty.
      const moved = r.results.filter((x) => x.result === 'succeeded').length;
      if (!r.dryRun && (moved < r.plan.length)) process.exitCode = EXIT.ROLLED_BACK;
    } finally {
      c.close();
    }
  });

for (const [name, cordoned] of [['cordon', true], ['uncordon', false]] as const) {
  program.command(name)
    .description(cordoned ? 'let no migration land on a host' : 'let migrations land on a host again')
    .argument('<host>')
    .action(async (host: string) => {
      const c = await controller();
      try {
        await c.request(ControllerApi.Cordon, { host, cordoned }, { timeoutMs: 10_000 });
        process.stdout.write(`${host} ${cordoned ? 'cordoned' : 'uncordoned'}\n`);
      } finally {
        c.close();
      }
    });
}

program.command('events')
  .description('stream preemption notices, drains and migrations as they happen (Ctrl-C to stop)')
  .option('--json', 'one JSON object per line')
  .action(async (o: { json?: boolean }) => {
    const c = await controller();
    c.on('event', (m, p) => {
      if (m !== ClusterEvent.name) return;
      const e = ClusterEvent.payload.safeParse(p);
      if (!e.success) return;
      process.stdout.write(o.json ? `${JSON.stringify({ ts: new Date().toISOString(), ...e.data })}\n` : `${new Date().toISOString()} ${e.data.type.padEnd(14)} ${e.data.host ?? '-'}  ${e.data.message}\n`);
    });
    await c.request(ControllerApi.WatchEvents, {}, { timeoutMs: 10_000 });
    process.stderr.write('watching cluster events\n');
    process.on('SIGINT', () => { c.close(); process.exit(0); });
    await new Promise<void>((resolve) => c.on('close', () => resolve()));
  });

program.parseAsync().catch((e: unknown) => {
  const err = asFerryError(e);
  const json = process.argv.includes('--json');
  if (json) process.stdout.write(`${JSON.stringify({ type: 'error', code: err.code, message: err.message })}\n`);
  else process.stderr.write(`ferry: ${err.code}: ${err.message}\n`);
  process.exit(isFerryError(e) ? exitForError(err.code) : EXIT.FAILED);
});
