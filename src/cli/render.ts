// Human output for the CLI: progress on stderr (TTY only), tables and the final report on stdout.

import type { ContainerSummary, DrainReport, HostStatus, MigrationReport, ProgressEvent, RoundStats } from '../protocol/index.js';

const MiB = 2 ** 20;
export const fmtBytes = (n: number): string => (n >= 10 * MiB ? `${(n / MiB).toFixed(0)} MiB` : n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
export const fmtMs = (ms: number | null): string => (ms === null ? '-' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}

export function hostsTable(hs: HostStatus[]): string {
  return table([['HOST', 'AGENT', 'STATUS', 'CRIU', 'KERNEL', 'DOCKER'], ...hs.map((h) => [
    h.name, h.url, `${h.connected ? 'ready' : `down${h.error ? ` (${h.error})` : ''}`}${h.cordoned ? ',cordoned' : ''}`, h.caps?.criuVersion ?? '-', h.caps?.kernel ?? '-', h.caps?.dockerVersion ?? '-',
  ])]);
}

export function containersTable(cs: ContainerSummary[]): string {
  return table([['HOST', 'CONTAINER ID', 'NAME', 'IMAGE', 'STATUS'], ...cs.map((c) => [c.host, c.id.slice(0, 12), c.name, c.image, c.status])]);
}

export function reportText(r: MigrationReport): string {
  const head = {
    succeeded: `migrated ${r.container}: ${r.source} → ${r.destination}`,
    rolled_back: `rolled back: ${r.container} is still running on ${r.source}`,
    failed: `FAILED: ${r.container} (${r.source} → ${r.destination}); state uncertain, check \`ferry ps\``,
    staged: `staged: ${r.container}'s state waits on ${r.destination} for its replacement pod`,
    lost: `LOST: ${r.container} (${r.source} → ${r.destination}) runs nowhere: the source had already let it go`,
    dry_run: `dry run: ${r.container} can move ${r.source} → ${r.destination}`,
  }[r.result];
  const lines = [head];
  if (r.error) lines.push(`  error:     ${r.error.code}: ${r.error.message}`);
  if (r.result !== 'dry_run') {
    lines.push(`  freeze:    ${fmtMs(r.downtimeMs)}`, `  total:     ${fmtMs(r.totalMs)}`, `  moved:     ${fmtBytes(r.bytesTotal)}`);
    lines.push(`  phases:    ${Object.entries(r.phases).map(([k, v]) => `${k} ${fmtMs(v)}`).join(', ')}`);
  }
  if (r.modeChoice) lines.push(`  chosen:    ${r.strategy} (auto, ${r.modeChoice.reason}): ${r.modeChoice.explain}`);
  if (r.rounds?.length) {
    lines.push(`  mode:      pre-copy, ${r.rounds.length} round${r.rounds.length === 1 ? '' : 's'}`);
    for (const x of r.rounds) lines.push(`    ${roundText(x)}${x.throttle ? `, CPU throttled ${Math.round(x.throttle * 100)} %` : ''}`);
  }
  if (r.convergence) lines.push(`  stopped:   ${r.convergence.reason}: ${r.convergence.explain}`);
  for (const c of r.checks ?? []) lines.push(`  - ${c}`);
  return lines.join('\n');
}

/** One pre-copy round: what it moved and how fast the container was writing meanwhile. */
export function roundText(x: Partial<RoundStats>): string {
  // Round 0 reports every page, not writes: no dirty rate for it.
  const secs = (x.intervalMs ?? 0) / 1000;
  const rate = x.round && secs > 0 && x.dirtyPages !== undefined ? `; the container dirtied ${fmtBytes((x.dirtyPages * 4096) / secs)}/s` : '';
  return `round ${x.round}: ${x.pages ?? 0} pages, ${fmtBytes(x.bytes ?? 0)} in ${fmtMs(x.durationMs ?? 0)}${rate}`;
}

/** One status line, rewritten in place; only used when stderr is a terminal. */
export class ProgressLine {
  private startedAt = performance.now();
  private lastBytes = 0;
  private lastAt = performance.now();
  private rate = 0;
  constructor(private readonly out: NodeJS.WriteStream) {}

  update(e: ProgressEvent): void {
    const now = performance.now();
    if (e.bytes !== undefined && now > this.lastAt) {
      this.rate = ((e.bytes - this.lastBytes) / ((now - this.lastAt) / 1000)) || this.rate;
      this.lastBytes = e.bytes;
      this.lastAt = now;
    }
    const t = ((now - this.startedAt) / 1000).toFixed(1);
    const bytes = e.bytes !== undefined ? ` ${fmtBytes(e.bytes)}${e.totalBytes ? `/${fmtBytes(e.totalBytes)}` : ''} ${fmtBytes(this.rate)}/s` : '';
    if (e.round) {
      // Each round gets its own line, kept above the status line.
      this.out.write(`\r\x1b[2K[${t}s] pre-copy ${roundText(e.round)}\n`);
      return;
    }
    this.out.write(`\r\x1b[2K[${t}s] ${e.phase} ${e.state}${bytes}${e.message ? ` — ${e.message.slice(0, 80)}` : ''}`);
  }

  end(): void {
    this.out.write('\r\x1b[2K');
  }
}

export function drainText(r: DrainReport): string {
  const lines = [`${r.dryRun ? 'drain plan' : 'drained'} ${r.host} (${r.reason}; ${r.remainingMs === null ? 'no deadline' : `${fmtMs(r.remainingMs)} left`})`];
  if (r.plan.length === 0) lines.push('  nothing opted in (label ferry.dev/migrate=true)');
  for (const m of r.plan) {
    const res = r.results.find((x) => x.container === m.container);
    const outcome = res ? ` → ${res.result}${res.downtimeMs !== null ? `, freeze ${fmtMs(res.downtimeMs)}` : ''}${res.error ? ` (${res.error})` : ''}` : '';
    lines.push(m.fits
      ? `  ${m.container} → ${res?.to ?? m.to}: ~${fmtMs(m.estimateMs)} from +${fmtMs(m.startsAtMs)}${outcome}`
      : `  ${m.container}: DOES NOT FIT: ${m.reason}${outcome}`);
  }
  if (!r.dryRun) lines.push(`  took ${fmtMs(r.totalMs)}`);
  return lines.join('\n');
}
