// CRIU 4.2's page-server header, against the bytes captured on the wire (../shared/platform/pageserver.md §1.3).

import { describe, expect, it } from 'vitest';
import { checkGet, closeRequest, decodeHeader, getRequest, pagesReply, PS_IOV_GET } from '../../../src/criu/page-server-wire.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('page-server wire', () => {
  it('decodes the lazy-pages daemon GET captured on the wire, ignoring its garbage padding', () => {
    const h = decodeHeader(hex('07000000 55550000 0100000000000000 0090fa06887f0000 0100000000000000'));
    expect(h).toEqual({ cmd: PS_IOV_GET, flags: 0, nrPages: 1, vaddr: 0x7f8806fa9000, dstId: 1 });
    expect(() => checkGet(h)).not.toThrow();
  });

  it('answers the way CRIU does (ADD_F | PE_PRESENT << 16, vaddr and pid echoed) and closes with an all-zero header', () => {
    expect(pagesReply(1, 0x7f8806fa9000, 1).toString('hex')).toBe('06000400000000000100000000000000' + '0090fa06887f00000100000000000000');
    expect(closeRequest().toString('hex')).toBe('23100000' + '0'.repeat(56));
    expect(decodeHeader(getRequest(7, 0x1000, 16))).toEqual({ cmd: PS_IOV_GET, flags: 0, nrPages: 16, vaddr: 0x1000, dstId: 7 });
  });

  it('refuses what CRIU never sends: zero or huge page counts, unaligned addresses, absurd fields', () => {
    expect(() => checkGet({ cmd: PS_IOV_GET, flags: 0, nrPages: 0, vaddr: 0x1000, dstId: 1 })).toThrow(/GET of 0/);
    expect(() => checkGet({ cmd: PS_IOV_GET, flags: 0, nrPages: 5000, vaddr: 0x1000, dstId: 1 })).toThrow(/GET of 5000/);
    expect(() => checkGet({ cmd: PS_IOV_GET, flags: 0, nrPages: 1, vaddr: 0x1001, dstId: 1 })).toThrow(/unaligned/);
    expect(() => decodeHeader(hex('07000000 00000000 ffffffffffffffff 0000000000000000 0100000000000000'))).toThrow(/out of range/);
    expect(() => decodeHeader(Buffer.alloc(24))).toThrow(/short/);
  });

});
