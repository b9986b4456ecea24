// A fake runc-v2 (ttrpc server on a real unix socket), a ttrpc client for the proxy's socket, and fake hooks.

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../../src/log/logger.js';
import type { ShimContainer } from '../../../shim/container.js';
import type { Claim, DeleteDecision, RestoreResult, ShimHooks } from '../../../shim/hooks.js';
import { TaskInterceptor, type InterceptorOptions } from '../../../shim/interceptor.js';
import { ShimProxy } from '../../../shim/proxy.js';
import { TASK_SERVICE } from '../../../shim/proto/task.js';
import { FrameDecoder, FrameType, encodeFrame, type Frame } from '../../../shim/ttrpc/frame.js';
import { Request, Response, type RequestValue, type ResponseValue } from '../../../shim/ttrpc/messages.js';
import { okResponse } from '../../../shim/ttrpc/response.js';
import { deferred, type Deferred } from './helpers.js';

/** What the fake upstream answers: a method response payload, or a promise of one (held). */
export type UpstreamHandler = (req: RequestValue, frame: Frame) => Uint8Array | Promise<Uint8Array>;

/** A ttrpc server standing in for containerd-shim-runc-v2; records every frame it receives, whole. */
export class FakeUpstream {
  readonly received: Frame[] = [];
  readonly raw: Uint8Array[] = [];
  private readonly waiters: Array<{ pred: (f: Frame) => boolean; d: Deferred<Frame> }> = [];
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  handler: UpstreamHandler = () => new Uint8Array(0);

  constructor(readonly path: string) {}

  async listen(): Promise<void> {
    const server = createServer((s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      const dec = new FrameDecoder();
      s.on('data', (chunk: Buffer) => {
        for (const f of dec.push(chunk)) {
          this.received.push(f);
          this.raw.push(encodeFrame(f));
          for (const w of this.waiters.filter((x) => x.pred(f))) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.d.resolve(f);
          }
          const req = Request.decode(f.payload);
          void Promise.resolve(this.handler(req, f)).then((payload) => {
            if (!s.destroyed) s.write(encodeFrame({ streamId: f.streamId, type: FrameType.RESPONSE, flags: 0, payload: okResponse(payload) }));
          });
        }
      });
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(this.path, r));
    this.server = server;
  }

  /** Resolves with the first received frame (past or future) matching `pred`. */
  receivedWhere(pred: (f: Frame) => boolean): Promise<Frame> {
    const hit = this.received.find(pred);
    if (hit !== undefined) return Promise.resolve(hit);
    const d = deferred<Frame>();
    this.waiters.push({ pred, d });
    return d.promise;
  }

  methods(): string[] {
    return this.received.map((f) => Request.decode(f.payload).method);
  }

