// Stable error codes shared by every Ferry process, and their wire form.

/** Every error a peer, the controller or the CLI can report. Codes are stable: tests and scripts match on them. */
export const ERROR_CODES = [
  'E_NOT_FOUND', // unknown container or host
  'E_INVALID_ARGUMENT', // malformed request, bad flag, same source and destination
  'E_PRECONDITION', // container stopped, image missing on destination, unsupported mount
  'E_CONFLICT', // another migration of the same container is in progress
  'E_ILLEGAL_TRANSITION', // a migration state machine bug, never expected
  'E_UNAVAILABLE', // a peer is unreachable or went away
  'E_UNAUTHENTICATED', // a peer failed the handshake
  'E_FORBIDDEN', // an authenticated peer asked for something it may not do
  'E_DEADLINE', // a timeout expired
  'E_ABORTED', // cancelled by the user or by shutdown
  'E_PROTOCOL', // malformed or oversized frame, bad shape
  'E_PROTOCOL_VERSION', // incompatible peer
  'E_INTEGRITY', // checksum or byte-count mismatch in a transfer
  'E_CRIU_DUMP',
  'E_CRIU_RESTORE',
  'E_DOCKER',
  'E_CRI', // a CRI call to containerd failed; details.grpcCode says how (e.g. 9 when a shim refuses a Kill)
  'E_CONFIG',
  'E_FAULT_INJECTED', // test-only fault injection fired
  'E_LOST', // failed after the source could no longer run the workload: it is gone, not rolled back
  'E_INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

const CODE_SET: ReadonlySet<string> = new Set(ERROR_CODES);
export const isErrorCode = (v: unknown): v is ErrorCode => typeof v === 'string' && CODE_SET.has(v);

/** The serialisable form of an error, as it crosses process boundaries. */
export interface WireError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

const BRAND = Symbol.for('ferry.error');

/** The one error class of Ferry. `code` is what callers branch on, never `message`. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  readonly [BRAND] = true;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = code;
    this.details = opts.details;
  }
  // Survives duplicate module copies (undici's trick): brand check instead of prototype identity.
  static override [Symbol.hasInstance](v: unknown): boolean {
    return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[BRAND] === true;
  }
}

export const isFerryError = (e: unknown): e is FerryError => e instanceof FerryError;

export function toWire(e: unknown): WireError {
  if (isFerryError(e)) return e.details ? { code: e.code, message: e.message, details: e.details } : { code: e.code, message: e.message };
  if (e instanceof Error && e.name === 'AbortError') return { code: 'E_ABORTED', message: e.message };
  if (e instanceof Error && e.name === 'TimeoutError') return { code: 'E_DEADLINE', message: e.message };
  return { code: 'E_INTERNAL', message: e instanceof Error ? e.message : String(e) };
}

export function fromWire(w: WireError): FerryError {
  return new FerryError(w.code, w.message, w.details ? { details: w.details } : {});
}

/** Normalises anything thrown into a FerryError, keeping the original as cause. */
export function asFerryError(e: unknown, fallback: ErrorCode = 'E_INTERNAL'): FerryError {
  if (isFerryError(e)) return e;
  const w = toWire(e);
  return new FerryError(w.code === 'E_INTERNAL' ? fallback : w.code, w.message, { cause: e });
}
