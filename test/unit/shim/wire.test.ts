import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ProtoReader, ProtoWriter, WireType, MAX_FIELD_NUMBER } from '../../../shim/proto/wire.js';
import { hex, unhex } from './helpers.js';

// Reference varint encoder, written independently from the one under test.
function refVarint(v: bigint): Uint8Array {
  const out: number[] = [];
  do {
    let b = Number(v % 128n);
    v /= 128n;
    if (v > 0n) b += 128;
    out.push(b);
  } while (v > 0n);
  return new Uint8Array(out);
}

const code = (c: string) => expect.objectContaining({ code: c });

describe('varint', () => {
  // Vectors from the protobuf encoding guide (1 -> 01, 150 -> 9601, 300 -> ac02) and boundaries.
  it.each([
    [0n, '00'],
    [1n, '01'],
    [127n, '7f'],
    [128n, '8001'],
    [150n, '9601'],
    [300n, 'ac02'],
    [16383n, 'ff7f'],
    [16384n, '808001'],
    [0xffff_ffffn, 'ffffffff0f'],
    [0x1_0000_0000n, '8080808010'],
    [(1n << 63n) - 1n, 'ffffffffffffffff7f'],
    [(1n << 64n) - 1n, 'ffffffffffffffffff01'],
  ])('%s <-> %s', (v, h) => {
    expect(hex(new ProtoWriter().varint64(v).finish())).toBe(h);
    expect(new ProtoReader(unhex(h)).uint64()).toBe(v);
    if (v <= BigInt(Number.MAX_SAFE_INTEGER)) expect(hex(new ProtoWriter().varint(Number(v)).finish())).toBe(h);
  });

  it('round-trips any uint64 and agrees with the reference encoder', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => {
        const enc = new ProtoWriter().varint64(v).finish();
        expect(hex(enc)).toBe(hex(refVarint(v)));
        const r = new ProtoReader(enc);
        expect(r.uint64()).toBe(v);
        expect(r.done).toBe(true);
      }),
    );
  });

  it('uint32/int32/bool views of a varint follow Go (low 32 bits, sign, non-zero)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => {
        const enc = refVarint(v);
        expect(new ProtoReader(enc).uint32()).toBe(Number(BigInt.asUintN(32, v)));
        expect(new ProtoReader(enc).int32()).toBe(Number(BigInt.asIntN(32, v)));
        expect(new ProtoReader(enc).int64()).toBe(BigInt.asIntN(64, v));
        expect(new ProtoReader(enc).bool()).toBe(v !== 0n);
      }),
    );
  });

  it('encodes negative int32 as a 10-byte sign-extended varint', () => {
    expect(hex(new ProtoWriter().int32Field(1, -1).finish())).toBe('08ffffffffffffffffff01');
    expect(new ProtoReader(unhex('ffffffffffffffffff01')).int32()).toBe(-1);
    fc.assert(
      fc.property(fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }), (v) => {
        const r = new ProtoReader(new ProtoWriter().int32Field(1, v).finish());
        r.tag();
        expect(r.int32()).toBe(v);
      }),
    );
  });

  it('round-trips int64 through two’s complement', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), (v) => {
        const r = new ProtoReader(new ProtoWriter().int64Field(4, v).finish());
        expect(r.tag()).toEqual({ fieldNumber: 4, wireType: WireType.VARINT });
        expect(r.int64()).toBe(v);
      }),
    );
  });

  it('throws E_PROTO_TRUNCATED at every cut of a multi-byte varint', () => {
    const enc = unhex('ffffffffffffffffff01');
    for (let cut = 0; cut < enc.length; cut++) {
      expect(() => new ProtoReader(enc.subarray(0, cut)).uint64()).toThrow(code('E_PROTO_TRUNCATED'));
    }
  });

  it('rejects an 11-byte varint and a 10th byte above 1', () => {
    expect(() => new ProtoReader(unhex('ffffffffffffffffff8001')).uint64()).toThrow(code('E_PROTO_VARINT_OVERFLOW'));
    expect(() => new ProtoReader(unhex('ffffffffffffffffff02')).uint64()).toThrow(code('E_PROTO_VARINT_OVERFLOW'));
  });

  it('never reads outside its window', () => {
    const buf = unhex('ff ff 01 05');
    const r = new ProtoReader(buf, 0, 2); // the varint continues past the window's end
    expect(() => r.uint64()).toThrow(code('E_PROTO_TRUNCATED'));
    expect(() => new ProtoReader(buf, 3, 5)).toThrow(RangeError);
  });
});

