// Builds the ttrpc Response frames the shim sends on its own: errors for refused calls and synthesised successes.

import type { AnyValue } from '../proto/well-known.js';
import { GrpcCode, ShimError } from './errors.js';
import { FrameType, encodeFrame } from './frame.js';
import { Response } from './messages.js';

/**
 * The payload of an error Response. containerd turns `code` back into an errdefs error: FAILED_PRECONDITION
 * for "kill refused, migration in progress", UNAVAILABLE while the upstream shim is gone.
 */
export function errorResponse(code: GrpcCode, message: string, details: readonly AnyValue[] = []): Uint8Array {
  // A code-0 status reads as success with an empty payload: never what a caller of this function means.
  if (code === GrpcCode.OK) throw new ShimError('E_PROTO_VALUE_RANGE', 'an error response needs a non-OK code', { code });
  return Response.encode({ status: { code, message, details } });
}

/**
 * The payload of a successful Response carrying an encoded method response. The status is present with
 * code 0, as Go's ttrpc server always sends it (server.go `Status: status.Proto()`), so bytes match.
 */
export function okResponse(payload: Uint8Array): Uint8Array {
  return Response.encode({ status: { code: GrpcCode.OK }, payload });
}

/** Wraps a Response payload in a response frame (type 2, flags 0) for `streamId`. */
export function responseFrame(streamId: number, responsePayload: Uint8Array): Uint8Array {
  return encodeFrame({ streamId, type: FrameType.RESPONSE, flags: 0, payload: responsePayload });
}
