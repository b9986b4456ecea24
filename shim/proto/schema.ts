// Declarative protobuf message types: one table of field numbers per message, from which decode, encode and the TypeScript types follow.

import { ShimError } from '../ttrpc/errors.js';
import { ProtoReader, ProtoWriter, WireType, type Tag } from './wire.js';

/** TypeScript value of each scalar kind. 64-bit integers are bigint: pids fit in numbers, nanoseconds do not. */
export interface ScalarValues {
  string: string;
  bytes: Uint8Array;
  bool: boolean;
  uint32: number;
  int32: number;
  /** Enums are int32 on the wire; unknown values are kept, as proto3 requires. */
  enum: number;
  uint64: bigint;
  int64: bigint;
  fixed32: number;
  fixed64: bigint;
}
/** Scalar protobuf types this codec supports (no sint/sfixed/float: no containerd message used here has them). */
export type ScalarKind = keyof ScalarValues;

/** A scalar field: its number, type and whether it repeats. */
export interface ScalarFieldSpec {
  readonly no: number;
  readonly kind: ScalarKind;
  /** Repeated scalars are limited to string/bytes by the builders: numeric ones would need packed encoding. */
  readonly repeated?: boolean;
}

/** The part of a message type a field needs: covariant, so any concrete message type fits. */
export interface MessageTypeRef {
  readonly typeName: string;
  readonly fields: Schema;
}

/** A sub-message field. */
export interface MessageFieldSpec {
  readonly no: number;
  readonly kind: 'message';
  readonly type: MessageTypeRef;
  readonly repeated?: boolean;
  /**
   * Mirrors gogoproto `(nullable) = false`: Go always emits the field and never sees it absent. Decoding
   * an absent field yields this value, and encoding an omitted one writes it, so our bytes match Go's.
   */
  readonly zero?: Readonly<Record<string, unknown>>;
}

/** Any field. */
export type FieldSpec = ScalarFieldSpec | MessageFieldSpec;
/** A message's fields by TypeScript property name. */
export type Schema = { readonly [name: string]: FieldSpec };

type FieldValue<F> = F extends { readonly kind: 'message'; readonly type: { readonly fields: infer S extends Schema } }
  ? F extends { readonly repeated: true }
    ? Value<S>[]
    : F extends { readonly zero: Readonly<Record<string, unknown>> }
      ? Value<S>
      : Value<S> | undefined
  : F extends { readonly kind: infer K extends ScalarKind }
    ? F extends { readonly repeated: true }
      ? ScalarValues[K][]
      : ScalarValues[K]
    : never;

type FieldInit<F> = F extends { readonly kind: 'message'; readonly type: { readonly fields: infer S extends Schema } }
  ? F extends { readonly repeated: true }
    ? readonly Init<S>[]
    : Init<S>
  : F extends { readonly kind: infer K extends ScalarKind }
    ? F extends { readonly repeated: true }
      ? readonly ScalarValues[K][]
      : ScalarValues[K]
    : never;

/** Unknown fields, kept verbatim (tag and value) in arrival order so re-encoding loses nothing. */
export interface UnknownFields {
  $unknown?: Uint8Array;
}

/** A decoded message: every field present, proto3 defaults filled in, sub-messages `undefined` when absent. */
export type Value<S extends Schema> = { -readonly [K in keyof S]: FieldValue<S[K]> } & UnknownFields;
/** Input to `encode`: any field may be omitted and means its default. */
export type Init<S extends Schema> = { readonly [K in keyof S]?: FieldInit<S[K]> } & { readonly $unknown?: Uint8Array };

