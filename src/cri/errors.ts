// How a failed CRI call becomes a FerryError: the gRPC status code is kept, the Ferry code says what kind it is.

import { FerryError, type ErrorCode } from '../protocol/errors.js';

/** gRPC status codes (grpc/grpc doc/statuscodes.md); a CRI error carries one in `details.grpcCode`. */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusName = keyof typeof GrpcStatus;

const NAMES: ReadonlyMap<number, GrpcStatusName> = new Map(Object.entries(GrpcStatus).map(([k, v]) => [v, k as GrpcStatusName]));
export const grpcStatusName = (code: number): GrpcStatusName | 'UNRECOGNIZED' => NAMES.get(code) ?? 'UNRECOGNIZED';

/** What a CRI error's `details` hold. */
export interface CriErrorDetails {
  /** The CRI method, e.g. `StopContainer`. */
  method: string;
  grpcCode: number;
  grpcStatus: GrpcStatusName | 'UNRECOGNIZED';
  /** containerd's message, unchanged (the first words name the failing step: "failed to stop container ..."). */
  grpcMessage: string;
}

/**
 * The Ferry code for a gRPC status. NOT_FOUND, UNAVAILABLE and DEADLINE_EXCEEDED keep the meaning callers
 * already branch on elsewhere (gone / daemon unreachable / timed out); a cancellation we asked for is
 * E_ABORTED; everything else, including a shim refusing a Kill (FAILED_PRECONDITION), is E_CRI.
 */
export function ferryCodeForGrpc(code: number, aborted: boolean): ErrorCode {
  if (aborted && code === GrpcStatus.CANCELLED) return 'E_ABORTED';
  switch (code) {
    case GrpcStatus.NOT_FOUND: return 'E_NOT_FOUND';
    case GrpcStatus.UNAVAILABLE: return 'E_UNAVAILABLE';
    case GrpcStatus.DEADLINE_EXCEEDED: return 'E_DEADLINE';
    default: return 'E_CRI';
  }
}

/** A FerryError for a failed CRI call; `cause` is grpc-js's ServiceError. */
export function criError(method: string, status: { code: number; details?: string }, opts: { aborted?: boolean; cause?: unknown } = {}): FerryError {
  const details: CriErrorDetails = { method, grpcCode: status.code, grpcStatus: grpcStatusName(status.code), grpcMessage: status.details ?? '' };
  return new FerryError(ferryCodeForGrpc(status.code, !!opts.aborted), `CRI ${method}: ${details.grpcStatus}: ${details.grpcMessage}`, {
    cause: opts.cause,
    details: { ...details },
  });
}

/** The gRPC code a CRI error carries, if `e` is one. */
export function grpcCodeOf(e: unknown): number | undefined {
  if (!(e instanceof FerryError)) return undefined;
  const c = e.details?.['grpcCode'];
  return typeof c === 'number' ? c : undefined;
}
