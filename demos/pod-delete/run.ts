// Demo: deleting a Redis pod on host-a live-migrates it into its replacement pod on host-b.
//
// Real containerd + CRI on both hosts (scripts/containerd.sh), Ferry's shim on the `ferry` runtime handler, and a
// kubelet stand-in per host that makes exactly kubelet's CRI calls. The demo plays the pod's owner: as the old
// pod is deleted it creates the replacement on host-b, as a ReplicaSet would.
// Verifies what a user would: the data is there, no acknowledged write lost, one TCP connection throughout,
// exactly one Redis afterwards, and nothing of the pod left on host-a.

import { connect, type Socket } from 'node:net';
import { Client, Writer } from '../lib/redis-client.js';
import { loadCluster, clusterFile } from '../../src/cluster.js';
import { CriClient } from '../../src/cri/client.js';
import { KubeletStandIn } from '../../src/cri/kubelet.js';
import { criHostPaths } from '../../src/cri/paths.js';
import type { PodSpec } from '../../src/cri/pod-config.js';

const PORT = Number(process.env.DEMO_PORT ?? 28210);
const KEYS = Number(process.env.DEMO_KEYS ?? 100_000);

const say = (s: string): void => { process.stdout.write(`\x1b[1m» ${s}\x1b[0m\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits for a condition (checked every 20 ms), bounded. */
async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await ok())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function openClient(): Promise<Client> {
  let last: Error | null = null;
  for (const end = performance.now() + 15_000; performance.now() < end; await sleep(100)) {
    const s = await new Promise<Socket | Error>((r) => { const c = connect(PORT, '127.0.0.1', () => r(c)); c.once('error', (e) => r(e)); });
    if (!(s instanceof Error)) return new Client(s);
    last = s;
  }
  throw new Error(`redis did not open 127.0.0.1:${PORT}: ${last?.message}`);
}

async function main(): Promise<void> {
  const cluster = loadCluster(clusterFile());
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('the demo needs two hosts');
  const pa = criHostPaths(a.name);
  const pb = criHostPaths(b.name);
  const criA = new CriClient(pa.socket);
  const criB = new CriClient(pb.socket);
  const kubeA = new KubeletStandIn(criA, pa);
  const kubeB = new KubeletStandIn(criB, pb);
  // A pod of an earlier, interrupted run would hold the port.
  for (const [cri, kube] of [[criA, kubeA], [criB, kubeB]] as const) {
    for (const sb of await cri.listPodSandbox()) if (sb.metadata?.namespace === 'demo') await kube.deletePod(sb.id, 2);
  }

  const spec = (uid: string): PodSpec => ({
    name: 'redis-0', namespace: 'demo', uid, runtimeHandler: 'ferry', terminationGracePeriodSeconds: 30,
    annotations: { 'ferry.dev/migrate': 'true', 'ferry.dev/to': b.name },
    containers: [{ name: 'redis', image: 'ferry/redis:7', command: ['redis-server'], args: ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes'] }],
  });
  say(`kubelet on ${a.name}: pod demo/redis-0 (runtime handler ferry, annotation ferry.dev/migrate: "true"), Redis on 127.0.0.1:${PORT}`);
  const started = await kubeA.runPod(spec('uid-1'));
  if (!started.ok) throw new Error(`pod did not start: ${started.steps.filter((s) => s.error).map((s) => s.error?.message).join('; ')}`);
  const client = await openClient();
  await client.cmd('DEBUG', 'POPULATE', String(KEYS), 'key', '100');

  say('a client writes continuously over ONE TCP connection: INCR counter + RPUSH log <n>');
  const writer = new Writer(client);
  await sleep(1500); // the demo's pacing: let the client write for a while

  say(`kubectl delete pod redis-0  →  kubelet on ${a.name}: StopContainer, and Ferry's shim holds the Kill and migrates`);
  writer.maxGap = 0;
  const t0 = performance.now();
  const deletion = kubeA.deletePod(started.podId, 30);
  say(`the owner creates the replacement pod redis-0 on ${b.name} at the same time; its shim waits for the state and restores it`);
  const [del, rep] = await Promise.all([deletion, kubeB.runPod(spec('uid-2'))]);
  const totalMs = performance.now() - t0;
  if (!del.ok || !rep.ok) throw new Error(`deletion or replacement failed: ${[...del.steps, ...rep.steps].filter((s) => s.error).map((s) => `${s.step}: ${s.error?.message}`).join('; ')}`);
  const at = writer.acked;
  await until('writes after the move', () => writer.acked >= at + 200 || client.broken !== null, 20_000);
  await writer.stop();

  const llen = await client.cmd('LLEN', 'log');
  const dbsize = await client.cmd('DBSIZE');
  const leftOnA = (await criA.listContainers()).length + (await criA.listPodSandbox()).length;
  const onB = (await criB.listContainers()).filter((c) => c.state === 'CONTAINER_RUNNING').length;
  const checks: [string, boolean][] = [
    [`the client's TCP connection never broke`, client.broken === null],
    [`every acknowledged write is present (LLEN log = ${llen.slice(1)}, acknowledged ${writer.acked})`, llen === `:${writer.acked}`],
    [`the counter never skipped or repeated`, writer.errors === 0],
    [`all ${KEYS} preloaded keys are there (DBSIZE ${dbsize.slice(1)})`, dbsize === `:${KEYS + 2}`],
    [`the pod is gone from ${a.name} (containers + sandboxes left: ${leftOnA})`, leftOnA === 0],
    [`exactly one Redis runs, in the replacement pod on ${b.name}`, onB === 1],
  ];
  say('verdict');
  for (const [what, ok] of checks) process.stdout.write(`  ${ok ? '\x1b[32mPASS\x1b[0m' : '\x1b[31mFAIL\x1b[0m'} ${what}\n`);
  const step = (s: string, list = del.steps): string => `${(list.find((x) => x.step === s)?.ms ?? 0).toFixed(0)} ms`;
  process.stdout.write(`  client-observed stall ${writer.maxGap.toFixed(0)} ms; deletion + replacement ${totalMs.toFixed(0)} ms ` +
    `(StopContainer ${step('StopContainer')}, replacement RunPodSandbox ${step('RunPodSandbox', rep.steps)}, StartContainer ${step('StartContainer', rep.steps)})\n`);
  // The replacement names host-b as its destination: deleting it there is refused in preflight, and the default
  // policy lets the deletion proceed.
  await kubeB.deletePod(rep.podId, 2);
  criA.close();
  criB.close();
  process.exit(checks.every(([, ok]) => ok) ? 0 : 1);
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exit(1);
});
