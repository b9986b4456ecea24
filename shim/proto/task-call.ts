// Turns a ttrpc request's service, method and payload into a typed Task call the shim's policy can inspect.

import { TASK_SERVICE, TaskMethods, isTaskMethod, type TaskMethod, type TaskRequestOf } from './task.js';

/** A decoded call to a known Task method; `method` discriminates `request`. */
export type TaskCall = { [M in TaskMethod]: { readonly kind: 'task'; readonly method: M; readonly request: TaskRequestOf<M> } }[TaskMethod];

/**
 * A call the codec does not model: another service (ttrpc multiplexes several on one socket) or a Task
 * method newer than containerd 1.6. The shim forwards these untouched.
 */
export interface OtherCall {
  readonly kind: 'other';
  readonly service: string;
  readonly method: string;
}

/**
 * Decodes the payload of a Task request. Throws a `ShimError` (`E_PROTO_*`) when the payload of a known
 * method is malformed: the caller must not forward what it could not inspect.
 */
export function decodeTaskCall(service: string, method: string, payload: Uint8Array): TaskCall | OtherCall {
  if (service !== TASK_SERVICE || !isTaskMethod(method)) return { kind: 'other', service, method };
  // The cast is sound: `method` selects both the type in the table and the variant of the union.
  return { kind: 'task', method, request: TaskMethods[method].request.decode(payload) } as TaskCall;
}
