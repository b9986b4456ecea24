// The proxy daemon: one listener per upstream runc-v2 shim, one upstream connection per containerd connection, frames routed by stream.

import { unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../src/log/logger.js';
import type { InterceptSession, TaskInterceptor } from './interceptor.js';
import { FrameTooLargeError, GrpcCode } from './ttrpc/errors.js';
import { FrameDecoder, MESSAGE_LENGTH_MAX, type Frame } from './ttrpc/frame.js';
import { StreamRouter, type RouterEvent } from './ttrpc/stream-router.js';

/** How often an idle proxy (no containerd connected) checks whether its upstream still exists. */
export const IDLE_CHECK_MS = 1_000;
/** Bound on one probe connect to a unix socket. */
export const PROBE_TIMEOUT_MS = 1_000;

/**
 * Whether something accepts connections on the unix socket `path` (runc-v2's `shim.CanConnect`).
 * A missing socket or ECONNREFUSED is `false`; a probe that neither connects nor fails within the
 * bound counts as alive (a busy listener is still a listener).
 */
export function socketAlive(path: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    const done = (v: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Construction options of a {@link ShimProxy}. */
export interface ShimProxyOptions {
  /** Our socket, given to containerd. */
  readonly listen: string;
  /** The upstream shim's socket (runc-v2's address without `unix://`). */
  readonly upstream: string;
  readonly interceptor: TaskInterceptor;
  readonly log: Logger;
  /** Largest ttrpc payload accepted in either direction. Default ttrpc's 4 MiB. */
  readonly maxFrameBytes?: number;
  /** Called once when the proxy decides to stop (upstream gone, nobody connected), after it closed. */
  readonly onExit?: (reason: string) => void;
  /** Idle check period. Default {@link IDLE_CHECK_MS}; 0 disables the periodic check (tests). */
  readonly idleCheckMs?: number;
}

/** One containerd connection and its upstream connection. */
class Bridge {
  private readonly router: StreamRouter;
  private readonly session: InterceptSession;
  private readonly fromClient: FrameDecoder;
  private readonly fromUpstream: FrameDecoder;
  private closed = false;

  constructor(
    private readonly client: Socket,
    private readonly up: Socket,
    interceptor: TaskInterceptor,
    private readonly log: Logger,
    maxFrameBytes: number,
    private readonly onClose: () => void,
  ) {
    this.session = interceptor.session();
    this.fromClient = new FrameDecoder({ maxLength: maxFrameBytes });
    this.fromUpstream = new FrameDecoder({ maxLength: maxFrameBytes });
    this.router = new StreamRouter({
      policy: this.session.policy,
      upstream: (b) => void up.write(b),
      downstream: (b) => void client.write(b),
      onEvent: (e) => this.onRouterEvent(e),
    });
    client.on('data', (chunk: Buffer) => this.push(this.fromClient, chunk, (f) => this.router.fromClient(f), 'client'));
    up.on('data', (chunk: Buffer) =>
      this.push(this.fromUpstream, chunk, (f) => {
        this.session.fromUpstream(f);
        this.router.fromUpstream(f);
      }, 'upstream'),
    );
    client.on('error', (e) => this.log.warn({ err: e.message }, 'containerd connection error'));
    up.on('error', (e) => this.log.warn({ err: e.message, upstream: up.remoteAddress }, 'upstream connection error'));
    client.on('close', () => this.close('containerd closed the connection'));
    up.on('close', () => this.close('upstream closed the connection'));
  }

  private push(decoder: FrameDecoder, chunk: Uint8Array, handle: (f: Frame) => void, from: 'client' | 'upstream'): void {
    let next: Uint8Array = chunk;
    for (;;) {
      try {
        for (const f of decoder.push(next)) handle(f);
        return;
      } catch (e: unknown) {
        if (!(e instanceof FrameTooLargeError)) throw e;
        for (const f of e.decoded) handle(f);
        this.log.warn({ from, stream: e.streamId, length: e.length }, 'oversized ttrpc frame skipped');
        // A request: answer it as ttrpc's server would. A response: the caller would otherwise wait forever.
        if (from === 'client') this.router.rejectOversized(e);
        else this.router.reject(e.streamId, GrpcCode.RESOURCE_EXHAUSTED, `ferry shim: upstream response of ${e.length} bytes exceeds the maximum`);
        next = new Uint8Array(0);
      }
    }
  }

  private onRouterEvent(e: RouterEvent): void {
    const { kind, streamId } = e;
    const err = 'error' in e ? (e.error instanceof Error ? e.error.message : String(e.error)) : undefined;
    this.log.warn({ event: kind, stream: streamId, ...(err === undefined ? {} : { err }) }, 'router event');
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ reason, held: this.router.pending }, 'connection closed');
    this.router.close();
    this.session.close();
    this.up.destroy();
    // Let what upstream already answered reach containerd, then drop the connection.
    this.client.end(() => this.client.destroy());
    this.onClose();
  }
}

/**
 * Listens on {@link ShimProxyOptions.listen} and bridges each containerd connection to a fresh upstream
 * connection. Stops (closes the listener, removes the socket, calls `onExit`) once no containerd is
 * connected and the upstream socket no longer accepts connections, i.e. after runc-v2's Shutdown.
 */
export class ShimProxy {
  private server: Server | undefined;
  private readonly bridges = new Set<Bridge>();
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private checking = false;

  constructor(private readonly opts: ShimProxyOptions) {}

  /** Connections from containerd right now. */
  get connections(): number {
    return this.bridges.size;
  }

  /**
   * Starts listening. A stale socket file (nothing accepts on it) is replaced; a live one means another
   * proxy serves this upstream, and `listen` rejects with EADDRINUSE.
   */
  async listen(): Promise<void> {
    const { listen, log } = this.opts;
    const server = createServer({ allowHalfOpen: false }, (client) => this.accept(client));
    server.on('error', (e) => log.error({ err: e.message }, 'listener error'));
    const tryListen = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const onError = (e: Error): void => reject(e);
        server.once('error', onError);
        server.listen(listen, () => {
          server.off('error', onError);
          resolve();
        });
      });
    try {
      await tryListen();
    } catch (e: unknown) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || (await socketAlive(listen))) throw e;
      log.warn({ listen }, 'replacing a stale proxy socket');
      unlinkSync(listen);
      await tryListen();
    }
    this.server = server;
    const every = this.opts.idleCheckMs ?? IDLE_CHECK_MS;
    if (every > 0) this.timer = setInterval(() => void this.checkIdle('idle check'), every);
    log.info({ upstream: this.opts.upstream }, 'proxy listening');
  }

  private accept(client: Socket): void {
    const { upstream, interceptor, log } = this.opts;
    const up = createConnection(upstream);
    const bridge = new Bridge(client, up, interceptor, log, this.opts.maxFrameBytes ?? MESSAGE_LENGTH_MAX, () => {
      this.bridges.delete(bridge);
      if (this.bridges.size === 0) void this.checkIdle('last connection closed');
    });
    this.bridges.add(bridge);
    log.info({ connections: this.bridges.size }, 'containerd connected');
  }

  /** Stops if nobody is connected and the upstream is gone; says why in the log. */
  async checkIdle(trigger: string): Promise<void> {
    if (this.stopping || this.checking || this.bridges.size > 0) return;
    this.checking = true;
    try {
      const alive = await socketAlive(this.opts.upstream);
      if (alive || this.bridges.size > 0) return;
      await this.stop(`upstream ${this.opts.upstream} is gone and no containerd is connected (${trigger})`);
    } finally {
      this.checking = false;
    }
  }

  /** Closes the listener and every connection, removes the socket file, and calls `onExit(reason)`. */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.timer);
    for (const b of [...this.bridges]) b.close(`proxy stopping: ${reason}`);
    const server = this.server;
    if (server !== undefined) await new Promise<void>((r) => server.close(() => r()));
    try {
      unlinkSync(this.opts.listen);
    } catch {
      // server.close() already removed it.
    }
    this.opts.log.info({ reason }, 'proxy stopped');
    this.opts.onExit?.(reason);
  }
}