describe('fixed32 / fixed64', () => {
  it('are little-endian', () => {
    expect(hex(new ProtoWriter().fixed32Field(1, 0x0102_0304).finish())).toBe('0d04030201');
    expect(hex(new ProtoWriter().fixed64Field(1, 0x0102_0304_0506_0708n).finish())).toBe('090807060504030201');
    expect(new ProtoReader(unhex('04030201')).fixed32()).toBe(0x0102_0304);
    expect(new ProtoReader(unhex('ffffffff')).fixed32()).toBe(0xffff_ffff);
    expect(new ProtoReader(unhex('0807060504030201')).fixed64()).toBe(0x0102_0304_0506_0708n);
  });

  it('throw E_PROTO_TRUNCATED when short', () => {
    for (let n = 0; n < 4; n++) expect(() => new ProtoReader(new Uint8Array(n)).fixed32()).toThrow(code('E_PROTO_TRUNCATED'));
    for (let n = 0; n < 8; n++) expect(() => new ProtoReader(new Uint8Array(n)).fixed64()).toThrow(code('E_PROTO_TRUNCATED'));
  });
});

describe('length-delimited', () => {
  it('reads strings and bytes, bytes() copies and bytesView() aliases', () => {
    const buf = unhex('03616263');
    expect(new ProtoReader(buf).string()).toBe('abc');
    const copy = new ProtoReader(buf).bytes();
    const view = new ProtoReader(buf).bytesView();
    buf[1] = 0x7a;
    expect(hex(copy)).toBe('616263');
    expect(hex(view)).toBe('7a6263');
  });

  it('throws E_PROTO_TRUNCATED when the length exceeds the input, even a huge one', () => {
    expect(() => new ProtoReader(unhex('0561')).bytes()).toThrow(code('E_PROTO_TRUNCATED'));
    expect(() => new ProtoReader(unhex('ffffffffffffffffff01')).bytes()).toThrow(code('E_PROTO_TRUNCATED'));
    expect(() => new ProtoReader(unhex('ffffffff0f')).string()).toThrow(code('E_PROTO_TRUNCATED'));
  });

  it('decodes invalid UTF-8 leniently, like gogo/protobuf', () => {
    expect(new ProtoReader(unhex('02c328')).string()).toBe('\ufffd(');
  });
});

describe('tags', () => {
  it('round-trips every wire type and the largest field number', () => {
    for (const wt of [0, 1, 2, 3, 4, 5] as const) {
      const r = new ProtoReader(new ProtoWriter().tag(MAX_FIELD_NUMBER, wt).finish());
      expect(r.tag()).toEqual({ fieldNumber: MAX_FIELD_NUMBER, wireType: wt });
    }
  });

  it('rejects field number 0 and numbers above 2^29-1', () => {
    expect(() => new ProtoReader(unhex('00')).tag()).toThrow(code('E_PROTO_FIELD_NUMBER'));
    expect(() => new ProtoReader(unhex('02')).tag()).toThrow(code('E_PROTO_FIELD_NUMBER'));
    expect(() => new ProtoReader(new ProtoWriter().varint(2 ** 32).finish()).tag()).toThrow(code('E_PROTO_FIELD_NUMBER'));
    expect(() => new ProtoWriter().tag(0, WireType.VARINT)).toThrow(code('E_PROTO_FIELD_NUMBER'));
    expect(() => new ProtoWriter().tag(MAX_FIELD_NUMBER + 1, WireType.VARINT)).toThrow(code('E_PROTO_FIELD_NUMBER'));
  });

  it('rejects wire types 6 and 7', () => {
    expect(() => new ProtoReader(unhex('0e')).tag()).toThrow(code('E_PROTO_WIRETYPE'));
    expect(() => new ProtoReader(unhex('0f')).tag()).toThrow(code('E_PROTO_WIRETYPE'));
  });
});

