import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { RUNC_OPTIONS_TYPE_URL, RUNTIME_OPTIONS_TYPE_URL, RuncOptions, RuntimeOptions } from '../../../shim/proto/runc-options.js';
import { CreateTaskRequest, KillRequest, DeleteRequest, StartRequest, StartResponse, StateRequest, StateResponse } from '../../../shim/proto/task.js';
import { FrameType, encodeFrame } from '../../../shim/ttrpc/frame.js';
import { Request } from '../../../shim/ttrpc/messages.js';
import { GrpcCode } from '../../../shim/ttrpc/errors.js';
import { hex } from './helpers.js';
import { APP_OPTED_IN, TtrpcClient, makeBundle, proxyHarness } from './proxy-harness.js';

type Harness = Awaited<ReturnType<typeof proxyHarness>>;
let h: Harness | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

const kill = (id: string, signal = 15, all = false) => KillRequest.encode({ id, signal, all });
const methodOf = (f: { payload: Uint8Array }) => Request.decode(f.payload).method;

async function create(x: Harness, sid: number, id: string, annotations: Record<string, string>, extra: Parameters<typeof CreateTaskRequest.encode>[0] = {}) {
  const bundle = makeBundle(x.dir, id, annotations);
  const r = await x.client.call(sid, 'Create', CreateTaskRequest.encode({ id, bundle, ...extra }));
  expect(r.status?.code).toBe(0);
  return bundle;
}

