// Stable error codes of the shim's codec layer, and the gRPC status codes ttrpc carries on the wire.

import type { Frame } from './frame.js';

/**
 * Every error the codec layer throws. Codes are stable: tests and the shim branch on them, never on
 * the message text.
 */
export const SHIM_ERROR_CODES = [
  'E_TTRPC_FRAME_TOO_LARGE', // a frame header declares more than the maximum message length
  'E_TTRPC_TRUNCATED', // input ended inside a frame header or payload
  'E_TTRPC_FRAME_INVALID', // a frame field is out of range (stream id, type, flags) when encoding
  'E_PROTO_TRUNCATED', // protobuf input ended inside a tag, value or length-delimited field
  'E_PROTO_WIRETYPE', // an unsupported wire type, or a known field arrived with the wrong one
  'E_PROTO_VARINT_OVERFLOW', // a varint longer than 10 bytes or wider than 64 bits
  'E_PROTO_FIELD_NUMBER', // field number 0 or above 2^29-1
  'E_PROTO_VALUE_RANGE', // a value given to the encoder does not fit its protobuf type
  'E_SHIM_CONFIG', // ferry-shim.json is unreadable, not JSON, or fails validation
  'E_SHIM_UPSTREAM', // the upstream shim's `start` failed or printed no address
  'E_SHIM_PROXY_START', // the proxy daemon exited or did not listen within its bound
] as const;
export type ShimErrorCode = (typeof SHIM_ERROR_CODES)[number];

const BRAND = Symbol.for('ferry.shim.error');

/** The one error class of the shim's codec layer; `code` is what callers branch on. */
export class ShimError extends Error {
  /** Stable code from {@link SHIM_ERROR_CODES}. */
  readonly code: ShimErrorCode;
  /** Context for logs (offsets, lengths, message type); never needed to decide what to do. */
  readonly details: Readonly<Record<string, unknown>>;
  readonly [BRAND] = true;
  constructor(code: ShimErrorCode, message: string, details: Record<string, unknown> = {}, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ShimError';
    this.code = code;
    this.details = details;
  }
  // Same trick as src/protocol/errors.ts (from undici): a brand survives duplicate module copies.
  static override [Symbol.hasInstance](v: unknown): boolean {
    return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** Narrows a caught `unknown` to a {@link ShimError}, optionally of one code. */
export function isShimError(e: unknown, code?: ShimErrorCode): e is ShimError {
  return e instanceof ShimError && (code === undefined || e.code === code);
}

/**
 * A frame header declared a payload above the limit. The decoder has consumed the header and skips the
 * payload, as ttrpc's own `channel.recv` does, so the caller can answer that stream with
 * RESOURCE_EXHAUSTED and keep the connection.
 */
export class FrameTooLargeError extends ShimError {
  /** Stream the oversized frame belongs to; the error reply goes there. */
  readonly streamId: number;
  /** Declared payload length. */
  readonly length: number;
  /** Declared frame type (1 request, 2 response, 3 data). */
  readonly frameType: number;
  /** Frames completed earlier in the same `push`, in order; they are valid and must still be handled. */
  readonly decoded: readonly Frame[];
  constructor(header: { streamId: number; length: number; type: number }, max: number, decoded: readonly Frame[]) {
    super('E_TTRPC_FRAME_TOO_LARGE', `ttrpc frame of ${header.length} bytes on stream ${header.streamId} exceeds the ${max}-byte maximum`, {
      streamId: header.streamId,
      length: header.length,
      type: header.type,
      max,
    });
    this.name = 'FrameTooLargeError';
    this.streamId = header.streamId;
    this.length = header.length;
    this.frameType = header.type;
    this.decoded = decoded;
  }
}

/**
 * gRPC status codes (google.golang.org/grpc/codes, also google/rpc/code.proto). ttrpc puts one in
 * `Response.status.code`; containerd's errdefs maps them back to its sentinel errors
 * (9 becomes ErrFailedPrecondition, which `ctr` prints as "failed precondition").
 */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
/** One of the {@link GrpcCode} values. */
export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

/**
 * The status a ttrpc server answers with when it cannot handle a frame, mirroring ttrpc 1.1.1
 * `server.go`: oversized messages get RESOURCE_EXHAUSTED, undecodable requests INVALID_ARGUMENT.
 */
export function grpcCodeFor(e: unknown): GrpcCode {
  if (!(e instanceof ShimError)) return GrpcCode.INTERNAL;
  switch (e.code) {
    case 'E_TTRPC_FRAME_TOO_LARGE':
      return GrpcCode.RESOURCE_EXHAUSTED;
    case 'E_PROTO_TRUNCATED':
    case 'E_PROTO_WIRETYPE':
    case 'E_PROTO_VARINT_OVERFLOW':
    case 'E_PROTO_FIELD_NUMBER':
      return GrpcCode.INVALID_ARGUMENT;
    case 'E_TTRPC_TRUNCATED':
    case 'E_TTRPC_FRAME_INVALID':
    case 'E_PROTO_VALUE_RANGE':
      return GrpcCode.INTERNAL;
    case 'E_SHIM_CONFIG':
      return GrpcCode.INVALID_ARGUMENT;
    case 'E_SHIM_UPSTREAM':
    case 'E_SHIM_PROXY_START':
      return GrpcCode.UNAVAILABLE;
  }
}