  /** Stops listening (the socket file goes away) and drops every connection, as runc-v2 does after Shutdown. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    if (server !== undefined) await new Promise<void>((r) => server.close(() => r()));
  }
}

/** A ttrpc client on the proxy's socket, as containerd would be. */
export class TtrpcClient {
  private readonly pending = new Map<number, Deferred<ResponseValue>>();
  private readonly dec = new FrameDecoder();
  readonly closed: Promise<void>;
  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.dec.push(chunk)) {
        const p = this.pending.get(f.streamId);
        this.pending.delete(f.streamId);
        p?.resolve(Response.decode(f.payload));
      }
    });
    socket.on('error', () => {});
    this.closed = new Promise((r) => socket.on('close', () => r()));
  }

  static async connect(path: string): Promise<TtrpcClient> {
    const s = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    return new TtrpcClient(s);
  }

  /** The request frame a call would send (for byte comparisons). */
  static frame(streamId: number, method: string, payload: Uint8Array, extra: Partial<RequestValue> = {}): Frame {
    return { streamId, type: FrameType.REQUEST, flags: 0, payload: Request.encode({ service: TASK_SERVICE, method, payload, ...extra }) };
  }

  /** Sends a whole frame and resolves with the response on its stream. */
  send(frame: Frame): Promise<ResponseValue> {
    const d = deferred<ResponseValue>();
    this.pending.set(frame.streamId, d);
    this.socket.write(encodeFrame(frame));
    return d.promise;
  }

  call(streamId: number, method: string, payload: Uint8Array, extra: Partial<RequestValue> = {}): Promise<ResponseValue> {
    return this.send(TtrpcClient.frame(streamId, method, payload, extra));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Hooks whose answers the test decides, with every call recorded. */
export class FakeHooks implements ShimHooks {
  readonly deletes: Array<{ c: ShimContainer; signal: AbortSignal; answer: Deferred<DeleteDecision> }> = [];
  readonly claims: ShimContainer[] = [];
  readonly restoredCalls: Array<{ migrationId: string; id: string; result: RestoreResult }> = [];
  private readonly restoredWaiters: Array<Deferred<void>> = [];
  private readonly deleteWaiters: Array<Deferred<void>> = [];
  claimAnswer: (c: ShimContainer) => Promise<Claim | null> = async () => null;

  onDelete(c: ShimContainer, signal: AbortSignal): Promise<DeleteDecision> {
    const answer = deferred<DeleteDecision>();
    this.deletes.push({ c, signal, answer });
    for (const w of this.deleteWaiters.splice(0)) w.resolve();
    return answer.promise;
  }
  claim(c: ShimContainer): Promise<Claim | null> {
    this.claims.push(c);
    return this.claimAnswer(c);
  }
  async restored(migrationId: string, c: ShimContainer, result: RestoreResult): Promise<void> {
    this.restoredCalls.push({ migrationId, id: c.id, result });
    for (const w of this.restoredWaiters.splice(0)) w.resolve();
  }
  /** Resolves once `n` onDelete calls were made. */
  async deleteCalls(n: number): Promise<void> {
    while (this.deletes.length < n) {
      const d = deferred<void>();
      this.deleteWaiters.push(d);
      await d.promise;
    }
  }
  /** Resolves once `n` restored calls were made. */
  async restoredCount(n: number): Promise<void> {
    while (this.restoredCalls.length < n) {
      const d = deferred<void>();
      this.restoredWaiters.push(d);
      await d.promise;
    }
  }
}

/** A bundle directory with a config.json carrying `annotations`. */
export function makeBundle(root: string, id: string, annotations: Record<string, string>): string {
  const bundle = join(root, id);
  mkdirSync(bundle, { recursive: true });
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations }));
  return bundle;
}

export const APP_OPTED_IN = { 'io.kubernetes.cri.container-type': 'container', 'ferry.dev/migrate': 'true', 'io.kubernetes.cri.sandbox-id': 'sb1' };

/** A proxy between a fake upstream and a client, over real unix sockets in a temp dir. */
export async function proxyHarness(opts: Partial<Omit<InterceptorOptions, 'hooks' | 'log' | 'signal'>> & { maxFrameBytes?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-shim-proxy-'));
  const upstream = new FakeUpstream(join(dir, 'up.sock'));
  await upstream.listen();
  const hooks = new FakeHooks();
  const life = new AbortController();
  const held: string[] = [];
  const heldWaiters: Array<{ n: number; d: Deferred<void> }> = [];
  /** Resolves once `n` Kill/Delete calls in all have been held for an onDelete. */
  const heldCount = (n: number): Promise<void> => {
    if (held.length >= n) return Promise.resolve();
    const d = deferred<void>();
    heldWaiters.push({ n, d });
    return d.promise;
  };
  const interceptor = new TaskInterceptor({
    hooks,
    log: silentLogger(),
    namespace: 'k8s.io',
    overrides: { runcBinary: null, runcRoot: null },
    signal: life.signal,
    onHeld: (e) => {
      held.push(`${e.method} ${e.id}`);
      for (const w of heldWaiters.filter((x) => held.length >= x.n)) {
        heldWaiters.splice(heldWaiters.indexOf(w), 1);
        w.d.resolve();
      }
    },
    ...opts,
  });
  const exited = deferred<string>();
  const proxy = new ShimProxy({
    listen: join(dir, 'proxy.sock'),
    upstream: upstream.path,
    interceptor,
    log: silentLogger(),
    idleCheckMs: 0,
    onExit: (r) => exited.resolve(r),
    ...(opts.maxFrameBytes === undefined ? {} : { maxFrameBytes: opts.maxFrameBytes }),
  });
  await proxy.listen();
  const client = await TtrpcClient.connect(join(dir, 'proxy.sock'));
  const cleanup = async (): Promise<void> => {
    client.close();
    life.abort();
    await proxy.stop('test done');
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { dir, upstream, hooks, interceptor, proxy, client, held, heldCount, exited: exited.promise, listen: join(dir, 'proxy.sock'), cleanup };
}
