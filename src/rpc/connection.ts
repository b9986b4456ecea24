// A typed request/response/event/chunk channel over one authenticated WebSocket.

import { EventEmitter } from 'node:events';
import { xxh64 } from '@node-rs/xxhash';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import {
  CHUNK_BYTES, CHUNK_HEADER_BYTES, FerryError, MAX_FRAME_BYTES, decodeFrame, encodeFrame, fromWire, toWire, writeChunkHeader,
  type ChunkFrame, type EventType, type Frame, type Method, type PeerRole,
} from '../protocol/index.js';
import type { Logger } from '../log/logger.js';
import { deadline } from '../util/abort.js';

/** What a request handler learns about its caller and the request. */
export interface CallContext {
  readonly conn: Connection;
  readonly signal: AbortSignal;
  readonly requestId: number;
  /**
   * Streams bulk data back to the caller as a chunk frame tied to this request. `buf` holds the data from
   * offset CHUNK_HEADER_BYTES on; the header is written in place, so the data is never copied. `written`
   * runs once the socket is done with `buf` (sent or failed), so the caller may reuse it.
   */
  sendChunk(entry: number, seq: number, buf: Buffer, last: boolean, written?: () => void): Promise<void>;
}
export type Handler = (params: unknown, ctx: CallContext) => Promise<unknown>;
export interface HandlerEntry { method: Method<any, any>; handler: Handler; roles: readonly PeerRole[] }

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Receives this request's chunk frames in order; the result resolves only after the last one was handled. */
  onChunk?: (chunk: ChunkFrame) => Promise<void> | void;
  /**
   * On abort, tell the callee to cancel but keep waiting for its answer (a migration that rolls back
   * still reports how it ended). Default: reject at once.
   */
  awaitAfterCancel?: boolean;
}

interface Pending {
  method: Method<any, any>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onChunk: ((c: ChunkFrame) => Promise<void> | void) | undefined;
  /** Chunk handling is serialised per request; the result waits for this chain. */
  chain: Promise<void>;
  failed: unknown;
}

// Back-pressure thresholds. Sending: wait when this much is queued in the socket. Receiving: pause the
// socket when this many chunks are waiting for their (disk) handler, so a slow writer bounds memory.
const SEND_HIGH_WATER = 16 * 1024 * 1024;
const RECV_MAX_BACKLOG = 8;
const HEARTBEAT_MS = 10_000;

export const checksum = (data: Uint8Array): Buffer => {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(xxh64(data));
  return b;
};

export declare interface Connection {
  on(ev: 'event', fn: (method: string, payload: unknown) => void): this;
  on(ev: 'close', fn: (err: FerryError) => void): this;
}

