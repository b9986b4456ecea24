// The destination's page source for a lazy final phase: delta first, store second, never a page it lacks.

import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PageStore } from '../../../agent/precopy/page-store.js';
import { DeltaStoreSource, encodeDelta, lazyDeltaName, splitByRead, writeDelta } from '../../../agent/lazy/sources.js';
import fc from 'fast-check';
import { parseDelta } from '../../../agent/precopy/delta.js';

const P = 4096;
const page = (tag: number, n = 1): Buffer => { const b = Buffer.alloc(n * P); for (let i = 0; i < n; i++) b.writeUInt32LE(tag + i, i * P); return b; };
const tags = (b: Buffer): number[] => Array.from({ length: b.length / P }, (_, i) => b.readUInt32LE(i * P));

describe('DeltaStoreSource', () => {
  let dir = '';
  afterEach(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  async function setup(): Promise<DeltaStoreSource> {
    dir = mkdtempSync(join(tmpdir(), 'ferry-lazy-'));
    const store = await PageStore.open(join(dir, 'store'));
    // Pre-copy held pages 0x10000..0x18000 (tags 100..107), pid 1.
    await store.write(1, 0x10000, page(100, 8));
    // The final delta replaced pages 0x12000..0x14000 (tags 900..901) and brought one never sent (0x30000).
    await writeFile(join(dir, lazyDeltaName(1)), encodeDelta([{ vaddr: 0x12000, data: page(900, 2) }, { vaddr: 0x30000, data: page(950) }]));
    return DeltaStoreSource.load(dir, store);
  }

  it('serves a stale store page never: the delta overrides the store, and one answer spans both', async () => {
    const s = await setup();
    // Store, delta, store again: one answer, so the lazy-pages daemon never has to ask for the rest.
    expect(tags((await s.read(1, 0x10000, 8))!)).toEqual([100, 101, 900, 901, 104, 105, 106, 107]);
    expect(tags((await s.read(1, 0x10000, 3))!)).toEqual([100, 101, 900]);
    // It stops where nothing is held (0x18000): short, never padded.
    expect(tags((await s.read(1, 0x12000, 8))!)).toEqual([900, 901, 104, 105, 106, 107]);
    expect(tags((await s.read(1, 0x13000, 1))!)).toEqual([901]);
    expect(tags((await s.read(1, 0x14000, 8))!)).toEqual([104, 105, 106, 107]);
    expect(tags((await s.read(1, 0x30000, 4))!)).toEqual([950]);
    expect(s.deltaPages).toBe(3);
  });

  it('answers null, not zeros, for a page it does not hold', async () => {
    const s = await setup();
    expect(await s.read(1, 0x18000, 1)).toBeNull();
    expect(await s.read(2, 0x10000, 1)).toBeNull();
  });

  it('encodes deltas that parseDelta reads back', () => {
    const runs = [{ vaddr: 0x1000, data: page(1, 2) }, { vaddr: 0x9000, data: page(7) }];
    expect(parseDelta(encodeDelta(runs)).map((r) => [r.vaddr, tags(r.data)])).toEqual([[0x1000, [1, 2]], [0x9000, [7]]]);
  });
});

describe('splitByRead: what the final scan read from the frozen task, and what still comes from CRIU', () => {
  it('cuts a range at every boundary between read and unread pages, with the read bytes in order', () => {
    const read = new Map([[1 * P, page(1)], [2 * P, page(2)], [5 * P, page(5)]]);
    const parts = splitByRead(0, 7 * P, read);
    expect(parts.map((x) => [x.start / P, x.end / P, x.pages ? tags(Buffer.concat(x.pages)) : null])).toEqual([
      [0, 1, null], [1, 3, [1, 2]], [3, 5, null], [5, 6, [5]], [6, 7, null],
    ]);
    expect(splitByRead(0, 2 * P, undefined)).toEqual([{ start: 0, end: 2 * P }]);
  });

  it('covers the range exactly once, whatever was read', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.integer({ min: 0, max: 80 })), (n, readPages) => {
      const read = new Map(readPages.map((i) => [i * P, page(i)] as const));
      const parts = splitByRead(0, n * P, read);
      let at = 0;
      for (const x of parts) {
        expect(x.start).toBe(at);
        expect(x.end).toBeGreaterThan(x.start);
        for (let a = x.start; a < x.end; a += P) expect(read.has(a)).toBe(!!x.pages);
        if (x.pages) expect(tags(Buffer.concat(x.pages))).toEqual(Array.from({ length: (x.end - x.start) / P }, (_, i) => x.start / P + i));
        at = x.end;
      }
      expect(at).toBe(n * P);
    }));
  });
});

describe('writeDelta: the delta file written from page buffers, uncopied', () => {
  it('is byte for byte what encodeDelta makes, across writev batches', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-wd-'));
    try {
      // 700 runs of 1-3 pages: more than one 1000-buffer writev batch.
      const runs = Array.from({ length: 700 }, (_, i) => ({ vaddr: (i * 8 + 1) * P, pages: Array.from({ length: 1 + (i % 3) }, (_, k) => page(i * 3 + k)) }));
      await writeDelta(join(dir, 'd'), runs);
      const want = encodeDelta(runs.map((r) => ({ vaddr: r.vaddr, data: Buffer.concat(r.pages) })));
      expect((await readFile(join(dir, 'd'))).equals(want)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