describe('skip', () => {
  const skipAll = (buf: Uint8Array): number => {
    const r = new ProtoReader(buf);
    let n = 0;
    while (!r.done) {
      r.skip(r.tag());
      n++;
    }
    return n;
  };

  it('skips every wire type', () => {
    const w = new ProtoWriter()
      .uint64Field(1, (1n << 64n) - 1n)
      .fixed64Field(2, 7n)
      .stringField(3, 'hello')
      .fixed32Field(4, 9)
      .raw(unhex('2b 08 01 1a 01 78 2c')); // group 5 { varint 1, len 3 } end group 5
    expect(skipAll(w.finish())).toBe(5);
  });

  it('skips nested groups and rejects mismatched or stray end groups', () => {
    expect(skipAll(unhex('2b 33 08 01 34 2c'))).toBe(1); // group 5 { group 6 { f1 } }
    expect(() => skipAll(unhex('2b 34'))).toThrow(code('E_PROTO_WIRETYPE')); // start 5, end 6
    expect(() => skipAll(unhex('2c'))).toThrow(code('E_PROTO_WIRETYPE')); // end 5 alone
    expect(() => skipAll(unhex('2b 08 01'))).toThrow(code('E_PROTO_TRUNCATED')); // group never ends
  });

  it('bounds group nesting instead of recursing without limit', () => {
    const deep = new Uint8Array(100).fill(0x0b); // 100 nested start groups of field 1
    expect(() => skipAll(deep)).toThrow(code('E_PROTO_WIRETYPE'));
  });

  it('throws E_PROTO_TRUNCATED for short fixed fields', () => {
    expect(() => skipAll(unhex('09 010203'))).toThrow(code('E_PROTO_TRUNCATED'));
    expect(() => skipAll(unhex('0d 0102'))).toThrow(code('E_PROTO_TRUNCATED'));
  });
});

describe('ProtoWriter', () => {
  it('grows past its initial capacity', () => {
    const big = new Uint8Array(10_000).fill(7);
    const out = new ProtoWriter(1).bytesField(1, big).finish();
    expect(out.length).toBe(1 + 2 + 10_000);
    expect(hex(out.subarray(0, 3))).toBe('0a904e');
  });

  it.each([
    ['uint32 -1', () => new ProtoWriter().uint32Field(1, -1)],
    ['uint32 2^32', () => new ProtoWriter().uint32Field(1, 2 ** 32)],
    ['uint32 1.5', () => new ProtoWriter().uint32Field(1, 1.5)],
    ['int32 2^31', () => new ProtoWriter().int32Field(1, 2 ** 31)],
    ['int64 2^63', () => new ProtoWriter().int64Field(1, 1n << 63n)],
    ['uint64 -1', () => new ProtoWriter().uint64Field(1, -1n)],
    ['uint64 2^64', () => new ProtoWriter().uint64Field(1, 1n << 64n)],
    ['fixed32 -1', () => new ProtoWriter().fixed32Field(1, -1)],
    ['fixed64 2^64', () => new ProtoWriter().fixed64Field(1, 1n << 64n)],
    ['varint unsafe', () => new ProtoWriter().varint(2 ** 53)],
  ])('rejects out-of-range %s with E_PROTO_VALUE_RANGE', (_name, f) => {
    expect(f).toThrow(code('E_PROTO_VALUE_RANGE'));
  });
});
