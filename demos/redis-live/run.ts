// Demo: Redis with a client writing over one TCP connection, migrated host-a → host-b → host-a while it writes.
// Verifies what a user would: no acknowledged write lost, the counter never skips or repeats, the connection never broke.

import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { Client, Writer } from '../lib/redis-client.js';
import { join } from 'node:path';
import Docker from 'dockerode';
import { loadCluster, clusterFile } from '../../src/cluster.js';
import { packageRoot } from '../../src/cli/local-cluster.js';

const NAME = 'demo-redis';
const PORT = Number(process.env.DEMO_PORT ?? 28200);
const KEYS = Number(process.env.DEMO_KEYS ?? 200_000);

const say = (s: string): void => { process.stdout.write(`\x1b[1m» ${s}\x1b[0m\n`); };

async function openClient(): Promise<Client> {
  for (let i = 0; i < 100; i++) {
    const s = await new Promise<Socket | null>((r) => { const c = connect(PORT, '127.0.0.1', () => r(c)); c.once('error', () => r(null)); });
    if (s) return new Client(s);
    await new Promise((r) => setTimeout(r, 100)); // redis is starting; nothing to wait on but the port
  }
  throw new Error(`redis did not open 127.0.0.1:${PORT}`);
}

async function main(): Promise<void> {
  const cluster = loadCluster(clusterFile());
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('the demo needs two hosts');
  const dockerA = new Docker({ socketPath: a.dockerSocket });
  for (const h of cluster.hosts) {
    const d = new Docker({ socketPath: h.dockerSocket });
    for (const c of await d.listContainers({ all: true, filters: { name: [`^/${NAME}$`] } })) await d.getContainer(c.Id).remove({ force: true });
  }
  say(`starting Redis on ${a.name} (host network, 127.0.0.1:${PORT}) and loading ${KEYS} keys`);
  const c = await dockerA.createContainer({
    name: NAME, Image: 'ferry/redis:7', Hostname: NAME,
    Cmd: ['redis-server', '--bind', '127.0.0.1', '--port', String(PORT), '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes'],
    HostConfig: { NetworkMode: 'host', RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } },
  });
  await c.start();
  const client = await openClient();
  await client.cmd('DEBUG', 'POPULATE', String(KEYS), 'key', '100');

  say('a client now writes continuously over ONE TCP connection: INCR counter + RPUSH log <n>');
  const writer = new Writer(client);

  const ferry = join(packageRoot(), 'bin/ferry.js');
  const stalls: number[] = [];
  for (const to of [b.name, a.name]) {
    await new Promise((r) => setTimeout(r, 1500)); // let the client write for a while: this is the demo's pacing
    say(`ferry migrate ${NAME} --to ${to}   (acknowledged writes so far: ${writer.acked})`);
    writer.maxGap = 0;
    // Not spawnSync: the writer lives on this process's event loop, and a blocked loop would stop it for the
    // whole migration (the stalls once printed here, 1.2–1.6 s, were that, not the freeze).
    const code = await new Promise<number | null>((res, rej) => {
      const child = spawn(process.execPath, [ferry, 'migrate', NAME, '--to', to], { stdio: 'inherit' });
      child.once('error', rej);
      child.once('exit', (c) => res(c));
    });
    if (code !== 0) throw new Error(`ferry migrate exited ${code}`);
    const at = writer.acked;
    while (writer.acked < at + 200 && !client.broken) await new Promise((res) => setTimeout(res, 50));
    stalls.push(writer.maxGap);
    say(`client saw a longest stall of ${writer.maxGap.toFixed(0)} ms; writes continue (${writer.acked} acknowledged)`);
  }
  await writer.stop();

  const llen = await client.cmd('LLEN', 'log');
  const dbsize = await client.cmd('DBSIZE');
  const checks: [string, boolean][] = [
    [`the client's TCP connection never broke`, client.broken === null],
    [`every acknowledged write is present (LLEN log = ${llen.slice(1)}, acknowledged ${writer.acked})`, llen === `:${writer.acked}`],
    [`the counter never skipped or repeated`, writer.errors === 0],
    [`all ${KEYS} preloaded keys are there (DBSIZE ${dbsize.slice(1)})`, dbsize === `:${KEYS + 2}`],
  ];
  say('verdict');
  for (const [what, ok] of checks) process.stdout.write(`  ${ok ? '\x1b[32mPASS\x1b[0m' : '\x1b[31mFAIL\x1b[0m'} ${what}\n`);
  process.stdout.write(`  client-observed stalls: ${stalls.map((s) => `${s.toFixed(0)} ms`).join(', ')}\n`);
  await new Docker({ socketPath: a.dockerSocket }).getContainer(NAME).remove({ force: true });
  if (!checks.every(([, ok]) => ok)) process.exit(1);
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exit(1);
});