describe('ShimProxy over unix sockets', () => {
  it('forwards calls of a container that did not opt in byte for byte, and answers by stream id', async () => {
    h = await proxyHarness();
    h.upstream.handler = (req) => (req.method === 'State' ? StateResponse.encode({ id: 'c1', pid: 77, status: 2 }) : new Uint8Array(0));
    await create(h, 1, 'c1', { 'io.kubernetes.cri.container-type': 'container' });
    const meta = { metadata: [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }], timeoutNano: 5_000_000_000n };
    const killFrame = TtrpcClient.frame(3, 'Kill', kill('c1', 9), meta);
    const [k, s] = await Promise.all([h.client.send(killFrame), h.client.call(5, 'State', StateRequest.encode({ id: 'c1' }))]);
    expect(k.status?.code).toBe(0);
    expect(StateResponse.decode(s.payload).pid).toBe(77);
    const upKill = h.upstream.received.find((f) => f.streamId === 3);
    expect(hex(encodeFrame(upKill!))).toBe(hex(encodeFrame(killFrame)));
    expect(h.hooks.deletes).toHaveLength(0);
  });

  it('a Kill held on stream 3 does not delay a State on stream 5; forward then sends the original Kill', async () => {
    h = await proxyHarness();
    await create(h, 1, 'app', APP_OPTED_IN);
    const killFrame = TtrpcClient.frame(3, 'Kill', kill('app', 15));
    const held = h.client.send(killFrame);
    await h.hooks.deleteCalls(1);
    const state = await h.client.call(5, 'State', StateRequest.encode({ id: 'app' }));
    expect(state.status?.code).toBe(0);
    expect(h.upstream.methods()).toEqual(['Create', 'State']);
    h.hooks.deletes[0]!.answer.resolve({ action: 'forward' });
    expect((await held).status?.code).toBe(0);
    const upKill = await h.upstream.receivedWhere((f) => f.streamId === 3);
    expect(hex(encodeFrame(upKill))).toBe(hex(encodeFrame(killFrame)));
    // Released: a later SIGKILL goes straight through without a new attempt.
    expect((await h.client.call(7, 'Kill', kill('app', 9, true))).status?.code).toBe(0);
    expect(h.hooks.deletes).toHaveLength(1);
  });

  it('every Kill and Delete of the container waits for the one onDelete; refuse answers them all with code 9', async () => {
    h = await proxyHarness();
    await create(h, 1, 'app', APP_OPTED_IN);
    const k1 = h.client.call(3, 'Kill', kill('app', 15));
    await h.hooks.deleteCalls(1);
    const k2 = h.client.call(5, 'Kill', kill('app', 9, true));
    const d = h.client.call(7, 'Delete', DeleteRequest.encode({ id: 'app' }));
    await h.heldCount(3);
    expect(h.held).toEqual(['Kill app', 'Kill app', 'Delete app']);
    h.hooks.deletes[0]!.answer.resolve({ action: 'refuse', message: 'ferry: migration in progress' });
    for (const r of await Promise.all([k1, k2, d])) {
      expect(r.status?.code).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(r.status?.message).toBe('ferry: migration in progress');
    }
    expect(h.hooks.deletes).toHaveLength(1);
    expect(h.upstream.methods()).toEqual(['Create']);
    // A later Kill starts a new attempt.
    const k3 = h.client.call(9, 'Kill', kill('app', 15));
    await h.hooks.deleteCalls(2);
    h.hooks.deletes[1]!.answer.resolve({ action: 'forward' });
    expect((await k3).status?.code).toBe(0);
    expect(h.upstream.methods()).toEqual(['Create', 'Kill']);
  });

  it('a hook that throws, or overruns its bound, lets the deletion proceed', async () => {
    h = await proxyHarness({ deleteBoundMs: () => 30 });
    await create(h, 1, 'a', APP_OPTED_IN);
    await create(h, 3, 'b', APP_OPTED_IN);
    const ka = h.client.call(5, 'Kill', kill('a'));
    await h.hooks.deleteCalls(1);
    h.hooks.deletes[0]!.answer.reject(new Error('controller unreachable'));
    expect((await ka).status?.code).toBe(0);
    const kb = h.client.call(7, 'Kill', kill('b')); // never answered by the hook
    await h.hooks.deleteCalls(2);
    expect((await kb).status?.code).toBe(0);
    expect(h.hooks.deletes[1]!.signal.aborted).toBe(true);
    expect(h.upstream.methods()).toEqual(['Create', 'Create', 'Kill', 'Kill']);
  });

  it('leaves the sandbox, exec kills and signal 0 alone', async () => {
    h = await proxyHarness();
    await create(h, 1, 'sb1', { 'io.kubernetes.cri.container-type': 'sandbox', 'ferry.dev/migrate': 'true' });
    await create(h, 3, 'app', APP_OPTED_IN);
    expect((await h.client.call(5, 'Kill', kill('sb1', 9))).status?.code).toBe(0);
    expect((await h.client.call(7, 'Kill', KillRequest.encode({ id: 'app', execId: 'e1', signal: 9 }))).status?.code).toBe(0);
    expect((await h.client.call(9, 'Kill', kill('app', 0))).status?.code).toBe(0);
    expect(h.hooks.deletes).toHaveLength(0);
  });

  it('claimed Create: checkpoint = imagesDir, then restored gets the pid from the Start response', async () => {
    h = await proxyHarness();
    h.hooks.claimAnswer = async () => ({ migrationId: 'm-1', imagesDir: '/run/ferry/images/m-1' });
    h.upstream.handler = (req) => (req.method === 'Start' ? StartResponse.encode({ pid: 4242 }) : new Uint8Array(0));
    const bundle = await create(h, 1, 'app', APP_OPTED_IN);
    const upCreate = CreateTaskRequest.decode(Request.decode(h.upstream.received[0]!.payload).payload);
    expect(upCreate).toMatchObject({ id: 'app', bundle, checkpoint: '/run/ferry/images/m-1' });
    expect(h.hooks.claims.map((c) => c.id)).toEqual(['app']);
    expect(StartResponse.decode((await h.client.call(3, 'Start', StartRequest.encode({ id: 'app' }))).payload).pid).toBe(4242);
    await h.hooks.restoredCount(1);
    expect(h.hooks.restoredCalls).toEqual([{ migrationId: 'm-1', id: 'app', result: { pid: 4242 } }]);
  });

  it('claimed Create whose Start is never answered (containerd gone): restored gets an error', async () => {
    h = await proxyHarness();
    h.hooks.claimAnswer = async () => ({ migrationId: 'm-2', imagesDir: '/img' });
    await create(h, 1, 'app', APP_OPTED_IN);
    h.upstream.handler = () => new Promise(() => {});
    const start = TtrpcClient.frame(3, 'Start', StartRequest.encode({ id: 'app' }));
    const p = h.client.send(start);
    await h.upstream.receivedWhere((f) => f.streamId === 3);
    h.client.close(); // containerd goes away before runc-v2 answers
    await h.hooks.restoredCount(1);
    expect(h.hooks.restoredCalls[0]).toMatchObject({ migrationId: 'm-2', result: { error: expect.stringContaining('closed') } });
    void p;
  });

  it('a Create that is not claimed is forwarded as is; a claim that throws starts it fresh', async () => {
    h = await proxyHarness();
    const createFrame = TtrpcClient.frame(1, 'Create', CreateTaskRequest.encode({ id: 'app', bundle: makeBundle(h.dir, 'app', APP_OPTED_IN) }));
    await h.client.send(createFrame);
    expect(hex(h.upstream.raw[0]!)).toBe(hex(encodeFrame(createFrame)));
    h.hooks.claimAnswer = async () => {
      throw new Error('agent down');
    };
    const f2 = TtrpcClient.frame(3, 'Create', CreateTaskRequest.encode({ id: 'app2', bundle: makeBundle(h.dir, 'app2', APP_OPTED_IN) }));
    expect((await h.client.send(f2)).status?.code).toBe(0);
    expect(hex(h.upstream.raw[1]!)).toBe(hex(encodeFrame(f2)));
  });

  it('rewrites CRI runtimeoptions into runc Options with the configured binary and root', async () => {
    h = await proxyHarness({ overrides: { runcBinary: '/opt/ferry/bin/ferry-runc', runcRoot: '/run/ferry/runc' } });
    const options = { typeUrl: RUNTIME_OPTIONS_TYPE_URL, value: RuntimeOptions.encode({ typeUrl: 'io.containerd.ferry.v1' }) };
    await create(h, 1, 'c', {}, { options });
    const up = CreateTaskRequest.decode(Request.decode(h.upstream.received[0]!.payload).payload);
    expect(up.options?.typeUrl).toBe(RUNC_OPTIONS_TYPE_URL);
    expect(RuncOptions.decode(up.options!.value)).toMatchObject({ binaryName: '/opt/ferry/bin/ferry-runc', root: '/run/ferry/runc' });
  });

  it('answers an oversized request with RESOURCE_EXHAUSTED and keeps the connection', async () => {
    h = await proxyHarness({ maxFrameBytes: 1024 });
    const big = h.client.call(1, 'State', StateRequest.encode({ id: 'x'.repeat(2000) }));
    const ok = h.client.call(3, 'State', StateRequest.encode({ id: 'c' }));
    expect((await big).status?.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect((await ok).status?.code).toBe(0);
    expect(h.upstream.received.map((f) => f.streamId)).toEqual([3]);
  });

  it('exits once the upstream is gone and containerd has disconnected, removing its socket', async () => {
    h = await proxyHarness();
    expect((await h.client.call(1, 'State', StateRequest.encode({ id: 'c' }))).status?.code).toBe(0);
    await h.upstream.close();
    await h.client.closed; // the proxy drops containerd's connection when the upstream one ends
    expect(await h.exited).toMatch(/upstream .* is gone and no containerd is connected/);
    expect(existsSync(h.listen)).toBe(false);
  });

  it('stays up while the upstream lives, for a containerd that reconnects', async () => {
    h = await proxyHarness();
    h.client.close();
    await h.client.closed;
    await h.proxy.checkIdle('test');
    const again = await TtrpcClient.connect(h.listen);
    expect((await again.call(1, 'State', StateRequest.encode({ id: 'c' }))).status?.code).toBe(0);
    again.close();
  });

  it('keeps unknown services and frame types flowing', async () => {
    h = await proxyHarness();
    const other = { streamId: 1, type: FrameType.REQUEST, flags: 0, payload: Request.encode({ service: 'containerd.other.v1.Svc', method: 'X' }) };
    expect((await h.client.send(other)).status?.code).toBe(0);
    expect(methodOf(h.upstream.received[0]!)).toBe('X');
  });
});
