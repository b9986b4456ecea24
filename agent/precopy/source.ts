// The source side of pre-copy: track the container's writes, stream each round's dirty pages, and know at the
// final freeze which pages the destination already holds up to date.

import { CHUNK_HEADER_BYTES, FerryError } from '../../src/protocol/index.js';
import { MAX_RECORD_PAGES, MAX_RECORD_RANGES, PAGE_BYTES, recordHeaderBytes, writeRecordHeader, type PageRange } from '../../src/protocol/pages.js';
import type { PageStore } from './page-store.js';
import { PageSet } from '../../src/criu/page-set.js';
import type { Logger } from '../../src/log/logger.js';
import { containerProcs, nsPidOf } from '../runtime/cgroup.js';
import { DirtyTracker } from './tracker.js';

/** One read request to the tracker; small enough to overlap reading the next batch with sending this one. */
const READ_BATCH_BYTES = 8 * 1024 * 1024;

export interface RoundStats {
  round: number;
  /** Pages the scan reported written (round 0: every page holding data). */
  dirtyPages: number;
  /** Pages sent (dirty pages minus those unmapped before they could be read). */
  pages: number;
  bytes: number;
  records: number;
  scanMs: number;
  intervalMs: number;
  durationMs: number;
  processes: number;
}

/** Sends one record; `buf` has CHUNK_HEADER_BYTES of room in front for the chunk header. */
export type SendRecord = (buf: Buffer) => Promise<void>;
/** Pages read from the frozen task by the final scan: namespace pid → page address → its 4 KiB. */
export type FrozenPages = Map<number, Map<number, Buffer>>;

export class PrecopySource {
  /** Pages the destination holds, as of the last round, keyed by namespace pid. */
  private readonly sent = new PageSet();
  /** A local copy of every page sent, for a rollback after a lazy final dump (which writes no pages). */
  mirror: PageStore | null = null;
  private readonly nsPid = new Map<number, number>();
  private released = false;
  private lastScanAt = 0;

  private constructor(private readonly tracker: DirtyTracker, private readonly initPid: number, private readonly log: Logger) {}

