import { describe, expect, it } from 'vitest';
import { FerryError } from '../../../src/protocol/errors.js';
import { GrpcStatus, criError, ferryCodeForGrpc, grpcCodeOf, grpcStatusName } from '../../../src/cri/errors.js';

describe('CRI errors', () => {
  it.each([
    [GrpcStatus.FAILED_PRECONDITION, false, 'E_CRI'],
    [GrpcStatus.NOT_FOUND, false, 'E_NOT_FOUND'],
    [GrpcStatus.UNAVAILABLE, false, 'E_UNAVAILABLE'],
    [GrpcStatus.DEADLINE_EXCEEDED, false, 'E_DEADLINE'],
    [GrpcStatus.CANCELLED, true, 'E_ABORTED'],
    [GrpcStatus.CANCELLED, false, 'E_CRI'],
    [GrpcStatus.UNKNOWN, false, 'E_CRI'],
    [99, false, 'E_CRI'],
  ] as const)('gRPC %i (aborted %s) is %s', (code, aborted, want) => expect(ferryCodeForGrpc(code, aborted)).toBe(want));

  it('keeps method, gRPC code and containerd message', () => {
    const e = criError('StopContainer', { code: 9, details: 'failed to stop container "x": kill refused' });
    expect(e).toBeInstanceOf(FerryError);
    expect(e.code).toBe('E_CRI');
    expect(e.details).toEqual({ method: 'StopContainer', grpcCode: 9, grpcStatus: 'FAILED_PRECONDITION', grpcMessage: 'failed to stop container "x": kill refused' });
    expect(grpcCodeOf(e)).toBe(9);
    expect(grpcCodeOf(new Error('x'))).toBeUndefined();
    expect(grpcStatusName(42)).toBe('UNRECOGNIZED');
  });
});
