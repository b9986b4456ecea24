// A set of 4 KiB pages per process (keyed by namespace pid), as a sparse two-level bitmap.
//
// Pre-copy marks and clears pages in the tens of thousands per round at scattered addresses; sorted range
// lists degrade to O(n) splices there, a bitmap does not. One leaf covers 128 MiB of address space.

const LEAF_PAGES_SHIFT = 15;
const LEAF_PAGES = 1 << LEAF_PAGES_SHIFT;
const LEAF_WORDS = LEAF_PAGES / 32;

type Leaves = Map<number, Uint32Array>;

export class PageSet {
  private readonly pids = new Map<number, Leaves>();

  /** Adds the pages of [start, end) (page-aligned byte addresses). */
  add(pid: number, start: number, end: number): void {
    let leaves = this.pids.get(pid);
    if (!leaves) { leaves = new Map(); this.pids.set(pid, leaves); }
    this.apply(leaves, start, end, true);
  }

  remove(pid: number, start: number, end: number): void {
    const leaves = this.pids.get(pid);
    if (leaves) this.apply(leaves, start, end, false);
  }

  clearPid(pid: number): void { this.pids.delete(pid); }

  has(pid: number, addr: number): boolean {
    const page = Math.floor(addr / 4096);
    const leaf = this.pids.get(pid)?.get(Math.floor(page / LEAF_PAGES));
    if (!leaf) return false;
    const i = page % LEAF_PAGES;
    return (leaf[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  /** Pages held for `pid`. */
  count(pid: number): number {
    let n = 0;
    for (const leaf of this.pids.get(pid)?.values() ?? []) for (const w of leaf) n += popcount(w);
    return n;
  }

  /**
   * Splits [start, end) into maximal runs of pages that are all in the set or all outside it, in address
   * order: what a rebuild or a delta walks, one run at a time instead of one page at a time.
   */
  *runs(pid: number, start: number, end: number): Generator<{ start: number; end: number; held: boolean }> {
    let s = start;
    let held = this.has(pid, s);
    for (let a = start + 4096; a < end; a += 4096) {
      const h = this.has(pid, a);
      if (h !== held) { yield { start: s, end: a, held }; s = a; held = h; }
    }
    if (s < end) yield { start: s, end, held };
  }

  private apply(leaves: Leaves, start: number, end: number, set: boolean): void {
    let page = Math.floor(start / 4096);
    const last = Math.floor(end / 4096);
    while (page < last) {
      const key = Math.floor(page / LEAF_PAGES);
      const from = page % LEAF_PAGES;
      const to = Math.min(LEAF_PAGES, from + (last - page));
      let leaf = leaves.get(key);
      if (!leaf) {
        if (!set) { page += to - from; continue; }
        leaf = new Uint32Array(LEAF_WORDS);
        leaves.set(key, leaf);
      }
      for (let i = from; i < to; i++) {
        if ((i & 31) === 0 && i + 32 <= to) { leaf[i >>> 5] = set ? 0xffffffff : 0; i += 31; continue; }
        const w = i >>> 5;
        leaf[w] = set ? leaf[w]! | (1 << (i & 31)) : leaf[w]! & ~(1 << (i & 31));
      }
      page += to - from;
    }
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
