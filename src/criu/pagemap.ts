// CRIU's pagemap-N.img, parsed without a protobuf library (../shared/platform/criu.md §6.5):
//
//   u32 LE IMG_COMMON_MAGIC, u32 LE PAGEMAP_MAGIC, then repeated { u32 LE length ; protobuf message }
//   first message PagemapHead { 1: pages_id }            -> the data is in pages-<pages_id>.img
//   then          PagemapEntry { 1: vaddr, 2: compat_nr_pages (4.1), 4: flags, 5: nr_pages (4.2+) }
//
// pages-<id>.img is raw: the data of every PE_PRESENT entry, concatenated in pagemap order.

import { FerryError } from '../protocol/errors.js';

export const IMG_COMMON_MAGIC = 0x54564319;
export const PAGEMAP_MAGIC = 0x56084025;
export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;

export interface PagemapEntry { vaddr: number; nrPages: number; flags: number }
export interface Pagemap { pagesId: number; entries: PagemapEntry[] }

const bad = (why: string): never => { throw new FerryError('E_INTEGRITY', `bad pagemap image: ${why}`); };

/** Reads a varint at `o`; returns [value, next offset]. Values stay below 2^53 (addresses < 2^47). */
function varint(b: Buffer, o: number, end: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (o >= end) bad('truncated varint');
    const byte = b[o++]!;
    v += (byte & 0x7f) * mul;
    if (!(byte & 0x80)) return [v, o];
    mul *= 128;
  }
  return bad('varint too long');
}

/** The fields of one protobuf message that are varints; anything else is skipped. */
function fields(b: Buffer, start: number, end: number): Map<number, number> {
  const out = new Map<number, number>();
  let o = start;
  while (o < end) {
    let key;
    [key, o] = varint(b, o, end);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) { let v; [v, o] = varint(b, o, end); out.set(field, v); }
    else if (wire === 1) o += 8;
    else if (wire === 5) o += 4;
    else if (wire === 2) { let len; [len, o] = varint(b, o, end); o += len; }
    else bad(`wire type ${wire}`);
  }
  if (o !== end) bad('message overruns its length');
  return out;
}

export function parsePagemap(b: Buffer): Pagemap {
  if (b.length < 8 || b.readUInt32LE(0) !== IMG_COMMON_MAGIC || b.readUInt32LE(4) !== PAGEMAP_MAGIC) bad('magic');
  let o = 8;
  const messages: Map<number, number>[] = [];
  while (o < b.length) {
    if (o + 4 > b.length) bad('truncated length');
    const len = b.readUInt32LE(o);
    o += 4;
    if (o + len > b.length) bad('truncated message');
    messages.push(fields(b, o, o + len));
    o += len;
  }
  const head = messages.shift() ?? bad('no head');
  const pagesId = head.get(1) ?? bad('no pages_id');
  const entries = messages.map((m) => ({
    vaddr: m.get(1) ?? bad('entry without vaddr'),
    nrPages: m.get(5) ?? m.get(2) ?? bad('entry without nr_pages'),
    flags: m.get(4) ?? 0,
  }));
  for (const e of entries) if (e.vaddr % 4096) bad(`unaligned vaddr ${e.vaddr.toString(16)}`);
  return { pagesId, entries };
}

/** Bytes of pages-<id>.img the pagemap implies. */
export const presentBytes = (pm: Pagemap): number =>
  pm.entries.reduce((n, e) => n + (e.flags & PE_PRESENT ? e.nrPages * 4096 : 0), 0);

/** `pagemap-12.img` → 12. */
export function pagemapPid(name: string): number | null {
  const m = /^pagemap-(\d+)\.img$/.exec(name);
  return m ? Number(m[1]) : null;
}
