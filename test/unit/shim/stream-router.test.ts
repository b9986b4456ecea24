import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { StreamRouter, type RequestPolicy, type RouterEvent, type Verdict } from '../../../shim/ttrpc/stream-router.js';
import { FrameDecoder, FrameType, decodeFrame, encodeFrame, type Frame } from '../../../shim/ttrpc/frame.js';
import { FrameTooLargeError, GrpcCode, ShimError } from '../../../shim/ttrpc/errors.js';
import { Request, Response } from '../../../shim/ttrpc/messages.js';
import { Empty } from '../../../shim/proto/well-known.js';
import { KillRequest, StateRequest, TASK_SERVICE } from '../../../shim/proto/task.js';
import { decodeTaskCall } from '../../../shim/proto/task-call.js';
import { deferred, flushMicrotasks, hex, unhex, type Deferred } from './helpers.js';

const requestFrame = (streamId: number, method: string, payload: Uint8Array = new Uint8Array(0)): Frame => ({
  streamId,
  type: FrameType.REQUEST,
  flags: 0,
  payload: Request.encode({ service: TASK_SERVICE, method, payload }),
});
const kill = (sid: number, signal = 9): Frame => requestFrame(sid, 'Kill', KillRequest.encode({ id: 'c1', signal }));
const state = (sid: number): Frame => requestFrame(sid, 'State', StateRequest.encode({ id: 'c1' }));

interface Sent {
  readonly streamId: number;
  readonly type: number;
  readonly wire: Uint8Array;
}

// Fake sockets: record every whole frame the router writes, in order.
function harness(policy: RequestPolicy, opts: { maxPending?: number } = {}) {
  const up: Sent[] = [];
  const down: Sent[] = [];
  const events: RouterEvent[] = [];
  const record = (to: Sent[]) => (wire: Uint8Array) => {
    const fr = decodeFrame(wire); // also proves each write is exactly one whole frame
    to.push({ streamId: fr.streamId, type: fr.type, wire });
  };
  const router = new StreamRouter({ policy, upstream: record(up), downstream: record(down), onEvent: (e) => events.push(e), ...opts });
  const status = (s: Sent) => Response.decode(decodeFrame(s.wire).payload).status;
  return { router, up, down, events, status };
}

const methodOf = (req: { request: { method: string } }): string => req.request.method;

