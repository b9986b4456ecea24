// Routes a client's ttrpc frames to the upstream shim, holding or answering single calls without delaying other streams.

import { GrpcCode, ShimError, grpcCodeFor, type FrameTooLargeError } from './errors.js';
import { FrameType, encodeFrame, type Frame } from './frame.js';
import { Request, type RequestValue } from './messages.js';
import { errorResponse, okResponse, responseFrame } from './response.js';

/** What to do with one request. Holding is not a verdict: it is the policy's promise not having settled yet. */
export type Verdict =
  /** Send the original frame, byte for byte, to the upstream shim. */
  | { readonly action: 'forward' }
  /**
   * Send a different request upstream on the same stream (same frame type and flags): `request` is a
   * whole encoded ttrpc `Request` envelope, e.g. the original one with a rewritten CreateTaskRequest.
   */
  | { readonly action: 'rewrite'; readonly request: Uint8Array }
  /** Answer the client with an error status; upstream never sees the call. */
  | { readonly action: 'reject'; readonly code: GrpcCode; readonly message: string }
  /** Answer the client with success and this encoded method response (e.g. an Empty for Kill). */
  | { readonly action: 'respond'; readonly payload: Uint8Array };

/** A client request as the policy sees it. */
export interface RoutedRequest {
  readonly streamId: number;
  /** The decoded ttrpc envelope; `payload` is still encoded (see `decodeTaskCall`). */
  readonly request: RequestValue;
  /** The frame as received; forwarding re-emits exactly these bytes. */
  readonly frame: Frame;
}

/**
 * Decides a request's fate. It may return at once or later; while its promise is pending the call is
 * held, and only later frames of the same stream wait. `signal` aborts when the router closes.
 */
export type RequestPolicy = (req: RoutedRequest, signal: AbortSignal) => Verdict | Promise<Verdict>;

/** Something the router did that the shim should log; the router itself has no logger. */
export type RouterEvent =
  | { readonly kind: 'undecodable'; readonly streamId: number; readonly error: unknown }
  | { readonly kind: 'policy-failed'; readonly streamId: number; readonly error: unknown }
  | { readonly kind: 'overloaded'; readonly streamId: number; readonly pending: number }
  | { readonly kind: 'sink-failed'; readonly streamId: number; readonly direction: 'upstream' | 'downstream'; readonly error: unknown }
  | { readonly kind: 'dropped-after-close'; readonly streamId: number };

/** Construction options of a {@link StreamRouter}. */
export interface StreamRouterOptions {
  /** Per-request decision; see {@link RequestPolicy}. */
  readonly policy: RequestPolicy;
  /** Writes one whole encoded frame to the upstream shim (containerd-shim-runc-v2). */
  readonly upstream: (frame: Uint8Array) => void;
  /** Writes one whole encoded frame back to the client (containerd). */
  readonly downstream: (frame: Uint8Array) => void;
  /** Requests queued or held at once before new ones are refused with RESOURCE_EXHAUSTED. Default {@link DEFAULT_MAX_PENDING}. */
  readonly maxPending?: number;
  /** Observes what the router did, for logging. */
  readonly onEvent?: (e: RouterEvent) => void;
}

/** Default bound on queued or held requests. containerd has a handful in flight per shim; 1024 means something is stuck. */
export const DEFAULT_MAX_PENDING = 1024;

type Item = { readonly kind: 'frame'; readonly frame: Frame } | { readonly kind: 'reject'; readonly code: GrpcCode; readonly message: string };

interface StreamQueue {
  readonly items: Item[];
  busy: boolean;
}

const isPromiseLike = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

/**
 * The proxy's core, free of sockets and timers. Frames of one stream are handled strictly in order;
 * different streams never wait for each other, so a Kill held on stream 5 does not delay a State on
 * stream 7 (Appendix B's probe serialised the whole connection and did). When the policy answers
 * synchronously and the stream is idle, the frame is written before `fromClient` returns.
 *
 * The router should be the only writer of `downstream`: it writes whole frames, so its own replies
 * never land inside a half-written upstream frame. Feed upstream frames through {@link fromUpstream}.
 */
export class StreamRouter {
  private readonly opts: StreamRouterOptions;
  private readonly maxPending: number;
  private readonly queues = new Map<number, StreamQueue>();
  private readonly abort = new AbortController();
  private pendingRequests = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(opts: StreamRouterOptions) {
    this.opts = opts;
    this.maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
  }

  /** True after {@link close}. */
  get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** Requests received and not yet decided (queued behind their stream, or held by the policy). */
  get pending(): number {
    return this.pendingRequests;
  }

  /** Handles one frame from the client. */
  fromClient(frame: Frame): void {
    if (this.closed) return this.emit({ kind: 'dropped-after-close', streamId: frame.streamId });
    if (frame.type === FrameType.REQUEST) {
      if (this.pendingRequests >= this.maxPending) {
        this.emit({ kind: 'overloaded', streamId: frame.streamId, pending: this.pendingRequests });
        return this.enqueue(frame.streamId, { kind: 'reject', code: GrpcCode.RESOURCE_EXHAUSTED, message: 'ferry shim: too many pending requests' });
      }
      this.pendingRequests++;
    }
    this.enqueue(frame.streamId, { kind: 'frame', frame });
  }

  /**
   * Answers a stream with an error, in that stream's order: e.g. RESOURCE_EXHAUSTED for a frame the
   * decoder refused as too large (see `FrameTooLargeError`), as ttrpc's server does.
   */
  reject(streamId: number, code: GrpcCode, message: string): void {
    if (this.closed) return this.emit({ kind: 'dropped-after-close', streamId });
    this.enqueue(streamId, { kind: 'reject', code, message });
  }

