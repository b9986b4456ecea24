// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/): a bounds-checked reader and a growable writer.

import { ShimError } from '../ttrpc/errors.js';

/** Protobuf wire types. Groups (3, 4) are deprecated; proto3 never emits them but old peers may. */
export const WireType = {
  VARINT: 0,
  I64: 1,
  LEN: 2,
  SGROUP: 3,
  EGROUP: 4,
  I32: 5,
} as const;
/** One of the {@link WireType} values. */
export type WireType = (typeof WireType)[keyof typeof WireType];

/** Largest legal field number (2^29 - 1). */
export const MAX_FIELD_NUMBER = 0x1fff_ffff;

const UINT64_MAX = (1n << 64n) - 1n;
// Groups nest; an adversarial input must not be able to blow the stack of skip().
const MAX_GROUP_DEPTH = 64;

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });
const utf8Encoder = new TextEncoder();

/** A decoded field key. */
export interface Tag {
  readonly fieldNumber: number;
  readonly wireType: WireType;
}

/**
 * Reads protobuf values from `buf[start, end)`. Every read checks bounds first and throws
 * `E_PROTO_TRUNCATED` instead of reading past `end`. Values that view the input (`bytesView`) alias it.
 */
export class ProtoReader {
  /** Next byte to read. */
  pos: number;
  private readonly buf: Uint8Array;
  private readonly end: number;
  // Low and high 32 bits of the last varint, as unsigned numbers: most varints are small, so no bigint on the hot path.
  private lo = 0;
  private hi = 0;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    if (start < 0 || end > buf.length || start > end) throw new RangeError(`bad reader window [${start}, ${end}) over ${buf.length} bytes`);
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** True when every byte of the window has been consumed. */
  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Bytes left in the window. */
  get remaining(): number {
    return this.end - this.pos;
  }

  private truncated(what: string): ShimError {
    return new ShimError('E_PROTO_TRUNCATED', `protobuf input ends inside ${what} at offset ${this.pos}`, { offset: this.pos, end: this.end });
  }

  private byte(what: string): number {
    if (this.pos >= this.end) throw this.truncated(what);
    // The bounds check above makes the index valid; `?? 0` only satisfies noUncheckedIndexedAccess.
    return this.buf[this.pos++] ?? 0;
  }

  // Sets lo/hi from a varint of at most 10 bytes. The 10th byte may only carry bit 63, as in protobuf-go.
  private varintParts(): void {
    let lo = 0;
    let hi = 0;
    let b = 0;
    for (let i = 0; i < 4; i++) {
      b = this.byte('a varint');
      lo = (lo | ((b & 0x7f) << (i * 7))) >>> 0;
      if (b < 0x80) return this.setParts(lo, 0);
    }
    b = this.byte('a varint');
    lo = (lo | ((b & 0x7f) << 28)) >>> 0;
    hi = (b & 0x7f) >>> 4;
    if (b < 0x80) return this.setParts(lo, hi);
    for (let i = 0; i < 5; i++) {
      b = this.byte('a varint');
      if (i === 4 && b > 1) {
        throw new ShimError('E_PROTO_VARINT_OVERFLOW', `varint wider than 64 bits at offset ${this.pos - 1}`, { offset: this.pos - 1 });
      }
      hi = (hi | ((b & 0x7f) << (i * 7 + 3))) >>> 0;
      if (b < 0x80) return this.setParts(lo, hi);
    }
    throw new ShimError('E_PROTO_VARINT_OVERFLOW', `varint longer than 10 bytes at offset ${this.pos}`, { offset: this.pos });
  }

  private setParts(lo: number, hi: number): void {
    this.lo = lo;
    this.hi = hi;
  }

  /** A varint as an unsigned 64-bit bigint. */
  uint64(): bigint {
    this.varintParts();
    return (BigInt(this.hi) << 32n) | BigInt(this.lo);
  }

  /** A varint as a signed 64-bit bigint (two's complement, as `int64` fields are encoded). */
  int64(): bigint {
    return BigInt.asIntN(64, this.uint64());
  }

