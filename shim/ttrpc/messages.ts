// ttrpc's own envelope messages, Request and Response, which wrap every Task call and its answer.

import { RpcStatus } from '../proto/well-known.js';
import { defineMessage, field, type Value } from '../proto/schema.js';

// Source: ttrpc 1.1.1 (Debian golang-github-containerd-ttrpc-dev 1.1.1-1) types.go. ttrpc 1.1 has no
// .proto for these; the numbers are the `protobuf:"…"` struct tags, marshalled by gogo/protobuf.

/** `ttrpc.KeyValue`: one metadata entry (gRPC-style headers, e.g. containerd's namespace). */
export const KeyValue = defineMessage('ttrpc.KeyValue', {
  key: field.string(1),
  value: field.string(2),
});

/** `ttrpc.Request`: the payload of a frame of type 1. */
export const Request = defineMessage('ttrpc.Request', {
  /** e.g. `containerd.task.v2.Task`. */
  service: field.string(1),
  /** e.g. `Kill`. */
  method: field.string(2),
  /** The encoded method request, e.g. a KillRequest. */
  payload: field.bytes(3),
  /** Remaining client deadline in nanoseconds; 0 means none (server.go `getRequestContext`). */
  timeoutNano: field.int64(4),
  metadata: field.repeatedMessage(5, KeyValue),
});
/** A decoded ttrpc Request. */
export type RequestValue = Value<typeof Request.fields>;

/** `ttrpc.Response`: the payload of a frame of type 2. */
export const Response = defineMessage('ttrpc.Response', {
  /** Go's server always sets it, code 0 on success (server.go: `Status: status.Proto()`). */
  status: field.message(1, RpcStatus),
  /** The encoded method response, e.g. a StateResponse; empty on error. */
  payload: field.bytes(2),
});
/** A decoded ttrpc Response. */
export type ResponseValue = Value<typeof Response.fields>;