  /** Attaches to every process of the container whose init has host pid `initPid`. */
  static async start(binary: string, initPid: number, log: Logger): Promise<PrecopySource> {
    const s = new PrecopySource(DirtyTracker.start(binary, log), initPid, log);
    try {
      await s.attachNew();
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  get trackerPid(): number | undefined { return this.tracker.pid; }
  get processes(): number { return this.nsPid.size; }

  /** Processes forked since the last round are attached now; their pages count as never sent. */
  private async attachNew(): Promise<void> {
    const pids = (await containerProcs(this.initPid)).filter((p) => !this.nsPid.has(p));
    if (!pids.length) return;
    const r = await this.tracker.attach(pids);
    for (const mm of r.mms) {
      if (this.nsPid.has(mm.pid)) continue;
      this.nsPid.set(mm.pid, await nsPidOf(mm.pid));
    }
  }

  /** A process whose dirty information was lost: nothing of it counts as held by the destination any more. */
  private forget(tgids: number[]): void {
    for (const t of tgids) {
      const ns = this.nsPid.get(t);
      if (ns !== undefined) this.sent.clearPid(ns);
      this.nsPid.delete(t);
    }
  }

  async round(round: number, send: SendRecord, signal: AbortSignal): Promise<RoundStats> {
    const t0 = performance.now();
    await this.attachNew();
    // Scan first, then read: a write that lands while a page is being read was armed by this scan and is
    // reported again next round.
    const scan = await this.tracker.scan(round === 0);
    const scannedAt = performance.now();
    const intervalMs = this.lastScanAt ? Math.round((scannedAt - this.lastScanAt) * 10) / 10 : 0;
    this.lastScanAt = scannedAt;
    this.forget([...scan.exited, ...scan.execed, ...scan.failed]);
    const stats: RoundStats = { round, dirtyPages: scan.pages, pages: 0, bytes: 0, records: 0, scanMs: scan.scanUs / 1000, intervalMs, durationMs: 0, processes: this.nsPid.size };
    for (const [tgid, ranges] of scan.ranges) {
      const ns = this.nsPid.get(tgid);
      if (ns === undefined) continue;
      // Reported dirty: the destination's copy is stale until this round's copy lands.
      for (const [s, e] of ranges) this.sent.remove(ns, s, e);
      for await (const { present, data } of this.readPresent(tgid, ranges, signal)) {
        let off = 0;
        for (const rec of records(present)) {
          const head = recordHeaderBytes(rec.ranges.length);
          const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + head + rec.pages * PAGE_BYTES);
          writeRecordHeader(buf.subarray(CHUNK_HEADER_BYTES), ns, rec.ranges);
          data.copy(buf, CHUNK_HEADER_BYTES + head, off, off + rec.pages * PAGE_BYTES);
          off += rec.pages * PAGE_BYTES;
          await send(buf);
          if (this.mirror) {
            let at = off - rec.pages * PAGE_BYTES;
            for (const [s, e] of rec.ranges) { await this.mirror.write(ns, s, data.subarray(at, at + (e - s))); at += e - s; }
          }
          for (const [s, e] of rec.ranges) this.sent.add(ns, s, e);
          stats.records++;
          stats.pages += rec.pages;
          stats.bytes += rec.pages * PAGE_BYTES;
        }
      }
    }
    stats.durationMs = Math.round((performance.now() - t0) * 10) / 10;
    return stats;
  }

  /**
   * Called with the container frozen: the last scan says what changed since the last round; then every
   * registration is released so that CRIU dumps untracked tasks. Returns the pages the destination holds
   * up to date, by namespace pid.
   */
  async finish(opts: { read?: boolean } = {}): Promise<{ clean: PageSet; finalDirtyPages: number; scanMs: number; read: FrozenPages }> {
    const scan = await this.tracker.scan(false);
    this.forget([...scan.exited, ...scan.execed, ...scan.failed]);
    const read: FrozenPages = new Map();
    for (const [tgid, ranges] of scan.ranges) {
      const ns = this.nsPid.get(tgid);
      if (ns === undefined) continue;
      for (const [s, e] of ranges) this.sent.remove(ns, s, e);
      // The task is frozen: what process_vm_readv returns now is what CRIU is about to dump, and reading it
      // here in 8 MiB requests is far quicker than one GET per scattered page from CRIU's page server.
      if (opts.read) read.set(ns, await this.readAll(tgid, ranges));
    }
    await this.release();
    return { clean: this.sent, finalDirtyPages: scan.pages, scanMs: scan.scanUs / 1000, read };
  }

  private async readAll(tgid: number, ranges: readonly PageRange[]): Promise<Map<number, Buffer>> {
    const pages = new Map<number, Buffer>();
    for await (const { present, data } of this.readPresent(tgid, ranges)) {
      let off = 0;
      for (const [s, e] of present) {
        for (let a = s; a < e; a += PAGE_BYTES, off += PAGE_BYTES) pages.set(a, data.subarray(off, off + PAGE_BYTES));
      }
    }
    return pages;
  }

  /**
   * The pages of `ranges` as the task holds them, in requests of at most READ_BATCH_BYTES with the next one
   * already in flight; `data` holds exactly the pages of `present` (what was unmapped since the scan is left out).
   */
  private async *readPresent(tgid: number, ranges: readonly PageRange[], signal?: AbortSignal): AsyncGenerator<{ present: PageRange[]; data: Buffer }> {
    const batches = batch(ranges, READ_BATCH_BYTES);
    let next = batches.length ? this.tracker.read(tgid, batches[0]!) : null;
    try {
      for (let i = 0; i < batches.length; i++) {
        signal?.throwIfAborted();
        const { data, missing } = await next!;
        next = i + 1 < batches.length ? this.tracker.read(tgid, batches[i + 1]!) : null;
        const present = subtract(batches[i]!, missing);
        const expected = present.reduce((n, [s, e]) => n + (e - s), 0);
        if (data.length !== expected) throw new FerryError('E_INTERNAL', `tracker read returned ${data.length} bytes, expected ${expected}`);
        yield { present, data };
      }
    } finally {
      // A consumer that stops early must not leave a read's rejection unhandled.
      await next?.catch(() => undefined);
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    await this.tracker.release();
    this.released = true;
  }

  /** Ends tracking on every path; a helper that will not quit is killed, which releases too (kernel). */
  async close(): Promise<void> {
    await this.tracker.close().catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'dirty tracker did not close cleanly'));
    this.released = true;
  }
}

/** Splits ranges into read requests of at most `max` bytes (and the tracker's 65536 ranges). */
export function batch(ranges: readonly PageRange[], max: number): PageRange[][] {
  const out: PageRange[][] = [];
  let cur: PageRange[] = [];
  let bytes = 0;
  for (let [s, e] of ranges) {
    while (s < e) {
      const take = Math.min(e - s, max - bytes);
      cur.push([s, s + take]);
      bytes += take;
      s += take;
      if (bytes >= max || cur.length >= 65_536) { out.push(cur); cur = []; bytes = 0; }
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

/** `ranges` minus `holes` (both sorted; holes lie within ranges), as the pages the tracker did return. */
export function subtract(ranges: readonly PageRange[], holes: readonly PageRange[]): PageRange[] {
  if (!holes.length) return ranges.slice();
  const out: PageRange[] = [];
  let h = 0;
  for (const [s0, e] of ranges) {
    let s = s0;
    while (h < holes.length && holes[h]![1] <= s) h++;
    while (h < holes.length && holes[h]![0] < e) {
      const [hs, he] = holes[h]!;
      if (hs > s) out.push([s, hs]);
      s = Math.max(s, he);
      if (he >= e) break;
      h++;
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}

/** Packs ranges into records that each fit one chunk. */
export function* records(ranges: readonly PageRange[]): Generator<{ ranges: PageRange[]; pages: number }> {
  let cur: PageRange[] = [];
  let pages = 0;
  for (let [s, e] of ranges) {
    while (s < e) {
      const take = Math.min((e - s) / PAGE_BYTES, MAX_RECORD_PAGES - pages);
      cur.push([s, s + take * PAGE_BYTES]);
      pages += take;
      s += take * PAGE_BYTES;
      if (pages >= MAX_RECORD_PAGES || cur.length >= MAX_RECORD_RANGES) { yield { ranges: cur, pages }; cur = []; pages = 0; }
    }
  }
  if (cur.length) yield { ranges: cur, pages };
}
