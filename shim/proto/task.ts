// The containerd runtime v2 Task service (containerd.task.v2.Task) as message types, one table of field numbers each.

import { Any, Empty, GO_ZERO_TIME, Timestamp } from './well-known.js';
import { defineMessage, field, type MessageType, type Schema, type Value } from './schema.js';

// Source of every field number below: containerd 1.6.20 (Debian golang-github-containerd-containerd-dev
// 1.6.20~ds1-1+deb12u3), runtime/v2/task/shim.proto, api/types/mount.proto and api/types/task/task.proto.
// `exited_at` is `(gogoproto.stdtime) = true, (gogoproto.nullable) = false` there, so Go always emits it.

/** Fully qualified ttrpc service name of the Task API, as it appears in `Request.service`. */
export const TASK_SERVICE = 'containerd.task.v2.Task';

/** `containerd.v1.types.Status` (api/types/task/task.proto): the state in `StateResponse.status`. */
export const TaskStatus = {
  UNKNOWN: 0,
  CREATED: 1,
  RUNNING: 2,
  STOPPED: 3,
  PAUSED: 4,
  PAUSING: 5,
} as const;
/** One of the {@link TaskStatus} values (unknown numbers from a newer peer are kept as they are). */
export type TaskStatus = (typeof TaskStatus)[keyof typeof TaskStatus];

const exitedAt = (no: number) => field.nonNullableMessage(no, Timestamp, GO_ZERO_TIME);

/** `containerd.types.Mount` (api/types/mount.proto). */
export const Mount = defineMessage('containerd.types.Mount', {
  type: field.string(1),
  source: field.string(2),
  target: field.string(3),
  options: field.repeatedString(4),
});

/** `containerd.v1.types.ProcessInfo` (api/types/task/task.proto). */
export const ProcessInfo = defineMessage('containerd.v1.types.ProcessInfo', {
  pid: field.uint32(1),
  info: field.message(2, Any),
});

/** `containerd.task.v2.CreateTaskRequest`: the request of `Task.Create`; a non-empty `checkpoint` makes runc-v2 restore from that image path. */
export const CreateTaskRequest = defineMessage('containerd.task.v2.CreateTaskRequest', {
  id: field.string(1),
  bundle: field.string(2),
  rootfs: field.repeatedMessage(3, Mount),
  terminal: field.bool(4),
  stdin: field.string(5),
  stdout: field.string(6),
  stderr: field.string(7),
  checkpoint: field.string(8),
  parentCheckpoint: field.string(9),
  /** runc-v2: `containerd.runc.v1.Options` (runtime/v2/runc/options/oci.proto). */
  options: field.message(10, Any),
});
/** `containerd.task.v2.CreateTaskResponse`: the response of `Task.Create`. */
export const CreateTaskResponse = defineMessage('containerd.task.v2.CreateTaskResponse', {
  pid: field.uint32(1),
});

/** `containerd.task.v2.DeleteRequest`: the request of `Task.Delete`. */
export const DeleteRequest = defineMessage('containerd.task.v2.DeleteRequest', {
  id: field.string(1),
  execId: field.string(2),
});
/** `containerd.task.v2.DeleteResponse`: the response of `Task.Delete`. */
export const DeleteResponse = defineMessage('containerd.task.v2.DeleteResponse', {
  pid: field.uint32(1),
  exitStatus: field.uint32(2),
  exitedAt: exitedAt(3),
});

/** `containerd.task.v2.ExecProcessRequest`: the request of `Task.Exec`. */
export const ExecProcessRequest = defineMessage('containerd.task.v2.ExecProcessRequest', {
  id: field.string(1),
  execId: field.string(2),
  terminal: field.bool(3),
  stdin: field.string(4),
  stdout: field.string(5),
  stderr: field.string(6),
  spec: field.message(7, Any),
});

/** `containerd.task.v2.ResizePtyRequest`: the request of `Task.ResizePty`. */
export const ResizePtyRequest = defineMessage('containerd.task.v2.ResizePtyRequest', {
  id: field.string(1),
  execId: field.string(2),
  width: field.uint32(3),
  height: field.uint32(4),
});