describe('StreamRouter', () => {
  it('forwards synchronously-decided requests byte for byte, before fromClient returns', () => {
    const h = harness(() => ({ action: 'forward' }));
    const fr = kill(1);
    h.router.fromClient(fr);
    expect(h.up.map((s) => hex(s.wire))).toEqual([hex(encodeFrame(fr))]);
    expect(h.down).toEqual([]);
    expect(h.router.pending).toBe(0);
  });

  it('rewrite sends the new Request envelope upstream on the same stream, type and flags', () => {
    const fr = { ...kill(3), flags: 1 };
    const replaced = Request.encode({ service: TASK_SERVICE, method: 'Kill', payload: KillRequest.encode({ id: 'c2', signal: 15 }) });
    const h = harness(() => ({ action: 'rewrite', request: replaced }));
    h.router.fromClient(fr);
    expect(h.up.map((s) => hex(s.wire))).toEqual([hex(encodeFrame({ streamId: 3, type: FrameType.REQUEST, flags: 1, payload: replaced }))]);
    expect(h.down).toEqual([]);
  });

  it('a Kill held on stream 5 does not delay a State on stream 7', async () => {
    const hold = deferred<Verdict>();
    const h = harness((req) => (methodOf(req) === 'Kill' ? hold.promise : { action: 'forward' }));
    h.router.fromClient(kill(5));
    h.router.fromClient(state(7));
    await flushMicrotasks();
    expect(h.up.map((s) => s.streamId)).toEqual([7]);
    expect(h.router.pending).toBe(1);

    hold.resolve({ action: 'forward' });
    await h.router.whenIdle();
    expect(h.up.map((s) => s.streamId)).toEqual([7, 5]);
    expect(h.router.pending).toBe(0);
  });

  it('keeps order within a stream: a data frame waits behind its held request', async () => {
    const hold = deferred<Verdict>();
    const h = harness(() => hold.promise);
    const data: Frame = { streamId: 5, type: FrameType.DATA, flags: 0, payload: unhex('01') };
    h.router.fromClient(kill(5));
    h.router.fromClient(data);
    await flushMicrotasks();
    expect(h.up).toEqual([]);
    hold.resolve({ action: 'forward' });
    await h.router.whenIdle();
    expect(h.up.map((s) => [s.streamId, s.type])).toEqual([
      [5, FrameType.REQUEST],
      [5, FrameType.DATA],
    ]);
  });

  it('releases held calls in the order the policy decides, each on its own stream', async () => {
    const holds = new Map<number, Deferred<Verdict>>();
    const h = harness((req) => {
      const d = deferred<Verdict>();
      holds.set(req.streamId, d);
      return d.promise;
    });
    for (const sid of [1, 3, 5]) h.router.fromClient(kill(sid));
    holds.get(5)?.resolve({ action: 'forward' });
    await flushMicrotasks();
    holds.get(1)?.resolve({ action: 'forward' });
    await flushMicrotasks();
    holds.get(3)?.resolve({ action: 'forward' });
    await h.router.whenIdle();
    expect(h.up.map((s) => s.streamId)).toEqual([5, 1, 3]);
  });

  it('reject answers the client with the status and never reaches upstream', () => {
    const h = harness(() => ({ action: 'reject', code: GrpcCode.FAILED_PRECONDITION, message: 'kill refused, migration in progress' }));
    h.router.fromClient(kill(5));
    expect(h.up).toEqual([]);
    expect(h.down.map((s) => [s.streamId, s.type])).toEqual([[5, FrameType.RESPONSE]]);
    const [sent] = h.down;
    expect(sent && h.status(sent)).toEqual({ code: 9, message: 'kill refused, migration in progress', details: [] });
  });

  it('respond synthesises a success with the given payload', () => {
    const h = harness(() => ({ action: 'respond', payload: Empty.encode({}) }));
    h.router.fromClient(kill(3));
    const [sent] = h.down;
    expect(sent && Response.decode(decodeFrame(sent.wire).payload)).toEqual({ status: { code: 0, message: '', details: [] }, payload: new Uint8Array() });
  });

  it('gives the policy a decodable request so it can inspect the Task call', () => {
    const seen: unknown[] = [];
    const h = harness((req) => {
      seen.push(decodeTaskCall(req.request.service, req.request.method, req.request.payload));
      return { action: 'forward' };
    });
    h.router.fromClient(kill(1, 15));
    expect(seen).toEqual([{ kind: 'task', method: 'Kill', request: { id: 'c1', execId: '', signal: 15, all: false } }]);
  });

  it('fails closed on an undecodable request: INVALID_ARGUMENT, nothing forwarded', () => {
    let called = false;
    const h = harness(() => {
      called = true;
      return { action: 'forward' };
    });
    h.router.fromClient({ streamId: 9, type: FrameType.REQUEST, flags: 0, payload: unhex('0a05') });
    expect(called).toBe(false);
    expect(h.up).toEqual([]);
    const [sent] = h.down;
    expect(sent && h.status(sent)?.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(h.events).toMatchObject([{ kind: 'undecodable', streamId: 9, error: { code: 'E_PROTO_TRUNCATED' } }]);
  });

  it('fails closed when the policy throws or rejects', async () => {
    const h = harness((req) => {
      if (req.streamId === 1) throw new Error('boom');
      if (req.streamId === 3) return Promise.reject(new ShimError('E_PROTO_TRUNCATED', 'bad kill payload'));
      return { action: 'forward' };
    });
    h.router.fromClient(kill(1));
    h.router.fromClient(kill(3));
    h.router.fromClient(state(5));
    await h.router.whenIdle();
    expect(h.up.map((s) => s.streamId)).toEqual([5]);
    expect(h.down.map((s) => [s.streamId, h.status(s)?.code])).toEqual([
      [1, GrpcCode.INTERNAL],
      [3, GrpcCode.INVALID_ARGUMENT],
    ]);
    expect(h.events.map((e) => e.kind)).toEqual(['policy-failed', 'policy-failed']);
  });

  it('answers INTERNAL for an unusable verdict and keeps the stream moving', () => {
    const h = harness(() => ({ action: 'reject', code: GrpcCode.OK, message: 'not an error' }));
    h.router.fromClient(kill(1));
    h.router.fromClient(kill(3));
    expect(h.down.map((s) => [s.streamId, h.status(s)?.code])).toEqual([
      [1, GrpcCode.INTERNAL],
      [3, GrpcCode.INTERNAL],
    ]);
    expect(h.router.pending).toBe(0);
  });

  it('refuses requests beyond maxPending with RESOURCE_EXHAUSTED', async () => {
    const hold = deferred<Verdict>();
    const h = harness(() => hold.promise, { maxPending: 2 });
    h.router.fromClient(kill(1));
    h.router.fromClient(kill(3));
    h.router.fromClient(kill(5));
    expect(h.down.map((s) => [s.streamId, h.status(s)?.code])).toEqual([[5, GrpcCode.RESOURCE_EXHAUSTED]]);
    expect(h.events).toMatchObject([{ kind: 'overloaded', streamId: 5, pending: 2 }]);
    hold.resolve({ action: 'forward' });
    await h.router.whenIdle();
    expect(h.up.map((s) => s.streamId)).toEqual([1, 3]);
  });

  it('answers an oversized frame on its own stream with RESOURCE_EXHAUSTED, as ttrpc’s server does', () => {
    const h = harness(() => ({ action: 'forward' }));
    const decoder = new FrameDecoder({ maxLength: 64 });
    const wire = new Uint8Array([
      ...encodeFrame(state(1)),
      ...encodeFrame({ streamId: 7, type: FrameType.REQUEST, flags: 0, payload: new Uint8Array(100) }),
      ...encodeFrame(state(9)),
    ]);
    try {
      decoder.push(wire);
    } catch (e: unknown) {
      if (!(e instanceof FrameTooLargeError)) throw e;
      for (const fr of e.decoded) h.router.fromClient(fr);
      h.router.rejectOversized(e);
    }
    for (const fr of decoder.push(new Uint8Array(0))) h.router.fromClient(fr);
    expect(h.up.map((s) => s.streamId)).toEqual([1, 9]);
    expect(h.down.map((s) => [s.streamId, h.status(s)?.code])).toEqual([[7, GrpcCode.RESOURCE_EXHAUSTED]]);
  });

  it('passes upstream frames to the client whole', () => {
    const h = harness(() => ({ action: 'forward' }));
    const resp: Frame = { streamId: 3, type: FrameType.RESPONSE, flags: 0, payload: unhex('0a00') };
    h.router.fromUpstream(resp);
    expect(h.down.map((s) => hex(s.wire))).toEqual([hex(encodeFrame(resp))]);
  });

  it('close() aborts held policies and drops their late verdicts', async () => {
    const hold = deferred<Verdict>();
    let signal: AbortSignal | undefined;
    const h = harness((_req, s) => {
      signal = s;
      return hold.promise;
    });
    h.router.fromClient(kill(1));
    const idle = h.router.whenIdle();
    h.router.close();
    await idle;
    expect(signal?.aborted).toBe(true);
    hold.resolve({ action: 'forward' });
    await flushMicrotasks();
    h.router.fromClient(state(3));
    h.router.fromUpstream({ streamId: 1, type: FrameType.RESPONSE, flags: 0, payload: new Uint8Array() });
    expect(h.up).toEqual([]);
    expect(h.down).toEqual([]);
    expect(h.events.map((e) => e.kind)).toEqual(['dropped-after-close', 'dropped-after-close', 'dropped-after-close']);
  });

  it('reports a failing sink and keeps routing', () => {
    let fail = true;
    const events: RouterEvent[] = [];
    const up: number[] = [];
    const router = new StreamRouter({
      policy: () => ({ action: 'forward' }),
      upstream: (w) => {
        if (fail) throw new Error('EPIPE');
        up.push(decodeFrame(w).streamId);
      },
      downstream: () => undefined,
      onEvent: (e) => events.push(e),
    });
    router.fromClient(kill(1));
    fail = false;
    router.fromClient(kill(3));
    expect(up).toEqual([3]);
    expect(events).toMatchObject([{ kind: 'sink-failed', streamId: 1, direction: 'upstream' }]);
  });

  it('whenIdle resolves at once when nothing is queued', async () => {
    const h = harness(() => ({ action: 'forward' }));
    await expect(h.router.whenIdle()).resolves.toBeUndefined();
  });

  it('keeps per-stream order and answers every request exactly once, whatever the release order (fast-check scheduler)', async () => {
    const verdicts: Verdict[] = [
      { action: 'forward' },
      { action: 'reject', code: GrpcCode.FAILED_PRECONDITION, message: 'held' },
      { action: 'respond', payload: new Uint8Array() },
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(fc.record({ stream: fc.integer({ min: 0, max: 3 }), data: fc.boolean(), verdict: fc.nat(2), sync: fc.boolean() }), { maxLength: 20 }),
        async (s, script) => {
          const h = harness((req) => {
            const v: Verdict = verdicts[Number(req.request.method)] ?? { action: 'forward' };
            const sync = req.request.service === 'sync';
            return sync ? v : s.schedule(Promise.resolve(v), `stream ${req.streamId}`);
          });
          const sent: Array<{ sid: number; tag: number; data: boolean }> = [];
          script.forEach((step, tag) => {
            const sid = 2 * step.stream + 1;
            // Tag each frame with its index in the payload so the output order can be checked.
            const fr: Frame = step.data
              ? { streamId: sid, type: FrameType.DATA, flags: 0, payload: new Uint8Array([tag]) }
              : {
                  streamId: sid,
                  type: FrameType.REQUEST,
                  flags: 0,
                  payload: Request.encode({ service: step.sync ? 'sync' : 'async', method: String(step.verdict), payload: new Uint8Array([tag]) }),
                };
            sent.push({ sid, tag, data: step.data });
            h.router.fromClient(fr);
          });
          // Releases held verdicts in an order fast-check picks, until every stream has drained.
          await s.waitFor(h.router.whenIdle());

          const tagOf = (w: Uint8Array): number => {
            const fr = decodeFrame(w);
            return fr.type === FrameType.DATA ? (fr.payload[0] ?? -1) : (Request.decode(fr.payload).payload[0] ?? -1);
          };
          const requests = sent.filter((x) => !x.data);
          // Every request answered exactly once: forwarded, or answered on the downstream side.
          expect(h.up.filter((x) => x.type === FrameType.REQUEST).length + h.down.length).toBe(requests.length);
          // Within each stream, forwarded frames keep their arrival order.
          for (const sid of new Set(sent.map((x) => x.sid))) {
            const order = h.up.filter((x) => x.streamId === sid).map((x) => tagOf(x.wire));
            expect(order).toEqual([...order].sort((a, b) => a - b));
          }
          expect(h.router.pending).toBe(0);
        },
      ),
    );
  });
});
