// What the destination's page server serves from: the final delta (pages that changed, or were never sent,
// as of the freeze) first, then the pre-copy page store. A store page the delta does not override is
// current by construction: the source ships every lazy page outside its `clean` set.

import { open, readFile, readdir } from 'node:fs/promises';
import { FerryError } from '../../src/protocol/index.js';
import { join } from 'node:path';
import { PAGE } from '../../src/criu/page-server-wire.js';
import { parseDelta } from '../precopy/delta.js';
import type { PageStore } from '../precopy/page-store.js';
import type { PageSource } from './page-server.js';

/** The final delta of a lazy final phase: lazy-<nsPid>.ldelta (not .delta: that suffix asks for a rebuild), runs as in precopy/delta.ts. */
export const LAZY_DELTA = /^lazy-(\d+)\.ldelta$/;
export const lazyDeltaName = (pid: number): string => `lazy-${pid}.ldelta`;

/** An image from a lazy final dump: its memory is in no pages file, only in a page store and the delta. */
export const hasLazyDelta = async (imagesDir: string): Promise<boolean> => (await readdir(imagesDir)).some((n) => LAZY_DELTA.test(n));

interface Run { vaddr: number; data: Buffer }

export class DeltaStoreSource implements PageSource {
  private constructor(private readonly delta: Map<number, Run[]>, private readonly store: PageStore | null) {}

  static async load(imagesDir: string, store: PageStore | null): Promise<DeltaStoreSource> {
    const delta = new Map<number, Run[]>();
    for (const name of await readdir(imagesDir)) {
      const m = LAZY_DELTA.exec(name);
      if (m) delta.set(Number(m[1]), parseDelta(await readFile(join(imagesDir, name))));
    }
    return new DeltaStoreSource(delta, store);
  }

  get deltaPages(): number {
    let n = 0;
    for (const runs of this.delta.values()) for (const r of runs) n += r.data.length / PAGE;
    return n;
  }

  /**
   * As many of the nr pages from vaddr on as are held, in one answer. Under a random writer the delta is
   * single pages scattered through the store, and a request that straddles them used to get only its
   * first piece: the lazy-pages daemon then asked again from the next page, each time behind the background
   * requests in flight, and a fault near the end of its window took a dozen round trips (414 short answers
   * in one 1 GiB fill, the restored task stalling 0.3–0.9 s at a time).
   */
  async read(pid: number, vaddr: number, nr: number): Promise<Buffer | null> {
    const parts: Buffer[] = [];
    const end = vaddr + nr * PAGE;
    for (let at = vaddr; at < end;) {
      const piece = await this.piece(pid, at, (end - at) / PAGE);
      if (!piece?.length) break;
      parts.push(piece);
      at += piece.length;
    }
    if (!parts.length) return null;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The longest run from vaddr that one source holds: the delta's run there, or the store's up to the next delta run. */
  private async piece(pid: number, vaddr: number, nr: number): Promise<Buffer | null> {
    const runs = this.delta.get(pid) ?? [];
    // The run holding vaddr, or the first one after it (which bounds what the store may answer).
    let lo = 0;
    let hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid]!.vaddr + runs[mid]!.data.length <= vaddr) lo = mid + 1;
      else hi = mid;
    }
    const r = runs[lo];
    let end = vaddr + nr * PAGE;
    if (r && r.vaddr <= vaddr) {
      const from = vaddr - r.vaddr;
      return r.data.subarray(from, Math.min(r.data.length, from + nr * PAGE));
    }
    if (r) end = Math.min(end, r.vaddr);
    if (!this.store) return null;
    const first = this.store.held.runs(pid, vaddr, end).next();
    if (first.done || !first.value.held) return null;
    const buf = Buffer.allocUnsafe(first.value.end - vaddr);
    await this.store.readInto(pid, vaddr, buf);
    return buf;
  }
}

/** Delta runs (sorted, disjoint) in the file layout parseDelta reads. */
export function encodeDelta(runs: readonly Run[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of runs) {
    const h = Buffer.alloc(16);
    h.writeBigUInt64LE(BigInt(r.vaddr), 0);
    h.writeUInt32LE(r.data.length / PAGE, 8);
    parts.push(h, r.data);
  }
  return Buffer.concat(parts);
}

/**
 * Delta runs written straight from their page buffers (writev), without concatenating them first: inside
 * the freeze, every copy of a 300 MB delta is fresh memory, which costs ~0.9 s here (docs/postcopy.md).
 */
export async function writeDelta(path: string, runs: readonly { vaddr: number; pages: readonly Buffer[] }[]): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try {
    let batch: Buffer[] = [];
    const flush = async (): Promise<void> => {
      let { bytesWritten } = await fh.writev(batch);
      // A short write: the rest goes one buffer at a time.
      for (const b of batch) {
        if (bytesWritten >= b.length) { bytesWritten -= b.length; continue; }
        await fh.write(b.subarray(bytesWritten));
        bytesWritten = 0;
      }
      if (bytesWritten !== 0) throw new FerryError('E_INTERNAL', `writev wrote more than asked to ${path}`);
      batch = [];
    };
    for (const r of runs) {
      const h = Buffer.alloc(16);
      h.writeBigUInt64LE(BigInt(r.vaddr), 0);
      h.writeUInt32LE(r.pages.reduce((n, p) => n + p.length, 0) / PAGE, 8);
      batch.push(h, ...r.pages);
      // IOV_MAX is 1024 on Linux.
      if (batch.length >= 1000) await flush();
    }
    if (batch.length) await flush();
  } finally {
    await fh.close();
  }
}

/** [start, end) cut into runs that the final scan read (with their page buffers, uncopied) and runs it did not. */
export function splitByRead(start: number, end: number, read: Map<number, Buffer> | undefined): { start: number; end: number; pages?: Buffer[] }[] {
  if (!read?.size) return [{ start, end }];
  const out: { start: number; end: number; pages?: Buffer[] }[] = [];
  let a = start;
  while (a < end) {
    const s = a;
    if (read.has(a)) {
      const pages: Buffer[] = [];
      for (let p = read.get(a); a < end && p; p = read.get(a)) { pages.push(p); a += PAGE; }
      out.push({ start: s, end: a, pages });
    } else {
      while (a < end && !read.has(a)) a += PAGE;
      out.push({ start: s, end: a });
    }
  }
  return out;
}
