// The migration state machine: phases, the legal transitions between them, and which side of the commit point each is on.

import { FerryError, type WireError } from '../protocol/errors.js';

/**
 * Phases of one migration, in order. Everything before `committed` can be undone: the source still
 * holds the checkpoint and can run again. `committed` is the single commit point: the destination
 * reported the restored container running, and from then on the source copy is only removed.
 */
export const PHASES = [
  'pending', 'preflight', 'preparing', 'precopying', 'checkpointing', 'transferring', 'restoring',
  'committed', 'cleaning', 'done',
  'rolling-back', 'rolled-back', 'failed',
] as const;
export type Phase = (typeof PHASES)[number];

export const REVERSIBLE = ['pending', 'preflight', 'preparing', 'precopying', 'checkpointing', 'transferring', 'restoring'] as const;
export type ReversiblePhase = (typeof REVERSIBLE)[number];
export const isReversible = (p: Phase): p is ReversiblePhase => (REVERSIBLE as readonly Phase[]).includes(p);

export const TERMINAL = ['done', 'rolled-back', 'failed'] as const;
export const isTerminal = (p: Phase): boolean => (TERMINAL as readonly Phase[]).includes(p);

/** The whole graph on one screen; `satisfies` makes the compiler check every phase is covered. */
export const NEXT = {
  pending: ['preflight', 'rolling-back'],
  preflight: ['preparing', 'done', 'rolling-back'], // done: a dry run stops here
  preparing: ['precopying', 'checkpointing', 'rolling-back'],
  precopying: ['checkpointing', 'rolling-back'], // the container runs on the source throughout
  checkpointing: ['transferring', 'rolling-back'],
  transferring: ['restoring', 'rolling-back'],
  restoring: ['committed', 'rolling-back'],
  committed: ['cleaning'], // no way back: the destination runs
  cleaning: ['done'],
  done: [],
  'rolling-back': ['rolled-back', 'failed'],
  'rolled-back': [],
  failed: [],
} as const satisfies Record<Phase, readonly Phase[]>;

export function canTransition(from: Phase, to: Phase): boolean {
  return (NEXT[from] as readonly Phase[]).includes(to);
}

/** Pure: returns `to` or throws E_ILLEGAL_TRANSITION. */
export function transition(from: Phase, to: Phase): Phase {
  if (!canTransition(from, to)) throw new FerryError('E_ILLEGAL_TRANSITION', `illegal migration transition ${from} → ${to}`);
  return to;
}

/** What a restarted controller must do with a migration whose last journaled phase is `p`. */
export type Recovery = 'nothing' | 'roll-back' | 'finish-cleanup';
export function recoveryFor(p: Phase): Recovery {
  if (isTerminal(p)) return 'nothing';
  if (p === 'committed' || p === 'cleaning') return 'finish-cleanup';
  return 'roll-back';
}

export interface MigrationFailure { cause: WireError; from: Phase }