/** A message type: its fields, and the codec derived from them. */
export interface MessageType<S extends Schema> extends MessageTypeRef {
  /** Fully qualified protobuf name, e.g. `containerd.task.v2.KillRequest`. */
  readonly typeName: string;
  /** Field numbers and types; the single source of truth for this message's layout. */
  readonly fields: S;
  /** Decodes bytes; throws a `ShimError` with an `E_PROTO_*` code on malformed input. Byte fields are copies. */
  decode(bytes: Uint8Array): Value<S>;
  /** Encodes in field-number order, omitting proto3 defaults, then appends `$unknown`: the same bytes Go produces. */
  encode(value: Init<S>): Uint8Array;
  /** A full value from a partial one (defaults filled in), without going through bytes. */
  create(value?: Init<S>): Value<S>;
}

/** Field builders; each keeps the literal `kind` so `Value<S>` can be inferred. */
export const field = {
  string: (no: number) => ({ no, kind: 'string' }) as const,
  bytes: (no: number) => ({ no, kind: 'bytes' }) as const,
  bool: (no: number) => ({ no, kind: 'bool' }) as const,
  uint32: (no: number) => ({ no, kind: 'uint32' }) as const,
  int32: (no: number) => ({ no, kind: 'int32' }) as const,
  enum: (no: number) => ({ no, kind: 'enum' }) as const,
  uint64: (no: number) => ({ no, kind: 'uint64' }) as const,
  int64: (no: number) => ({ no, kind: 'int64' }) as const,
  fixed32: (no: number) => ({ no, kind: 'fixed32' }) as const,
  fixed64: (no: number) => ({ no, kind: 'fixed64' }) as const,
  repeatedString: (no: number) => ({ no, kind: 'string', repeated: true }) as const,
  repeatedBytes: (no: number) => ({ no, kind: 'bytes', repeated: true }) as const,
  message: <T extends MessageTypeRef>(no: number, type: T) => ({ no, kind: 'message', type }) as const,
  repeatedMessage: <T extends MessageTypeRef>(no: number, type: T) => ({ no, kind: 'message', type, repeated: true }) as const,
  /** gogoproto `(nullable) = false`: always present, `zero` when Go's value is the zero value. */
  nonNullableMessage: <T extends MessageTypeRef, Z extends Readonly<Record<string, unknown>>>(no: number, type: T, zero: Z) =>
    ({ no, kind: 'message', type, zero }) as const,
};

const WIRE_OF: Record<ScalarKind, WireType> = {
  string: WireType.LEN,
  bytes: WireType.LEN,
  bool: WireType.VARINT,
  uint32: WireType.VARINT,
  int32: WireType.VARINT,
  enum: WireType.VARINT,
  uint64: WireType.VARINT,
  int64: WireType.VARINT,
  fixed32: WireType.I32,
  fixed64: WireType.I64,
};

type Entry = readonly [name: string, spec: FieldSpec];
type Layout = { readonly byNo: ReadonlyMap<number, Entry>; readonly ordered: readonly Entry[] };
type Obj = Record<string, unknown>;

// Nested types are reached through MessageTypeRef, which carries only the schema; layouts are cached per schema object.
const layouts = new WeakMap<Schema, Layout>();

/**
 * Declares a message type. Field numbers are validated once here (unique, in range) so a typo in a
 * table fails at import time, not on the wire.
 */
export function defineMessage<const S extends Schema>(typeName: string, fields: S): MessageType<S> {
  const layout = layoutOf(typeName, fields);
  layouts.set(fields, layout);
  return {
    typeName,
    fields,
    decode: (bytes) => decodeWith(typeName, layout, bytes) as Value<S>,
    encode: (value) => encodeWith(layout, value),
    create: (value = {}) => createWith(layout, value) as Value<S>,
  };
}

function layoutOf(typeName: string, fields: Schema): Layout {
  const byNo = new Map<number, Entry>();
  for (const [name, spec] of Object.entries(fields)) {
    if (!Number.isInteger(spec.no) || spec.no < 1 || spec.no > 0x1fff_ffff) throw new Error(`${typeName}.${name}: bad field number ${spec.no}`);
    if (byNo.has(spec.no)) throw new Error(`${typeName}.${name}: field number ${spec.no} used twice`);
    if (name === '$unknown') throw new Error(`${typeName}: "$unknown" is reserved`);
    byNo.set(spec.no, [name, spec]);
  }
  // Go's generated marshalers write fields in field-number order; so do we, for byte-identical output.
  const ordered = [...byNo.values()].sort((a, b) => a[1].no - b[1].no);
  return { byNo, ordered };
}

