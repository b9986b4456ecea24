import { describe, expect, it } from 'vitest';
import { FrameTooLargeError, GrpcCode, SHIM_ERROR_CODES, ShimError, grpcCodeFor, isShimError } from '../../../shim/ttrpc/errors.js';

describe('ShimError', () => {
  it('has unique, E_-prefixed codes', () => {
    expect(new Set(SHIM_ERROR_CODES).size).toBe(SHIM_ERROR_CODES.length);
    for (const c of SHIM_ERROR_CODES) expect(c).toMatch(/^E_(TTRPC|PROTO|SHIM)_[A-Z_]+$/);
  });

  it('is recognised by brand, so a second copy of the module still matches', () => {
    const foreign: unknown = Object.assign(new Error('x'), { [Symbol.for('ferry.shim.error')]: true, code: 'E_PROTO_TRUNCATED' });
    expect(foreign instanceof ShimError).toBe(true);
    expect(isShimError(new Error('x'))).toBe(false);
    expect(isShimError('E_PROTO_TRUNCATED')).toBe(false);
  });

  it('narrows by code', () => {
    const e: unknown = new ShimError('E_PROTO_WIRETYPE', 'm', { offset: 3 }, { cause: 'c' });
    expect(isShimError(e, 'E_PROTO_WIRETYPE')).toBe(true);
    expect(isShimError(e, 'E_PROTO_TRUNCATED')).toBe(false);
    if (isShimError(e)) expect([e.code, e.details, e.cause, e.name]).toEqual(['E_PROTO_WIRETYPE', { offset: 3 }, 'c', 'ShimError']);
  });

  it('FrameTooLargeError is a ShimError with the stream to answer', () => {
    const e = new FrameTooLargeError({ streamId: 7, length: 5_000_000, type: 1 }, 4 << 20, []);
    expect(e).toBeInstanceOf(ShimError);
    expect(e).toMatchObject({ code: 'E_TTRPC_FRAME_TOO_LARGE', streamId: 7, length: 5_000_000, frameType: 1, decoded: [] });
  });
});

describe('GrpcCode', () => {
  it('uses the gRPC numbering containerd’s errdefs maps back', () => {
    expect(GrpcCode).toMatchObject({ OK: 0, INVALID_ARGUMENT: 3, NOT_FOUND: 5, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14 });
    expect(new Set(Object.values(GrpcCode)).size).toBe(17);
  });

  it.each([
    ['E_TTRPC_FRAME_TOO_LARGE', GrpcCode.RESOURCE_EXHAUSTED],
    ['E_PROTO_TRUNCATED', GrpcCode.INVALID_ARGUMENT],
    ['E_PROTO_WIRETYPE', GrpcCode.INVALID_ARGUMENT],
    ['E_PROTO_VARINT_OVERFLOW', GrpcCode.INVALID_ARGUMENT],
    ['E_PROTO_FIELD_NUMBER', GrpcCode.INVALID_ARGUMENT],
    ['E_TTRPC_TRUNCATED', GrpcCode.INTERNAL],
    ['E_TTRPC_FRAME_INVALID', GrpcCode.INTERNAL],
    ['E_PROTO_VALUE_RANGE', GrpcCode.INTERNAL],
  ] as const)('grpcCodeFor(%s) = %i, as ttrpc’s server answers', (c, g) => {
    expect(grpcCodeFor(new ShimError(c, 'm'))).toBe(g);
  });

  it('grpcCodeFor maps anything else to INTERNAL', () => {
    expect(grpcCodeFor(new Error('x'))).toBe(GrpcCode.INTERNAL);
    expect(grpcCodeFor(undefined)).toBe(GrpcCode.INTERNAL);
  });
});
