import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { deadline } from '../../../src/util/abort.js';

describe('deadline()', () => {
  it('aborts after its time even across garbage collections (Node 20 AbortSignal.any loses it)', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const s = deadline(50, new AbortController().signal);
    const t0 = performance.now();
    // Collect garbage while waiting, as a busy process would; bounded so a regression fails, not hangs.
    while (!s.aborted && performance.now() - t0 < 2000) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(s.aborted).toBe(true);
    expect((s.reason as Error).name).toBe('TimeoutError');
  });

  it('aborts with the parent and keeps its reason', () => {
    const p = new AbortController();
    const s = deadline(60_000, p.signal);
    p.abort(new Error('stop'));
    expect(s.aborted).toBe(true);
    expect((s.reason as Error).message).toBe('stop');
  });

  it('is born aborted when a parent already is', () => {
    const p = new AbortController();
    p.abort('x');
    expect(deadline(60_000, p.signal).reason).toBe('x');
  });
});
