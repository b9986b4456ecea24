// Pre-copy page records: the data of one chunk frame of a pre-copy round. Declared once, here, for both agents.
//
// A record is one chunk's payload and never spans chunks, so the receiver can write it into its page store as
// soon as the chunk's checksum has been verified:
//
//   u32 LE nsPid        the process's pid inside the container's pid namespace (the N of CRIU's pagemap-N.img)
//   u32 LE nRanges      1..MAX_RECORD_RANGES
//   nRanges × { u64 LE start, u64 LE end }   page-aligned, start < end, ascending, not overlapping
//   the pages of every range, in order      exactly Σ(end - start) bytes

import { CHUNK_BYTES } from './version.js';
import { FerryError } from './errors.js';

export const PAGE_BYTES = 4096;
const HEADER_BYTES = 8;
const RANGE_BYTES = 16;
/** Chosen so that a record of this many single-page ranges still fits one chunk with its header. */
export const MAX_RECORD_PAGES = Math.floor((CHUNK_BYTES - HEADER_BYTES) / (PAGE_BYTES + RANGE_BYTES));
export const MAX_RECORD_RANGES = MAX_RECORD_PAGES;
/** x86-64 user space ends below 2^47: an address past it is a corrupt or hostile record. */
const MAX_ADDRESS = 2 ** 47;

export type PageRange = readonly [start: number, end: number];

export interface PageRecord {
  nsPid: number;
  ranges: PageRange[];
  /** The pages of `ranges`, concatenated. */
  data: Buffer;
}

export const recordHeaderBytes = (nRanges: number): number => HEADER_BYTES + nRanges * RANGE_BYTES;

/** Writes a record's header into `out` at 0 and returns its length; the caller puts the pages right after it. */
export function writeRecordHeader(out: Buffer, nsPid: number, ranges: readonly PageRange[]): number {
  out.writeUInt32LE(nsPid, 0);
  out.writeUInt32LE(ranges.length, 4);
  let o = HEADER_BYTES;
  for (const [s, e] of ranges) {
    out.writeBigUInt64LE(BigInt(s), o);
    out.writeBigUInt64LE(BigInt(e), o + 8);
    o += RANGE_BYTES;
  }
  return o;
}

/** Parses and validates a record; the data is a view into `buf`. */
export function decodePageRecord(buf: Buffer): PageRecord {
  const bad = (why: string): never => { throw new FerryError('E_PROTOCOL', `bad page record: ${why}`); };
  if (buf.length < HEADER_BYTES) bad('short header');
  const nsPid = buf.readUInt32LE(0);
  const n = buf.readUInt32LE(4);
  if (nsPid === 0) bad('pid 0');
  if (n === 0 || n > MAX_RECORD_RANGES) bad(`${n} ranges`);
  const head = recordHeaderBytes(n);
  if (buf.length < head) bad('truncated ranges');
  const ranges: PageRange[] = [];
  let bytes = 0;
  let prevEnd = 0;
  for (let i = 0, o = HEADER_BYTES; i < n; i++, o += RANGE_BYTES) {
    const s = Number(buf.readBigUInt64LE(o));
    const e = Number(buf.readBigUInt64LE(o + 8));
    if (s % PAGE_BYTES || e % PAGE_BYTES || s >= e || e > MAX_ADDRESS || s < prevEnd) bad(`range ${s.toString(16)}-${e.toString(16)}`);
    prevEnd = e;
    bytes += e - s;
    ranges.push([s, e]);
  }
  if (buf.length !== head + bytes) bad(`${buf.length - head} data bytes for ${bytes} bytes of pages`);
  return { nsPid, ranges, data: buf.subarray(head) };
}
