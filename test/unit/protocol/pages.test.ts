import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CHUNK_BYTES } from '../../../src/protocol/index.js';
import { MAX_RECORD_PAGES, PAGE_BYTES, decodePageRecord, recordHeaderBytes, writeRecordHeader, type PageRange } from '../../../src/protocol/pages.js';

function encode(nsPid: number, ranges: PageRange[], fill = (i: number) => i & 0xff): Buffer {
  const pages = ranges.reduce((n, [s, e]) => n + (e - s), 0);
  const buf = Buffer.alloc(recordHeaderBytes(ranges.length) + pages);
  const head = writeRecordHeader(buf, nsPid, ranges);
  for (let i = head; i < buf.length; i++) buf[i] = fill(i);
  return buf;
}

describe('page records', () => {
  it('round-trip: pid, ranges and the data view', () => {
    const ranges: PageRange[] = [[0x7f00_0000_0000, 0x7f00_0000_2000], [0x7f00_0000_5000, 0x7f00_0000_6000]];
    const r = decodePageRecord(encode(7, ranges));
    expect(r.nsPid).toBe(7);
    expect(r.ranges).toEqual(ranges);
    expect(r.data.length).toBe(3 * PAGE_BYTES);
  });

  it('a record of the most single-page ranges still fits one chunk', () => {
    const ranges: PageRange[] = Array.from({ length: MAX_RECORD_PAGES }, (_, i) => [i * 2 * PAGE_BYTES, (i * 2 + 1) * PAGE_BYTES]);
    expect(encode(1, ranges).length).toBeLessThanOrEqual(CHUNK_BYTES);
  });

  it.each([
    ['pid 0', (b: Buffer) => b.writeUInt32LE(0, 0)],
    ['no ranges', (b: Buffer) => b.writeUInt32LE(0, 4)],
    ['too many ranges', (b: Buffer) => b.writeUInt32LE(MAX_RECORD_PAGES + 1, 4)],
    ['unaligned start', (b: Buffer) => b.writeBigUInt64LE(0x1001n, 8)],
    ['empty range', (b: Buffer) => b.writeBigUInt64LE(0x2000n, 8)],
    ['kernel address', (b: Buffer) => { b.writeBigUInt64LE(0xffff_8000_0000_0000n, 8); b.writeBigUInt64LE(0xffff_8000_0000_1000n, 16); }],
  ])('refuses %s', (_, corrupt) => {
    const b = encode(3, [[0x1000, 0x2000]]);
    corrupt(b);
    expect(() => decodePageRecord(b)).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });

  it('refuses overlapping or unsorted ranges and a data length that does not match', () => {
    expect(() => decodePageRecord(encode(3, [[0x3000, 0x4000], [0x1000, 0x2000]]))).toThrow(/bad page record/);
    expect(() => decodePageRecord(encode(3, [[0x1000, 0x3000], [0x2000, 0x4000]]))).toThrow(/bad page record/);
    const b = encode(3, [[0x1000, 0x2000]]);
    expect(() => decodePageRecord(b.subarray(0, b.length - 1))).toThrow(/data bytes/);
    expect(() => decodePageRecord(Buffer.concat([b, Buffer.alloc(1)]))).toThrow(/data bytes/);
    expect(() => decodePageRecord(b.subarray(0, 12))).toThrow(/truncated/);
  });

  it('never throws anything but a FerryError on random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      try {
        decodePageRecord(Buffer.from(bytes));
      } catch (e) {
        expect((e as { code?: string }).code).toBe('E_PROTOCOL');
      }
    }));
  });
});