function defaultOf(spec: FieldSpec): unknown {
  if (spec.repeated) return [];
  if (spec.kind === 'message') return spec.zero === undefined ? undefined : structuredClone(spec.zero);
  switch (spec.kind) {
    case 'string':
      return '';
    case 'bytes':
      return new Uint8Array(0);
    case 'bool':
      return false;
    case 'uint32':
    case 'int32':
    case 'enum':
    case 'fixed32':
      return 0;
    case 'uint64':
    case 'int64':
    case 'fixed64':
      return 0n;
  }
}

function readScalar(r: ProtoReader, kind: ScalarKind): unknown {
  switch (kind) {
    case 'string':
      return r.string();
    case 'bytes':
      return r.bytes();
    case 'bool':
      return r.bool();
    case 'uint32':
      return r.uint32();
    case 'int32':
    case 'enum':
      return r.int32();
    case 'uint64':
      return r.uint64();
    case 'int64':
      return r.int64();
    case 'fixed32':
      return r.fixed32();
    case 'fixed64':
      return r.fixed64();
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function wireTypeError(typeName: string, name: string, tag: Tag, expected: WireType, offset: number): ShimError {
  return new ShimError('E_PROTO_WIRETYPE', `${typeName}.${name}: wire type ${tag.wireType}, expected ${expected}`, {
    typeName,
    field: name,
    fieldNumber: tag.fieldNumber,
    wireType: tag.wireType,
    offset,
  });
}

function decodeWith(typeName: string, layout: Layout, bytes: Uint8Array): Obj {
  const out: Obj = {};
  for (const [name, spec] of layout.ordered) out[name] = defaultOf(spec);
  const r = new ProtoReader(bytes);
  const unknown: Uint8Array[] = [];
  // A singular sub-message seen twice is merged, as protobuf specifies: decoding the concatenation does exactly that.
  const subParts = new Map<Entry, Uint8Array[]>();
  try {
    while (!r.done) {
      const start = r.pos;
      const tag = r.tag();
      const entry = layout.byNo.get(tag.fieldNumber);
      if (entry === undefined) {
        r.skip(tag);
        unknown.push(bytes.subarray(start, r.pos));
        continue;
      }
      const [name, spec] = entry;
      const expected = spec.kind === 'message' ? WireType.LEN : WIRE_OF[spec.kind];
      if (tag.wireType !== expected) throw wireTypeError(typeName, name, tag, expected, start);
      if (spec.kind === 'message') {
        const body = r.bytesView();
        if (spec.repeated) (out[name] as unknown[]).push(decodeNested(spec, body));
        else subParts.set(entry, [...(subParts.get(entry) ?? []), body]);
      } else if (spec.repeated) {
        (out[name] as unknown[]).push(readScalar(r, spec.kind));
      } else {
        out[name] = readScalar(r, spec.kind); // last one wins, as protobuf specifies for scalars
      }
    }
  } catch (e: unknown) {
    if (e instanceof ShimError && e.details.typeName === undefined) {
      throw new ShimError(e.code, `${typeName}: ${e.message}`, { ...e.details, typeName }, { cause: e });
    }
    throw e;
  }
  for (const [[name, spec], parts] of subParts) {
    if (spec.kind === 'message') out[name] = decodeNested(spec, concat(parts));
  }
  if (unknown.length > 0) out.$unknown = concat(unknown);
  return out;
}

function cachedLayout(ref: MessageTypeRef): Layout {
  let l = layouts.get(ref.fields);
  if (l === undefined) {
    l = layoutOf(ref.typeName, ref.fields);
    layouts.set(ref.fields, l);
  }
  return l;
}

function decodeNested(spec: MessageFieldSpec, body: Uint8Array): Obj {
  return decodeWith(spec.type.typeName, cachedLayout(spec.type), body);
}

function isDefaultScalar(v: unknown): boolean {
  return v === '' || v === 0 || v === 0n || v === false || (v instanceof Uint8Array && v.length === 0);
}

function writeScalar(w: ProtoWriter, no: number, kind: ScalarKind, v: unknown): void {
  const bad = (): ShimError => new ShimError('E_PROTO_VALUE_RANGE', `field ${no}: ${typeof v} is not a ${kind}`, { fieldNumber: no, kind });
  switch (kind) {
    case 'string':
      if (typeof v !== 'string') throw bad();
      w.stringField(no, v);
      return;
    case 'bytes':
      if (!(v instanceof Uint8Array)) throw bad();
      w.bytesField(no, v);
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw bad();
      w.boolField(no, v);
      return;
    case 'uint32':
      if (typeof v !== 'number') throw bad();
      w.uint32Field(no, v);
      return;
    case 'int32':
    case 'enum':
      if (typeof v !== 'number') throw bad();
      w.int32Field(no, v);
      return;
    case 'uint64':
      if (typeof v !== 'bigint') throw bad();
      w.uint64Field(no, v);
      return;
    case 'int64':
      if (typeof v !== 'bigint') throw bad();
      w.int64Field(no, v);
      return;
    case 'fixed32':
      if (typeof v !== 'number') throw bad();
      w.fixed32Field(no, v);
      return;
    case 'fixed64':
      if (typeof v !== 'bigint') throw bad();
      w.fixed64Field(no, v);
      return;
  }
}

function encodeWith(layout: Layout, value: object): Uint8Array {
  const w = new ProtoWriter();
  encodeInto(w, layout, value as Obj);
  return w.finish();
}

function encodeInto(w: ProtoWriter, layout: Layout, value: Obj): void {
  for (const [name, spec] of layout.ordered) {
    const v = value[name];
    if (spec.kind === 'message') {
      const nested = cachedLayout(spec.type);
      if (spec.repeated) {
        for (const item of asArray(v, name)) w.bytesField(spec.no, encodeWith(nested, asObj(item, name)));
      } else if (v !== undefined) {
        w.bytesField(spec.no, encodeWith(nested, asObj(v, name)));
      } else if (spec.zero !== undefined) {
        w.bytesField(spec.no, encodeWith(nested, spec.zero));
      }
    } else if (spec.repeated) {
      // Repeated elements are written even when empty: only singular proto3 scalars have implicit presence.
      for (const item of asArray(v, name)) writeScalar(w, spec.no, spec.kind, item);
    } else if (v !== undefined && !isDefaultScalar(v)) {
      writeScalar(w, spec.no, spec.kind, v);
    }
  }
  const unknown = value.$unknown;
  if (unknown instanceof Uint8Array) w.raw(unknown);
}

function asArray(v: unknown, name: string): readonly unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new ShimError('E_PROTO_VALUE_RANGE', `${name}: expected an array`, { field: name });
  return v;
}

function asObj(v: unknown, name: string): Obj {
  if (typeof v !== 'object' || v === null) throw new ShimError('E_PROTO_VALUE_RANGE', `${name}: expected a message object`, { field: name });
  return v as Obj;
}

function createWith(layout: Layout, value: Obj): Obj {
  const out: Obj = {};
  for (const [name, spec] of layout.ordered) {
    const v = value[name];
    if (v === undefined) out[name] = defaultOf(spec);
    else if (spec.kind === 'message' && spec.repeated) out[name] = asArray(v, name).map((i) => createWith(cachedLayout(spec.type), asObj(i, name)));
    else if (spec.kind === 'message') out[name] = createWith(cachedLayout(spec.type), asObj(v, name));
    else if (spec.repeated) out[name] = [...asArray(v, name)];
    else out[name] = v;
  }
  if (value.$unknown instanceof Uint8Array) out.$unknown = value.$unknown;
  return out;
}
