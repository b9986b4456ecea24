// The final delta of a pre-copy, and the rebuild of CRIU's pages files from it on the destination.
//
// The source's final dump writes every page (CRIU has no way to leave out pages it cannot know were sent).
// Only the pages the destination does not hold up to date travel: for pages-<id>.img, a pages-<id>.delta of
// runs { u64 LE vaddr, u32 LE nPages, u32 0, nPages × 4096 bytes } in pagemap order. The destination lays
// pages-<id>.img out again from its page store plus the delta (criu.md §6.5 proved the result byte-identical).

import { open, readFile, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PageSet } from '../../src/criu/page-set.js';
import { PE_PRESENT, pagemapPid, parsePagemap, type Pagemap } from '../../src/criu/pagemap.js';
import { FerryError } from '../../src/protocol/index.js';
import type { PageStore } from './page-store.js';

export const DELTA_SUFFIX = '.delta';
const RUN_HEADER = 16;
/** Reads and writes in slices of this size, so memory stays bounded whatever an entry's size. */
const SLICE_BYTES = 8 * 1024 * 1024;

interface Pages { pid: number; pm: Pagemap; pagesFile: string; deltaFile: string }

async function pagemaps(imagesDir: string): Promise<Pages[]> {
  const out: Pages[] = [];
  for (const name of (await readdir(imagesDir)).sort()) {
    const pid = pagemapPid(name);
    if (pid === null) continue;
    const pm = parsePagemap(await readFile(join(imagesDir, name)));
    out.push({ pid, pm, pagesFile: join(imagesDir, `pages-${pm.pagesId}.img`), deltaFile: join(imagesDir, `pages-${pm.pagesId}${DELTA_SUFFIX}`) });
  }
  return out;
}

/** Present entries as slices with their offset in the pages file. */
function* slices(pm: Pagemap): Generator<{ vaddr: number; bytes: number; fileOffset: number }> {
  let fileOffset = 0;
  for (const e of pm.entries) {
    if (!(e.flags & PE_PRESENT)) continue;
    const total = e.nrPages * 4096;
    for (let o = 0; o < total; o += SLICE_BYTES) {
      const bytes = Math.min(SLICE_BYTES, total - o);
      yield { vaddr: e.vaddr + o, bytes, fileOffset };
      fileOffset += bytes;
    }
  }
}

async function readFully(f: FileHandle, buf: Buffer, at: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await f.read(buf, off, buf.length - off, at + off);
    if (bytesRead === 0) throw new FerryError('E_INTEGRITY', `pages image shorter than its pagemap (at ${at + off})`);
    off += bytesRead;
  }
}

async function writeFully(f: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) off += (await f.write(buf, off, buf.length - off)).bytesWritten;
}

/**
 * Source, after the final dump: writes a delta next to every process's pages file with the pages that are not
 * in `clean` (held by the destination as of the final freeze). Pages files stay: a rollback restores from them.
 */
export async function writeDeltas(imagesDir: string, clean: PageSet, signal: AbortSignal): Promise<{ shippedPages: number; totalPages: number }> {
  let shippedPages = 0;
  let totalPages = 0;
  for (const p of await pagemaps(imagesDir)) {
    const src = await open(p.pagesFile, 'r');
    const out = await open(p.deltaFile, 'wx', 0o600);
    try {
      for (const s of slices(p.pm)) {
        signal.throwIfAborted();
        totalPages += s.bytes / 4096;
        for (const r of clean.runs(p.pid, s.vaddr, s.vaddr + s.bytes)) {
          if (r.held) continue;
          const n = (r.end - r.start) / 4096;
          const buf = Buffer.allocUnsafe(RUN_HEADER + n * 4096);
          buf.writeBigUInt64LE(BigInt(r.start), 0);
          buf.writeUInt32LE(n, 8);
          buf.writeUInt32LE(0, 12);
          await readFully(src, buf.subarray(RUN_HEADER), s.fileOffset + (r.start - s.vaddr));
          await writeFully(out, buf);
          shippedPages += n;
        }
      }
    } finally {
      await src.close();
      await out.close();
    }
  }
  return { shippedPages, totalPages };
}

/** Parses a delta file into its runs; data are views into `b`. */
export function parseDelta(b: Buffer): { vaddr: number; data: Buffer }[] {
  const runs: { vaddr: number; data: Buffer }[] = [];
  let o = 0;
  let prev = -1;
  while (o < b.length) {
    if (o + RUN_HEADER > b.length) throw new FerryError('E_INTEGRITY', 'truncated delta run header');
    const vaddr = Number(b.readBigUInt64LE(o));
    const n = b.readUInt32LE(o + 8);
    const len = n * 4096;
    if (n === 0 || vaddr % 4096 || vaddr <= prev || o + RUN_HEADER + len > b.length) throw new FerryError('E_INTEGRITY', `bad delta run at ${o}`);
    runs.push({ vaddr, data: b.subarray(o + RUN_HEADER, o + RUN_HEADER + len) });
    prev = vaddr;
    o += RUN_HEADER + len;
  }
  return runs;
}

/**
 * Destination: writes pages-<id>.img for every process from the store and the delta. A page that is in
 * neither was promised by the source and never arrived: that is an integrity error, never a zero page.
 */
export async function rebuildPages(imagesDir: string, store: PageStore, signal: AbortSignal): Promise<{ pages: number; fromDelta: number }> {
  let pages = 0;
  let fromDelta = 0;
  for (const p of await pagemaps(imagesDir)) {
    const runs = parseDelta(await readFile(p.deltaFile).catch(() => { throw new FerryError('E_INTEGRITY', `missing ${p.deltaFile}`); }));
    const inDelta = new PageSet();
    for (const r of runs) inDelta.add(p.pid, r.vaddr, r.vaddr + r.data.length);
    const out = await open(p.pagesFile, 'wx', 0o600);
    let ri = 0;
    try {
      for (const s of slices(p.pm)) {
        signal.throwIfAborted();
        const end = s.vaddr + s.bytes;
        const buf = Buffer.allocUnsafe(s.bytes);
        await store.readInto(p.pid, s.vaddr, buf);
        for (const r of store.held.runs(p.pid, s.vaddr, end)) {
          if (r.held) continue;
          for (const d of inDelta.runs(p.pid, r.start, r.end)) {
            if (!d.held) throw new FerryError('E_INTEGRITY', `page ${d.start.toString(16)} of process ${p.pid} is neither pre-copied nor in the delta`);
          }
        }
        // Delta runs are in address order, like the slices: overlay those that intersect this slice.
        while (ri < runs.length && runs[ri]!.vaddr + runs[ri]!.data.length <= s.vaddr) ri++;
        for (let j = ri; j < runs.length && runs[j]!.vaddr < end; j++) {
          const r = runs[j]!;
          const from = Math.max(r.vaddr, s.vaddr);
          const to = Math.min(r.vaddr + r.data.length, end);
          r.data.copy(buf, from - s.vaddr, from - r.vaddr, to - r.vaddr);
          fromDelta += (to - from) / 4096;
        }
        await writeFully(out, buf);
        pages += s.bytes / 4096;
      }
    } finally {
      await out.close();
    }
    await rm(p.deltaFile, { force: true });
  }
  return { pages, fromDelta };
}