  /** Convenience for the decoder's oversize error: answers its stream with RESOURCE_EXHAUSTED. */
  rejectOversized(err: FrameTooLargeError): void {
    this.reject(err.streamId, grpcCodeFor(err), err.message);
  }

  /** Passes one upstream frame to the client, whole. */
  fromUpstream(frame: Frame): void {
    if (this.closed) return this.emit({ kind: 'dropped-after-close', streamId: frame.streamId });
    this.write('downstream', frame.streamId, encodeFrame(frame));
  }

  /** Resolves once no stream has queued or held work (immediately if none has). */
  whenIdle(): Promise<void> {
    if (this.queues.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops routing: aborts the policy's signal, drops every queued frame and any verdict still to come.
   * Called when either socket closes; a held call then dies with its connection, as it would without us.
   */
  close(): void {
    if (this.closed) return;
    this.abort.abort(new ShimError('E_TTRPC_TRUNCATED', 'stream router closed'));
    for (const q of this.queues.values()) q.items.length = 0;
    this.queues.clear();
    this.pendingRequests = 0;
    this.notifyIdle();
  }

  private enqueue(streamId: number, item: Item): void {
    let q = this.queues.get(streamId);
    if (q === undefined) {
      q = { items: [], busy: false };
      this.queues.set(streamId, q);
    }
    q.items.push(item);
    if (!q.busy) this.drain(streamId, q);
  }

  // Runs a stream's items in order. Synchronous while verdicts are; on a pending one it parks and
  // resumes from the promise, leaving every other stream free to run meanwhile.
  private drain(streamId: number, q: StreamQueue): void {
    q.busy = true;
    for (;;) {
      if (this.closed || this.queues.get(streamId) !== q) return;
      const item = q.items[0];
      if (item === undefined) break;
      const parked = this.process(streamId, item);
      if (parked !== undefined) {
        void parked.then(() => {
          q.items.shift();
          this.drain(streamId, q);
        });
        return;
      }
      q.items.shift();
    }
    q.busy = false;
    this.queues.delete(streamId);
    if (this.queues.size === 0) this.notifyIdle();
  }

  // Returns a promise only when the item must wait; that promise never rejects.
  private process(streamId: number, item: Item): Promise<void> | undefined {
    if (item.kind === 'reject') {
      this.write('downstream', streamId, responseFrame(streamId, errorResponse(item.code, item.message)));
      return undefined;
    }
    const { frame } = item;
    // Data frames (ttrpc 1.2 streams) and anything unknown are passed on in stream order, never judged.
    if (frame.type !== FrameType.REQUEST) {
      this.write('upstream', streamId, encodeFrame(frame));
      return undefined;
    }
    let request: RequestValue;
    try {
      request = Request.decode(frame.payload);
    } catch (e: unknown) {
      // Fail closed: a request we cannot read could be a Kill we were told to hold. Same answer as
      // ttrpc's server gives ("unmarshal request error"), so the client sees no difference.
      this.emit({ kind: 'undecodable', streamId, error: e });
      this.settle(streamId, frame, { action: 'reject', code: GrpcCode.INVALID_ARGUMENT, message: `ferry shim: unmarshal request error: ${e instanceof Error ? e.message : String(e)}` });
      return undefined;
    }
    let verdict: Verdict | Promise<Verdict>;
    try {
      verdict = this.opts.policy({ streamId, request, frame }, this.abort.signal);
    } catch (e: unknown) {
      this.settle(streamId, frame, this.policyFailed(streamId, e));
      return undefined;
    }
    if (!isPromiseLike(verdict)) {
      this.settle(streamId, frame, verdict);
      return undefined;
    }
    return Promise.resolve(verdict).then(
      (v) => this.settle(streamId, frame, v),
      (e: unknown) => this.settle(streamId, frame, this.policyFailed(streamId, e)),
    );
  }

  // A policy that fails must not let the call through: refusing is the safe side during a migration.
  private policyFailed(streamId: number, e: unknown): Extract<Verdict, { action: 'reject' }> {
    this.emit({ kind: 'policy-failed', streamId, error: e });
    const code = e instanceof ShimError ? grpcCodeFor(e) : GrpcCode.INTERNAL;
    const message = e instanceof Error ? e.message : String(e);
    return { action: 'reject', code, message: `ferry shim: policy failed: ${message}` };
  }

  // Never throws: a throw here would leave the stream's queue parked for good.
  private settle(streamId: number, frame: Frame, v: Verdict): void {
    if (this.closed) return this.emit({ kind: 'dropped-after-close', streamId });
    this.pendingRequests--;
    let bytes: Uint8Array;
    let direction: 'upstream' | 'downstream' = 'downstream';
    try {
      switch (v.action) {
        case 'forward':
          direction = 'upstream';
          bytes = encodeFrame(frame);
          break;
        case 'rewrite':
          direction = 'upstream';
          bytes = encodeFrame({ ...frame, payload: v.request });
          break;
        case 'reject':
          bytes = responseFrame(streamId, errorResponse(v.code, v.message));
          break;
        case 'respond':
          bytes = responseFrame(streamId, okResponse(v.payload));
          break;
      }
    } catch (e: unknown) {
      // e.g. a reject with code 0, or a response payload over 4 MiB: still answer, or the client waits forever.
      direction = 'downstream';
      bytes = responseFrame(streamId, errorResponse(GrpcCode.INTERNAL, this.policyFailed(streamId, e).message));
    }
    this.write(direction, streamId, bytes);
  }

  private write(direction: 'upstream' | 'downstream', streamId: number, bytes: Uint8Array): void {
    try {
      this.opts[direction](bytes);
    } catch (e: unknown) {
      this.emit({ kind: 'sink-failed', streamId, direction, error: e });
    }
  }

  private emit(e: RouterEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch {
      // A logging hook must not break routing.
    }
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