/** `containerd.task.v2.StateRequest`: the request of `Task.State`. */
export const StateRequest = defineMessage('containerd.task.v2.StateRequest', {
  id: field.string(1),
  execId: field.string(2),
});
/** `containerd.task.v2.StateResponse`: the response of `Task.State`. */
export const StateResponse = defineMessage('containerd.task.v2.StateResponse', {
  id: field.string(1),
  bundle: field.string(2),
  pid: field.uint32(3),
  /** A {@link TaskStatus}. */
  status: field.enum(4),
  stdin: field.string(5),
  stdout: field.string(6),
  stderr: field.string(7),
  terminal: field.bool(8),
  exitStatus: field.uint32(9),
  exitedAt: exitedAt(10),
  execId: field.string(11),
});

/** `containerd.task.v2.KillRequest`: the request of `Task.Kill`, which the shim intercepts while a migration owns the container. */
export const KillRequest = defineMessage('containerd.task.v2.KillRequest', {
  id: field.string(1),
  execId: field.string(2),
  signal: field.uint32(3),
  all: field.bool(4),
});

/** `containerd.task.v2.CloseIORequest`: the request of `Task.CloseIO`. */
export const CloseIORequest = defineMessage('containerd.task.v2.CloseIORequest', {
  id: field.string(1),
  execId: field.string(2),
  stdin: field.bool(3),
});

/** `containerd.task.v2.PidsRequest`: the request of `Task.Pids`. */
export const PidsRequest = defineMessage('containerd.task.v2.PidsRequest', {
  id: field.string(1),
});
/** `containerd.task.v2.PidsResponse`: the response of `Task.Pids`. */
export const PidsResponse = defineMessage('containerd.task.v2.PidsResponse', {
  processes: field.repeatedMessage(1, ProcessInfo),
});

/** `containerd.task.v2.CheckpointTaskRequest`: the request of `Task.Checkpoint`. */
export const CheckpointTaskRequest = defineMessage('containerd.task.v2.CheckpointTaskRequest', {
  id: field.string(1),
  path: field.string(2),
  /** runc-v2: `containerd.runc.v1.CheckpointOptions`. */
  options: field.message(3, Any),
});

// `map<string, string> annotations = 3` is, on the wire, a repeated entry message {1 key, 2 value}.
const AnnotationsEntry = defineMessage('containerd.task.v2.UpdateTaskRequest.AnnotationsEntry', {
  key: field.string(1),
  value: field.string(2),
});
/** `containerd.task.v2.UpdateTaskRequest`: the request of `Task.Update`. */
export const UpdateTaskRequest = defineMessage('containerd.task.v2.UpdateTaskRequest', {
  id: field.string(1),
  resources: field.message(2, Any),
  annotations: field.repeatedMessage(3, AnnotationsEntry),
});

/** `containerd.task.v2.StartRequest`: the request of `Task.Start`. */
export const StartRequest = defineMessage('containerd.task.v2.StartRequest', {
  id: field.string(1),
  execId: field.string(2),
});
/** `containerd.task.v2.StartResponse`: the response of `Task.Start`. */
export const StartResponse = defineMessage('containerd.task.v2.StartResponse', {
  pid: field.uint32(1),
});

/** `containerd.task.v2.WaitRequest`: the request of `Task.Wait`. */
export const WaitRequest = defineMessage('containerd.task.v2.WaitRequest', {
  id: field.string(1),
  execId: field.string(2),
});
/** `containerd.task.v2.WaitResponse`: the response of `Task.Wait`. */
export const WaitResponse = defineMessage('containerd.task.v2.WaitResponse', {
  exitStatus: field.uint32(1),
  exitedAt: exitedAt(2),
});

/** `containerd.task.v2.StatsRequest`: the request of `Task.Stats`. */
export const StatsRequest = defineMessage('containerd.task.v2.StatsRequest', {
  id: field.string(1),
});
/** `containerd.task.v2.StatsResponse`: the response of `Task.Stats`. */
export const StatsResponse = defineMessage('containerd.task.v2.StatsResponse', {
  stats: field.message(1, Any),
});