  /** A varint truncated to its low 32 bits, as Go does for `uint32` fields. */
  uint32(): number {
    this.varintParts();
    return this.lo;
  }

  /** A varint as a signed 32-bit number (negative int32 values are sign-extended to 10 bytes on the wire). */
  int32(): number {
    this.varintParts();
    return this.lo | 0;
  }

  /** A varint as a bool: any non-zero value is true, as in Go. */
  bool(): boolean {
    this.varintParts();
    return (this.lo | this.hi) !== 0;
  }

  /** Four little-endian bytes as an unsigned number. */
  fixed32(): number {
    if (this.remaining < 4) throw this.truncated('a fixed32');
    const b = this.buf;
    const p = this.pos;
    this.pos += 4;
    return ((b[p] ?? 0) | ((b[p + 1] ?? 0) << 8) | ((b[p + 2] ?? 0) << 16) | ((b[p + 3] ?? 0) << 24)) >>> 0;
  }

  /** Eight little-endian bytes as an unsigned bigint. */
  fixed64(): bigint {
    const lo = this.fixed32();
    const hi = this.fixed32();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** A length-delimited field's body as a view onto the input (no copy). */
  bytesView(): Uint8Array {
    const len = this.uint64();
    if (len > BigInt(this.remaining)) throw this.truncated(`a length-delimited field of ${len} bytes`);
    const start = this.pos;
    this.pos += Number(len);
    return this.buf.subarray(start, this.pos);
  }

  /** A length-delimited field's body, copied so it outlives the input buffer. */
  bytes(): Uint8Array {
    return this.bytesView().slice();
  }

  /** A length-delimited field as UTF-8. Invalid sequences become U+FFFD: gogo/protobuf does not validate either. */
  string(): string {
    return utf8Decoder.decode(this.bytesView());
  }

  /** A field key. Rejects field number 0 and numbers above {@link MAX_FIELD_NUMBER}. */
  tag(): Tag {
    const at = this.pos;
    this.varintParts();
    if (this.hi !== 0 || this.lo >>> 3 === 0 || this.lo >>> 3 > MAX_FIELD_NUMBER) {
      throw new ShimError('E_PROTO_FIELD_NUMBER', `illegal field number at offset ${at}`, { offset: at });
    }
    const wt = this.lo & 7;
    if (wt === 6 || wt === 7) throw new ShimError('E_PROTO_WIRETYPE', `illegal wire type ${wt} at offset ${at}`, { offset: at, wireType: wt });
    return { fieldNumber: this.lo >>> 3, wireType: wt as WireType };
  }

  /**
   * Skips the value of a field whose tag was just read, so unknown fields never stop decoding.
   * A start group is skipped up to its matching end group; a stray end group is an error.
   */
  skip(tag: Tag, depth = 0): void {
    switch (tag.wireType) {
      case WireType.VARINT:
        this.varintParts();
        return;
      case WireType.I64:
        if (this.remaining < 8) throw this.truncated('a fixed64');
        this.pos += 8;
        return;
      case WireType.LEN:
        this.bytesView();
        return;
      case WireType.I32:
        if (this.remaining < 4) throw this.truncated('a fixed32');
        this.pos += 4;
        return;
      case WireType.SGROUP: {
        if (depth >= MAX_GROUP_DEPTH) throw new ShimError('E_PROTO_WIRETYPE', `groups nested deeper than ${MAX_GROUP_DEPTH}`, { offset: this.pos });
        for (;;) {
          const inner = this.tag();
          if (inner.wireType === WireType.EGROUP) {
            if (inner.fieldNumber !== tag.fieldNumber) {
              throw new ShimError('E_PROTO_WIRETYPE', `end group ${inner.fieldNumber} does not match start group ${tag.fieldNumber}`, { offset: this.pos });
            }
            return;
          }
          this.skip(inner, depth + 1);
        }
      }
      case WireType.EGROUP:
        throw new ShimError('E_PROTO_WIRETYPE', `end group ${tag.fieldNumber} without a start group`, { offset: this.pos });
    }
  }
}

/** Builds protobuf bytes in a growable buffer. Methods without "Field" in their name write raw values, no tag. */
export class ProtoWriter {
  private buf: Uint8Array;
  private len = 0;

