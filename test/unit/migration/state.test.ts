import { describe, expect, it } from 'vitest';
import { NEXT, PHASES, canTransition, isReversible, recoveryFor, transition, type Phase } from '../../../src/migration/state.js';

const pairs = PHASES.flatMap((a) => PHASES.map((b) => [a, b] as [Phase, Phase]));

describe('migration state machine', () => {
  it.each(pairs)('%s → %s is legal exactly when the table says so', (a, b) => {
    const legal = (NEXT[a] as readonly Phase[]).includes(b);
    expect(canTransition(a, b)).toBe(legal);
    if (legal) expect(transition(a, b)).toBe(b);
    else expect(() => transition(a, b)).toThrow(expect.objectContaining({ code: 'E_ILLEGAL_TRANSITION' }));
  });

  it('nothing after the commit point can roll back', () => {
    for (const p of ['committed', 'cleaning', 'done'] as const) {
      expect(isReversible(p)).toBe(false);
      expect(canTransition(p, 'rolling-back')).toBe(false);
    }
  });

  it('every reversible phase can roll back', () => {
    for (const p of PHASES.filter(isReversible)) expect(canTransition(p, 'rolling-back')).toBe(true);
  });

  it('terminal phases have no way out', () => {
    for (const p of ['done', 'rolled-back', 'failed'] as const) expect(NEXT[p]).toEqual([]);
  });

  it('recovery rolls back before the commit point and finishes after it', () => {
    expect(recoveryFor('transferring')).toBe('roll-back');
    expect(recoveryFor('restoring')).toBe('roll-back');
    expect(recoveryFor('rolling-back')).toBe('roll-back');
    expect(recoveryFor('committed')).toBe('finish-cleanup');
    expect(recoveryFor('cleaning')).toBe('finish-cleanup');
    expect(recoveryFor('done')).toBe('nothing');
  });
});
