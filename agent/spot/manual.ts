// The operator's notice source: `ferry drain <host>` raises a 'manual' notice with the same events as the watchers.

import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { FerryError } from '../../src/protocol/errors.js';
import { realClock, type Clock } from './clock.js';
import type { Notice, NoticeEvents } from './notice.js';

/** What the operator asked for. */
export interface ManualTrigger {
  /** The host to drain; omitted means "this host". */
  host?: string;
  /** Time left from now, in ms; null or omitted means no deadline. */
  deadlineMs?: number | null;
  /** Idempotency key: triggering the same id again returns the first notice and emits nothing. */
  id?: string;
  /** Free text for the record (kept in `raw`). */
  reason?: string;
}

/** Manual triggers remembered for idempotency; an operator issues a handful, this is only a bound. */
const MAX_REMEMBERED = 256;

/**
 * Emits `notice` events (`provider: 'manual'`, `kind: 'termination'`) on `trigger()`, synchronously, so a listener's
 * exception reaches the caller (the CLI request handler) rather than vanishing.
 */
export class ManualNoticeSource extends EventEmitter<NoticeEvents> {
  private readonly issued = new Map<string, Notice>();

  constructor(private readonly clock: Clock = realClock) {
    super();
  }

  /** Raises a notice now. Throws `E_INVALID_ARGUMENT` for a negative or non-finite deadline or a bad id. */
  trigger(t: ManualTrigger = {}): Notice {
    const deadlineMs = t.deadlineMs ?? null;
    if (deadlineMs !== null && (!Number.isFinite(deadlineMs) || deadlineMs < 0)) throw new FerryError('E_INVALID_ARGUMENT', `drain deadline must be a non-negative number of ms, got ${deadlineMs}`);
    if (t.id !== undefined && (t.id.length === 0 || t.id.length > 200)) throw new FerryError('E_INVALID_ARGUMENT', 'manual notice id must be 1..200 characters');
    // Random by default: ids outlive the process (the controller keeps them), so a counter would repeat after a restart.
    const id = `manual:${t.id ?? randomUUID()}`;
    const earlier = this.issued.get(id);
    if (earlier !== undefined) return earlier;
    const now = this.clock.nowMono();
    const n: Notice = {
      provider: 'manual',
      kind: 'termination',
      ...(t.host === undefined ? {} : { host: t.host }),
      receivedAtMono: now,
      deadlineMono: deadlineMs === null ? null : now + deadlineMs,
      raw: { deadlineMs, ...(t.reason === undefined ? {} : { reason: t.reason }) },
      id,
    };
    this.issued.set(id, n);
    if (this.issued.size > MAX_REMEMBERED) {
      const oldest = this.issued.keys().next();
      if (oldest.done !== true) this.issued.delete(oldest.value);
    }
    this.emit('notice', n);
    return n;
  }
}
