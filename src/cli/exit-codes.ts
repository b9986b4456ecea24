// The CLI's exit codes: automation must tell "moved", "still on the source" and "uncertain" apart.

import type { ErrorCode, MigrationReport } from '../protocol/index.js';

export const EXIT = {
  /** The container runs on the destination; the source copy is gone. */
  MIGRATED: 0,
  /** The migration failed and was rolled back: the container runs on the source with its state. */
  ROLLED_BACK: 1,
  /** Bad flags or arguments (commander's own code). */
  USAGE: 2,
  /** Refused before anything was touched: unknown container or host, same host, container not migratable. */
  REJECTED: 3,
  /** Another migration of the same container is in progress. */
  CONFLICT: 4,
  /** The controller or an agent could not be reached; nothing was started. */
  UNAVAILABLE: 5,
  /** The workload was lost after the point of no return (a pod's container whose task had already ended). */
  LOST: 6,
  /** Internal error, or a rollback that did not complete: check `ferry ps`. */
  FAILED: 7,
  /** Interrupted (Ctrl-C) before the commit point and rolled back. */
  INTERRUPTED: 130,
} as const;

export function exitForError(code: ErrorCode): number {
  switch (code) {
    case 'E_NOT_FOUND': case 'E_INVALID_ARGUMENT': case 'E_PRECONDITION': case 'E_FORBIDDEN':
      return EXIT.REJECTED;
    case 'E_CONFLICT':
      return EXIT.CONFLICT;
    case 'E_UNAVAILABLE': case 'E_UNAUTHENTICATED': case 'E_PROTOCOL_VERSION': case 'E_CONFIG':
      return EXIT.UNAVAILABLE;
    default:
      return EXIT.FAILED;
  }
}

export function exitForReport(r: MigrationReport, interrupted: boolean): number {
  switch (r.result) {
    case 'succeeded': case 'dry_run': return EXIT.MIGRATED;
    case 'rolled_back': return interrupted ? EXIT.INTERRUPTED : EXIT.ROLLED_BACK;
    case 'failed': return EXIT.FAILED;
    case 'lost': return EXIT.LOST;
    case 'staged': return EXIT.MIGRATED;
  }
}