  constructor(initialCapacity = 64) {
    this.buf = new Uint8Array(Math.max(16, initialCapacity));
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Raw bytes, appended verbatim (used to re-emit preserved unknown fields). */
  raw(bytes: Uint8Array): this {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
    return this;
  }

  /** An unsigned varint from a number in [0, 2^53). */
  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw rangeError('varint', v);
    if (v > 0xffff_ffff) return this.varint64(BigInt(v));
    this.reserve(5);
    while (v > 0x7f) {
      this.buf[this.len++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.len++] = v;
    return this;
  }

  /** An unsigned varint from a bigint in [0, 2^64). */
  varint64(v: bigint): this {
    if (v < 0n || v > UINT64_MAX) throw rangeError('uint64', v);
    this.reserve(10);
    while (v > 0x7fn) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
    return this;
  }

  /** A field key. */
  tag(fieldNumber: number, wireType: WireType): this {
    if (!Number.isInteger(fieldNumber) || fieldNumber < 1 || fieldNumber > MAX_FIELD_NUMBER) {
      throw new ShimError('E_PROTO_FIELD_NUMBER', `illegal field number ${fieldNumber}`, { fieldNumber });
    }
    return this.varint(fieldNumber * 8 + wireType);
  }

  /** `uint32` field, always written. */
  uint32Field(no: number, v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw rangeError('uint32', v);
    return this.tag(no, WireType.VARINT).varint(v);
  }

  /** `int32` (and enum) field, always written. Negative values take 10 bytes, as protobuf requires. */
  int32Field(no: number, v: number): this {
    if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) throw rangeError('int32', v);
    this.tag(no, WireType.VARINT);
    return v < 0 ? this.varint64(BigInt.asUintN(64, BigInt(v))) : this.varint(v);
  }

  /** `int64` field, always written. */
  int64Field(no: number, v: bigint): this {
    if (v < -(1n << 63n) || v >= 1n << 63n) throw rangeError('int64', v);
    return this.tag(no, WireType.VARINT).varint64(BigInt.asUintN(64, v));
  }

  /** `uint64` field, always written. */
  uint64Field(no: number, v: bigint): this {
    return this.tag(no, WireType.VARINT).varint64(v);
  }

  /** `bool` field, always written. */
  boolField(no: number, v: boolean): this {
    return this.tag(no, WireType.VARINT).varint(v ? 1 : 0);
  }

  /** `fixed32` field, always written. */
  fixed32Field(no: number, v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw rangeError('fixed32', v);
    this.tag(no, WireType.I32).reserve(4);
    this.buf[this.len++] = v & 0xff;
    this.buf[this.len++] = (v >>> 8) & 0xff;
    this.buf[this.len++] = (v >>> 16) & 0xff;
    this.buf[this.len++] = (v >>> 24) & 0xff;
    return this;
  }

  /** `fixed64` field, always written. */
  fixed64Field(no: number, v: bigint): this {
    if (v < 0n || v > UINT64_MAX) throw rangeError('fixed64', v);
    this.tag(no, WireType.I64).reserve(8);
    for (let i = 0n; i < 8n; i++) this.buf[this.len++] = Number((v >> (8n * i)) & 0xffn);
    return this;
  }

  /** Length-delimited field (bytes, or an already encoded sub-message), always written. */
  bytesField(no: number, v: Uint8Array): this {
    return this.tag(no, WireType.LEN).varint(v.length).raw(v);
  }

  /** `string` field as UTF-8, always written. */
  stringField(no: number, v: string): this {
    return this.bytesField(no, utf8Encoder.encode(v));
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** The encoded message, as an exactly sized copy. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function rangeError(type: string, v: number | bigint): ShimError {
  return new ShimError('E_PROTO_VALUE_RANGE', `${String(v)} is not a valid ${type}`, { type, value: String(v) });
}