export class Connection extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly inflight = new Map<number, AbortController>();
  private handlers = new Map<string, HandlerEntry>();
  private closedWith: FerryError | null = null;
  /** Chunks received but not yet handled, over all requests: the socket pauses while this is high. */
  private recvBacklog = 0;
  private paused = false;
  private alive = true;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(
    private readonly ws: WebSocket,
    readonly peerName: string,
    readonly peerRole: PeerRole,
    private readonly log: Logger,
  ) {
    super();
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
    ws.on('error', (err) => this.log.debug({ err: err.message, peer: peerName }, 'websocket error'));
    ws.on('pong', () => { this.alive = true; });
    // A peer that vanished without a FIN (killed host, cut link) is detected by the missing pong.
    this.heartbeat = setInterval(() => {
      if (!this.alive) { ws.terminate(); return; }
      this.alive = false;
      ws.ping();
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  get closed(): boolean { return this.closedWith !== null; }

  /** Installs the methods this side serves, each with the peer roles allowed to call it. */
  serve(entries: Iterable<HandlerEntry>): void {
    for (const e of entries) this.handlers.set(e.method.name, e);
  }

  request<P, R>(m: Method<P, R>, params: P, opts: RequestOptions = {}): Promise<R> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    const signal = opts.timeoutMs ? deadline(opts.timeoutMs, opts.signal) : opts.signal;
    return new Promise<R>((resolve, reject) => {
      if (signal?.aborted) { reject(abortError(signal)); return; }
      const onAbort = (): void => {
        if (!this.pending.has(id)) return;
        this.sendFrame({ t: 'cancel', id });
        if (opts.awaitAfterCancel) return;
        this.pending.delete(id);
        reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => signal?.removeEventListener('abort', onAbort);
      this.pending.set(id, {
        method: m,
        resolve: (v) => { done(); resolve(v as R); },
        reject: (e) => { done(); reject(e); },
        onChunk: opts.onChunk,
        chain: Promise.resolve(),
        failed: undefined,
      });
      const frame: Frame = opts.timeoutMs ? { t: 'req', id, m: m.name, p: params, dl: opts.timeoutMs } : { t: 'req', id, m: m.name, p: params };
      this.sendFrame(frame);
    });
  }

  notify<P>(e: EventType<P>, payload: P): void {
    if (!this.closedWith) this.sendFrame({ t: 'evt', m: e.name, p: payload });
  }

  close(code = 1000, reason = 'bye'): void {
    this.ws.close(code, reason);
  }

  private sendFrame(f: Frame, cb?: (err?: Error) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) { cb?.(new Error('socket closed')); return; }
    this.ws.send(encodeFrame(f), { binary: true }, cb);
  }

  private async sendChunkFrame(s: number, e: number, q: number, buf: Buffer, last: boolean, signal: AbortSignal, done: () => void = () => undefined): Promise<void> {
    if (buf.length - CHUNK_HEADER_BYTES > CHUNK_BYTES) { done(); throw new FerryError('E_INTERNAL', 'chunk larger than CHUNK_BYTES'); }
    if (signal.aborted || this.closedWith) { done(); signal.throwIfAborted(); throw this.closedWith; }
    writeChunkHeader(buf, s, e, q, last, checksum(buf.subarray(CHUNK_HEADER_BYTES)));
    const written = new Promise<void>((resolve, reject) => {
      if (this.ws.readyState !== this.ws.OPEN) { done(); reject(new FerryError('E_UNAVAILABLE', `peer ${this.peerName} went away`)); return; }
      this.ws.send(buf, { binary: true }, (err) => {
        done();
        if (err) reject(new FerryError('E_UNAVAILABLE', `peer ${this.peerName} went away`));
        else resolve();
      });
    });
    // Only wait for the socket when it is backed up: bounded memory without a round trip per chunk.
    if (this.ws.bufferedAmount > SEND_HIGH_WATER) await written;
    else written.catch(() => undefined);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    let f: Frame;
    try {
      if (!isBinary) throw new FerryError('E_PROTOCOL', 'text frames are not part of the protocol');
      f = decodeFrame(data, MAX_FRAME_BYTES);
    } catch (e) {
      this.log.warn({ peer: this.peerName, code: (e as FerryError).code, err: (e as Error).message }, 'dropping peer: bad frame');
      this.ws.close(4400, 'E_PROTOCOL');
      return;
    }
    switch (f.t) {
      case 'req': void this.onRequest(f.id, f.m, f.p, f.dl); return;
      case 'res': this.settle(f.id, (p) => p.resolve(validateResult(p.method, f.r))); return;
      case 'err': this.settle(f.id, (p) => p.reject(fromWire(f.e))); return;
      case 'evt': this.emit('event', f.m, f.p); return;
      case 'cancel': this.inflight.get(f.id)?.abort(new FerryError('E_ABORTED', 'cancelled by peer')); return;
      case 'chunk': this.onChunk(f); return;
      default:
        // Handshake frames after the handshake are a protocol violation.
        this.ws.close(4400, 'E_PROTOCOL');
    }
  }

  private settle(id: number, fn: (p: Pending) => void): void {
    const p = this.pending.get(id);
    if (!p) return; // cancelled or duplicate: nothing waits for it
    this.pending.delete(id);
    // The result of a streaming request counts only after every chunk before it was handled.
    p.chain.then(() => {
      if (p.failed !== undefined) { p.reject(p.failed); return; }
      try { fn(p); } catch (e) { p.reject(e); }
    }, (e: unknown) => p.reject(e));
  }

  private onChunk(c: ChunkFrame): void {
    const p = this.pending.get(c.s);
    if (!p) {
      // Chunks still in flight for a request we cancelled are expected; for one never sent they are not.
      if (c.s >= this.nextId) this.ws.close(4400, 'E_PROTOCOL');
      return;
    }
    if (!p.onChunk) { this.ws.close(4400, 'E_PROTOCOL'); return; }
    const expect = checksum(c.d);
    if (!expect.equals(c.h)) {
      p.failed ??= new FerryError('E_INTEGRITY', `chunk ${c.e}/${c.q} from ${this.peerName} failed its checksum`);
      return;
    }
    if (++this.recvBacklog > RECV_MAX_BACKLOG && !this.paused) { this.paused = true; this.ws.pause(); }
    const handle = p.onChunk;
    p.chain = p.chain.then(async () => {
      try {
        if (p.failed === undefined) await handle(c);
      } catch (e) {
        p.failed ??= e;
      } finally {
        if (--this.recvBacklog <= RECV_MAX_BACKLOG / 2 && this.paused) { this.paused = false; this.ws.resume(); }
      }
    });
  }

  private async onRequest(id: number, name: string, params: unknown, dl: number | undefined): Promise<void> {
    const entry = this.handlers.get(name);
    if (!entry) { this.sendFrame({ t: 'err', id, e: { code: 'E_PROTOCOL', message: `unknown method ${name}` } }); return; }
    if (!entry.roles.includes(this.peerRole)) {
      this.sendFrame({ t: 'err', id, e: { code: 'E_FORBIDDEN', message: `${this.peerRole} may not call ${name}` } });
      return;
    }
    const parsed = entry.method.params.safeParse(params);
    if (!parsed.success) {
      this.sendFrame({ t: 'err', id, e: { code: 'E_INVALID_ARGUMENT', message: `bad params for ${name}: ${z.prettifyError(parsed.error).slice(0, 500)}` } });
      return;
    }
    const ac = new AbortController();
    this.inflight.set(id, ac);
    const signal = dl ? deadline(dl, ac.signal) : ac.signal;
    const ctx: CallContext = {
      conn: this,
      signal,
      requestId: id,
      sendChunk: (entryIdx, seq, buf, last, written) => this.sendChunkFrame(id, entryIdx, seq, buf, last, signal, written),
    };
    try {
      const r = await entry.handler(parsed.data, ctx);
      this.sendFrame({ t: 'res', id, r });
    } catch (e) {
      this.sendFrame({ t: 'err', id, e: toWire(e) });
    } finally {
      this.inflight.delete(id);
    }
  }

  private onClose(code: number, reason: string): void {
    clearInterval(this.heartbeat);
    const err = code === 4401
      ? new FerryError('E_UNAUTHENTICATED', `peer ${this.peerName} refused the handshake`)
      : new FerryError('E_UNAVAILABLE', `connection to ${this.peerName} closed (${code}${reason ? ` ${reason}` : ''})`);
    this.closedWith = err;
    for (const [, p] of this.pending) p.reject(err);
    this.pending.clear();
    for (const [, ac] of this.inflight) ac.abort(err);
    this.inflight.clear();
    this.emit('close', err);
  }
}

function validateResult(m: Method<any, any>, r: unknown): unknown {
  const parsed = m.result.safeParse(r);
  if (!parsed.success) throw new FerryError('E_PROTOCOL', `bad result for ${m.name}: ${z.prettifyError(parsed.error).slice(0, 500)}`);
  return parsed.data;
}

function abortError(signal: AbortSignal): FerryError {
  const r: unknown = signal.reason;
  if (r instanceof FerryError) return r;
  if (r instanceof Error && r.name === 'TimeoutError') return new FerryError('E_DEADLINE', 'request timed out');
  return new FerryError('E_ABORTED', 'request aborted');
}