/** `containerd.task.v2.ConnectRequest`: the request of `Task.Connect`. */
export const ConnectRequest = defineMessage('containerd.task.v2.ConnectRequest', {
  id: field.string(1),
});
/** `containerd.task.v2.ConnectResponse`: the response of `Task.Connect`. */
export const ConnectResponse = defineMessage('containerd.task.v2.ConnectResponse', {
  shimPid: field.uint32(1),
  taskPid: field.uint32(2),
  version: field.string(3),
});

/** `containerd.task.v2.ShutdownRequest`: the request of `Task.Shutdown`. */
export const ShutdownRequest = defineMessage('containerd.task.v2.ShutdownRequest', {
  id: field.string(1),
  now: field.bool(2),
});

/** `containerd.task.v2.PauseRequest`: the request of `Task.Pause`. */
export const PauseRequest = defineMessage('containerd.task.v2.PauseRequest', {
  id: field.string(1),
});
/** `containerd.task.v2.ResumeRequest`: the request of `Task.Resume`. */
export const ResumeRequest = defineMessage('containerd.task.v2.ResumeRequest', {
  id: field.string(1),
});

/**
 * Every method of `service Task` with its request and response types, in the .proto's order. This is
 * the only place a method name is spelled; the shim looks methods up here.
 */
export const TaskMethods = {
  State: { request: StateRequest, response: StateResponse },
  Create: { request: CreateTaskRequest, response: CreateTaskResponse },
  Start: { request: StartRequest, response: StartResponse },
  Delete: { request: DeleteRequest, response: DeleteResponse },
  Pids: { request: PidsRequest, response: PidsResponse },
  Pause: { request: PauseRequest, response: Empty },
  Resume: { request: ResumeRequest, response: Empty },
  Checkpoint: { request: CheckpointTaskRequest, response: Empty },
  Kill: { request: KillRequest, response: Empty },
  Exec: { request: ExecProcessRequest, response: Empty },
  ResizePty: { request: ResizePtyRequest, response: Empty },
  CloseIO: { request: CloseIORequest, response: Empty },
  Update: { request: UpdateTaskRequest, response: Empty },
  Wait: { request: WaitRequest, response: WaitResponse },
  Stats: { request: StatsRequest, response: StatsResponse },
  Connect: { request: ConnectRequest, response: ConnectResponse },
  Shutdown: { request: ShutdownRequest, response: Empty },
} as const satisfies Record<string, { request: MessageType<Schema>; response: MessageType<Schema> }>;

/** A Task method name. */
export type TaskMethod = keyof typeof TaskMethods;
/** The decoded request type of a method. */
export type TaskRequestOf<M extends TaskMethod> = Value<(typeof TaskMethods)[M]['request']['fields']>;
/** The decoded response type of a method. */
export type TaskResponseOf<M extends TaskMethod> = Value<(typeof TaskMethods)[M]['response']['fields']>;

const METHOD_NAMES: ReadonlySet<string> = new Set(Object.keys(TaskMethods));

/** Narrows a `Request.method` string to a known Task method. */
export function isTaskMethod(name: string): name is TaskMethod {
  return METHOD_NAMES.has(name);
}

/** A decoded KillRequest. */
export type KillRequestValue = Value<typeof KillRequest.fields>;
/** A decoded DeleteRequest. */
export type DeleteRequestValue = Value<typeof DeleteRequest.fields>;
/** A decoded DeleteResponse. */
export type DeleteResponseValue = Value<typeof DeleteResponse.fields>;
/** A decoded CreateTaskRequest. */
export type CreateTaskRequestValue = Value<typeof CreateTaskRequest.fields>;
/** A decoded StateResponse. */
export type StateResponseValue = Value<typeof StateResponse.fields>;
/** A decoded WaitResponse. */
export type WaitResponseValue = Value<typeof WaitResponse.fields>;
/** A decoded CheckpointTaskRequest. */
export type CheckpointTaskRequestValue = Value<typeof CheckpointTaskRequest.fields>;
