// Deadlines as AbortSignals, without Node 20's AbortSignal.any bug.
//
// On Node 20, `AbortSignal.any([parent, AbortSignal.timeout(ms)])` holds the timeout signal only weakly:
// after a garbage collection it is gone and the combined signal never aborts (measured here: with
// `--expose-gc` and one gc() per loop, a 300 ms deadline was still not reached after 3 s). Every deadline
// in Ferry goes through this helper instead: a plain AbortController aborted by a timer the event loop owns.

/** A signal that aborts after `ms` (reason: a TimeoutError) or as soon as any parent aborts (its reason). */
export function deadline(ms: number, ...parents: (AbortSignal | undefined)[]): AbortSignal {
  const ac = new AbortController();
  const live = parents.filter((p): p is AbortSignal => p !== undefined);
  const already = live.find((p) => p.aborted);
  if (already) { ac.abort(already.reason); return ac.signal; }
  const timer = setTimeout(() => ac.abort(new DOMException(`timed out after ${ms} ms`, 'TimeoutError')), ms);
  // A pending deadline alone must not keep a process alive.
  timer.unref();
  const onParent = (e: Event): void => ac.abort((e.target as AbortSignal).reason);
  for (const p of live) p.addEventListener('abort', onParent, { once: true });
  ac.signal.addEventListener('abort', () => {
    clearTimeout(timer);
    for (const p of live) p.removeEventListener('abort', onParent);
  }, { once: true });
  return ac.signal;
}
