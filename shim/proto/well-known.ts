// Google's well-known protobuf types that containerd and ttrpc messages embed: Any, Timestamp, Empty and google.rpc.Status.

import { defineMessage, field, type Value } from './schema.js';

// Field numbers from protobuf 3.21 src/google/protobuf/{any,timestamp,empty}.proto
// (Debian libprotobuf-dev /usr/include/google/protobuf/) and googleapis google/rpc/status.proto.

/** `google.protobuf.Any`: a type URL and the packed message. */
export const Any = defineMessage('google.protobuf.Any', {
  /** e.g. `type.googleapis.com/containerd.runc.v1.Options`. */
  typeUrl: field.string(1),
  value: field.bytes(2),
});
/** A decoded `google.protobuf.Any`. */
export type AnyValue = Value<typeof Any.fields>;

/** `google.protobuf.Timestamp`: seconds and nanoseconds since the Unix epoch. */
export const Timestamp = defineMessage('google.protobuf.Timestamp', {
  seconds: field.int64(1),
  nanos: field.int32(2),
});
/** A decoded `google.protobuf.Timestamp`. */
export type TimestampValue = Value<typeof Timestamp.fields>;

/** `google.protobuf.Empty`: the response of most Task methods (Kill, Pause, Checkpoint, Shutdown…). */
export const Empty = defineMessage('google.protobuf.Empty', {});

/**
 * Go's zero `time.Time` (0001-01-01T00:00:00Z) as a Timestamp. gogoproto `stdtime` fields with
 * `nullable=false` (containerd's `exited_at`) always carry a Timestamp, and this is what a process that
 * has not exited gets: `types.TimestampProto(time.Time{})`.
 */
export const GO_ZERO_TIME: Readonly<{ seconds: bigint; nanos: number }> = Object.freeze({ seconds: -62_135_596_800n, nanos: 0 });

/** `google.rpc.Status`: the error ttrpc carries in `Response.status`. */
export const RpcStatus = defineMessage('google.rpc.Status', {
  /** A gRPC status code (`GrpcCode` in ../ttrpc/errors.ts); 0 is OK. */
  code: field.int32(1),
  message: field.string(2),
  details: field.repeatedMessage(3, Any),
});
/** A decoded `google.rpc.Status`. */
export type RpcStatusValue = Value<typeof RpcStatus.fields>;

/** Converts a Timestamp to a JS Date (millisecond precision; Date cannot hold nanoseconds). */
export function timestampToDate(t: { readonly seconds: bigint; readonly nanos: number }): Date {
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

/** Converts a JS Date to a Timestamp. */
export function dateToTimestamp(d: Date): TimestampValue {
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1e6 };
}
