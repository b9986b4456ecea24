import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Request, Response } from '../../../shim/ttrpc/messages.js';
import { errorResponse, okResponse, responseFrame } from '../../../shim/ttrpc/response.js';
import { GrpcCode } from '../../../shim/ttrpc/errors.js';
import { decodeFrame, FrameType } from '../../../shim/ttrpc/frame.js';
import { RpcStatus } from '../../../shim/proto/well-known.js';
import { KillRequest, TASK_SERVICE } from '../../../shim/proto/task.js';
import { bytes, hex, protocGolden, unhex, utf8 } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });

describe('ttrpc Request', () => {
  const kill = KillRequest.encode({ id: 'c1', signal: 9, all: true });

  it('matches hand-built bytes', () => {
    const md = bytes([0x0a, 1, ...utf8('k')], [0x12, 1, ...utf8('v')]);
    const expected = bytes(
      [0x0a, TASK_SERVICE.length, ...utf8(TASK_SERVICE)], // 1 service
      [0x12, 4, ...utf8('Kill')], // 2 method
      [0x1a, kill.length],
      kill, // 3 payload
      [0x20, 0x80, 0xe4, 0x97, 0xd0, 0x12], // 4 timeout_nano = 5e9 as a varint
      [0x2a, md.length],
      md, // 5 metadata
    );
    const value = { service: TASK_SERVICE, method: 'Kill', payload: kill, timeoutNano: 5_000_000_000n, metadata: [{ key: 'k', value: 'v' }] };
    expect(hex(Request.encode(value))).toBe(hex(expected));
    expect(Request.decode(expected)).toEqual(value);
  });

  it('matches protoc, with containerd’s namespace header', () => {
    const golden = protocGolden('ttrpc-request');
    const v = Request.decode(golden);
    expect(v).toEqual({
      service: TASK_SERVICE,
      method: 'Kill',
      payload: kill,
      timeoutNano: 5_000_000_000n,
      metadata: [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }],
    });
    expect(hex(Request.encode(v))).toBe(hex(golden));
  });

  it('throws E_PROTO_TRUNCATED for a cut inside any field', () => {
    const golden = protocGolden('ttrpc-request');
    const fieldEnds = new Set([0, 25, 31, 41, 47, golden.length]); // service, method, payload, timeout, metadata
    for (let cut = 0; cut < golden.length; cut++) {
      if (fieldEnds.has(cut)) expect(() => Request.decode(golden.subarray(0, cut))).not.toThrow();
      else expect(() => Request.decode(golden.subarray(0, cut)), `cut at ${cut}`).toThrow(code('E_PROTO_TRUNCATED'));
    }
  });

  it('round-trips', () => {
    const str = fc.string({ unit: 'grapheme', maxLength: 30 });
    const req = fc.record({
      service: str,
      method: str,
      payload: fc.uint8Array({ maxLength: 64 }),
      timeoutNano: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
      metadata: fc.array(fc.record({ key: str, value: str }), { maxLength: 4 }),
    });
    fc.assert(
      fc.property(req, (v) => {
        expect(Request.decode(Request.encode(v))).toEqual(v);
      }),
    );
  });
});

describe('ttrpc Response', () => {
  it('errorResponse matches protoc and hand-built bytes', () => {
    const msg = 'kill refused, migration in progress';
    const status = bytes([0x08, 9], [0x12, msg.length, ...utf8(msg)]);
    const expected = bytes([0x0a, status.length], status);
    const built = errorResponse(GrpcCode.FAILED_PRECONDITION, msg);
    expect(hex(built)).toBe(hex(expected));
    expect(hex(built)).toBe(hex(protocGolden('ttrpc-response-error')));
    expect(Response.decode(built)).toEqual({ status: { code: 9, message: msg, details: [] }, payload: new Uint8Array(0) });
  });

  it('okResponse carries an explicit empty status, as Go’s server sends', () => {
    expect(hex(okResponse(unhex('089221')))).toBe(hex(protocGolden('ttrpc-response-ok')));
    expect(hex(okResponse(new Uint8Array(0)))).toBe(hex(protocGolden('ttrpc-response-empty-ok')));
    expect(Response.decode(unhex('0a00')).status).toEqual({ code: 0, message: '', details: [] });
    expect(Response.decode(new Uint8Array(0)).status).toBeUndefined();
  });

  it('errorResponse keeps details and refuses code OK', () => {
    const d = [{ typeUrl: 'type.googleapis.com/google.rpc.DebugInfo', value: unhex('0a01') }];
    expect(Response.decode(errorResponse(GrpcCode.UNAVAILABLE, 'gone', d)).status?.details).toEqual(d);
    expect(() => errorResponse(GrpcCode.OK, 'fine')).toThrow(code('E_PROTO_VALUE_RANGE'));
  });

  it('encodes a negative status code as protoc does', () => {
    const golden = protocGolden('rpc-status-negative-code');
    expect(hex(RpcStatus.encode({ code: -1, message: 'x' }))).toBe(hex(golden));
    expect(RpcStatus.decode(golden).code).toBe(-1);
  });

  it('responseFrame wraps the payload in a type-2 frame on the given stream', () => {
    const payload = errorResponse(GrpcCode.UNAVAILABLE, 'x');
    const f = responseFrame(7, payload);
    expect(hex(f.subarray(0, 10))).toBe(hex(bytes([0, 0, 0, payload.length], [0, 0, 0, 7], [FrameType.RESPONSE, 0])));
    expect(decodeFrame(f)).toEqual({ streamId: 7, type: 2, flags: 0, payload });
  });
});
