import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  CheckpointTaskRequest,
  ConnectResponse,
  CreateTaskRequest,
  CreateTaskResponse,
  DeleteRequest,
  DeleteResponse,
  KillRequest,
  PidsResponse,
  ShutdownRequest,
  StateResponse,
  TASK_SERVICE,
  TaskMethods,
  TaskStatus,
  UpdateTaskRequest,
  WaitResponse,
  isTaskMethod,
} from '../../../shim/proto/task.js';
import { decodeTaskCall } from '../../../shim/proto/task-call.js';
import { GO_ZERO_TIME, dateToTimestamp, timestampToDate } from '../../../shim/proto/well-known.js';
import { ProtoReader, ProtoWriter } from '../../../shim/proto/wire.js';
import { bytes, hex, protocGolden, unhex, utf8 } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });

// Offsets where a top-level field ends: cutting a message there leaves a valid, shorter message.
function fieldBoundaries(buf: Uint8Array): Set<number> {
  const r = new ProtoReader(buf);
  const out = new Set<number>([0]);
  while (!r.done) {
    r.skip(r.tag());
    out.add(r.pos);
  }
  return out;
}

describe('golden bytes built by hand from the wire format', () => {
  it('KillRequest{id "c1", signal 9, all true}', () => {
    const expected = bytes(
      [0x0a, 2, ...utf8('c1')], // field 1 (id), wire type 2: (1 << 3) | 2
      [0x18, 9], // field 3 (signal), wire type 0: (3 << 3) | 0
      [0x20, 1], // field 4 (all)
    );
    expect(hex(KillRequest.encode({ id: 'c1', signal: 9, all: true }))).toBe(hex(expected));
    expect(KillRequest.decode(expected)).toEqual({ id: 'c1', execId: '', signal: 9, all: true });
  });

  it('KillRequest omits proto3 defaults (exec_id "", all false)', () => {
    expect(hex(KillRequest.encode({ id: 'c1', execId: '', signal: 15, all: false }))).toBe('0a026331' + '180f');
  });

  it('DeleteRequest{id "c1", exec_id "e1"}', () => {
    const expected = bytes([0x0a, 2, ...utf8('c1')], [0x12, 2, ...utf8('e1')]);
    expect(hex(DeleteRequest.encode({ id: 'c1', execId: 'e1' }))).toBe(hex(expected));
    expect(DeleteRequest.decode(expected)).toEqual({ id: 'c1', execId: 'e1' });
  });

  it('DeleteResponse always carries exited_at, as gogo nullable=false does', () => {
    const zero = bytes([0x08, 0x80, 0x92, 0xb8, 0xc3, 0x98, 0xfe, 0xff, 0xff, 0xff, 0x01]); // seconds -62135596800
    const expected = bytes([0x08, 0x92, 0x21], [0x1a, zero.length], zero); // pid 4242 = 0x1092 -> 92 21
    expect(hex(DeleteResponse.encode({ pid: 4242 }))).toBe(hex(expected));
    expect(DeleteResponse.decode(expected)).toEqual({ pid: 4242, exitStatus: 0, exitedAt: { seconds: -62135596800n, nanos: 0 } });
    expect(DeleteResponse.decode(new Uint8Array(0)).exitedAt).toEqual(GO_ZERO_TIME);
  });

  it('CreateTaskRequest with a rootfs mount, stdio, checkpoint and runc options', () => {
    const mount = bytes(
      [0x0a, 7, ...utf8('overlay')],
      [0x12, 7, ...utf8('overlay')],
      [0x22, 3, ...utf8('a=b')], // field 4 (options), repeated: one tag per element
      [0x22, 0], // an empty element is still written
    );
    const options = bytes([0x0a, 3, ...utf8('t/x')], [0x12, 2, 0x08, 0x01]);
    const expected = bytes(
      [0x0a, 2, ...utf8('c1')],
      [0x12, 2, ...utf8('/b')],
      [0x1a, mount.length],
      mount,
      [0x20, 1], // terminal
      [0x2a, 1, ...utf8('i')], // stdin (5)
      [0x32, 1, ...utf8('o')], // stdout (6)
      [0x3a, 1, ...utf8('e')], // stderr (7)
      [0x42, 2, ...utf8('/c')], // checkpoint (8)
      [0x4a, 2, ...utf8('/p')], // parent_checkpoint (9)
      [0x52, options.length], // options (10)
      options,
    );
    const value = {
      id: 'c1',
      bundle: '/b',
      rootfs: [{ type: 'overlay', source: 'overlay', target: '', options: ['a=b', ''] }],
      terminal: true,
      stdin: 'i',
      stdout: 'o',
      stderr: 'e',
      checkpoint: '/c',
      parentCheckpoint: '/p',
      options: { typeUrl: 't/x', value: new Uint8Array([8, 1]) },
    };
    expect(hex(CreateTaskRequest.encode(value))).toBe(hex(expected));
    expect(CreateTaskRequest.decode(expected)).toEqual(value);
  });
});

describe('golden bytes from protoc --encode (fixtures/protoc-golden.json)', () => {
  const cases = [
    ['kill', KillRequest, { id: 'c1', execId: '', signal: 9, all: true }],
    ['kill-exec', KillRequest, { id: 'probe-c1', execId: 'exec-7', signal: 15, all: false }],
    ['delete', DeleteRequest, { id: 'c1', execId: 'e1' }],
    ['delete-response', DeleteResponse, { pid: 4242, exitStatus: 137, exitedAt: { seconds: 1_700_000_000n, nanos: 123_456_789 } }],
    ['delete-response-go-zero-time', DeleteResponse, { pid: 4242, exitStatus: 0, exitedAt: { seconds: -62_135_596_800n, nanos: 0 } }],
    [
      'create',
      CreateTaskRequest,
      {
        id: 'c1',
        bundle: '/run/containerd/io.containerd.runtime.v2.task/default/c1',
        rootfs: [{ type: 'overlay', source: 'overlay', target: '', options: ['index=off', 'workdir=/w', 'upperdir=/u', 'lowerdir=/l'] }],
        terminal: false,
        stdin: '/fifo/in',
        stdout: '/fifo/out',
        stderr: '/fifo/err',
        checkpoint: '/var/lib/ferry/img',
        parentCheckpoint: '',
        options: { typeUrl: 'containerd.runc.v1.Options', value: new Uint8Array([0x08, 0x01]) },
      },
    ],
    ['create-response', CreateTaskResponse, { pid: 70000 }],
    [
      'state-response',
      StateResponse,
      {
        id: 'c1',
        bundle: '/b',
        pid: 4242,
        status: TaskStatus.RUNNING,
        stdin: '',
        stdout: '/o',
        stderr: '',
        terminal: true,
        exitStatus: 0,
        exitedAt: { seconds: -62_135_596_800n, nanos: 0 },
        execId: '',
      },
    ],
    ['wait-response', WaitResponse, { exitStatus: 143, exitedAt: { seconds: 1_700_000_001n, nanos: 0 } }],
    [
      'checkpoint',
      CheckpointTaskRequest,
      {
        id: 'c1',
        path: '/var/lib/ferry/ckpt',
        options: { typeUrl: 'containerd.runc.v1.CheckpointOptions', value: bytes([0x08, 0x01, 0x42, 0x08], utf8('/tmp/img')) },
      },
    ],
    ['connect-response', ConnectResponse, { shimPid: 100, taskPid: 4242, version: '2' }],
    ['shutdown', ShutdownRequest, { id: 'c1', now: true }],
  ] as const;

  it.each(cases)('%s decodes to the expected value and re-encodes byte for byte', (name, type, value) => {
    const golden = protocGolden(name);
    expect(type.decode(golden)).toEqual(value);
    // The union of message types makes `encode`'s parameter an intersection; each row pairs a type with its own value.
    expect(hex((type.encode as (v: object) => Uint8Array)(value))).toBe(hex(golden));
  });

  it.each(cases)('%s: a cut inside a field throws E_PROTO_TRUNCATED, a cut between fields decodes', (name, type) => {
    const golden = protocGolden(name);
    const boundaries = fieldBoundaries(golden);
    for (let cut = 0; cut < golden.length; cut++) {
      const part = golden.subarray(0, cut);
      if (boundaries.has(cut)) expect(() => type.decode(part)).not.toThrow();
      else expect(() => type.decode(part), `cut at ${cut}`).toThrow(code('E_PROTO_TRUNCATED'));
    }
  });
});

describe('decoding rules', () => {
  it('keeps unknown fields and re-emits them, so a newer peer’s fields survive', () => {
    const known = KillRequest.encode({ id: 'c1', signal: 9 });
    const unknown = new ProtoWriter().uint32Field(99, 7).stringField(100, 'future').fixed32Field(101, 1).fixed64Field(102, 2n).raw(unhex('cb06 08 01 cc06')).finish();
    const wire = bytes(known, unknown);
    const v = KillRequest.decode(wire);
    expect(v.signal).toBe(9);
    expect(hex(v.$unknown ?? new Uint8Array())).toBe(hex(unknown));
    expect(hex(KillRequest.encode(v))).toBe(hex(wire));
  });

  it('keeps unknown fields of nested messages too', () => {
    const mount = bytes(new ProtoWriter().stringField(1, 'bind').finish(), new ProtoWriter().uint32Field(9, 1).finish());
    const wire = new ProtoWriter().stringField(1, 'c1').bytesField(3, mount).finish();
    const v = CreateTaskRequest.decode(wire);
    expect(v.rootfs[0]?.$unknown).toBeDefined();
    expect(hex(CreateTaskRequest.encode(v))).toBe(hex(wire));
  });

  it('rejects a known field with the wrong wire type (as gogo’s generated Unmarshal does)', () => {
    const wire = new ProtoWriter().stringField(3, 'nine').finish(); // signal is a varint
    expect(() => KillRequest.decode(wire)).toThrow(code('E_PROTO_WIRETYPE'));
    try {
      KillRequest.decode(wire);
    } catch (e: unknown) {
      expect(e).toMatchObject({ details: { typeName: 'containerd.task.v2.KillRequest', field: 'signal' } });
    }
  });

  it('lets the last scalar win and merges repeated occurrences of a sub-message', () => {
    const wire = new ProtoWriter()
      .uint32Field(3, 15)
      .uint32Field(3, 9)
      .finish();
    expect(KillRequest.decode(wire).signal).toBe(9);
    const a = new ProtoWriter().stringField(1, 'type.a').finish();
    const b = new ProtoWriter().bytesField(2, new Uint8Array([1])).finish();
    const merged = CheckpointTaskRequest.decode(new ProtoWriter().bytesField(3, a).bytesField(3, b).finish());
    expect(merged.options).toEqual({ typeUrl: 'type.a', value: new Uint8Array([1]) });
  });

  it('truncates uint32 varints to 32 bits like Go, and reads any non-zero bool as true', () => {
    const wire = new ProtoWriter().uint64Field(3, (1n << 32n) + 9n).uint64Field(4, 1n << 40n).finish();
    expect(KillRequest.decode(wire)).toMatchObject({ signal: 9, all: true });
  });

  it('reports nested truncation from the inner type', () => {
    const wire = unhex('1a 05 0a 09 6f 76 65'); // rootfs { type: length 9 but 3 bytes }
    expect(() => CreateTaskRequest.decode(wire)).toThrow(code('E_PROTO_TRUNCATED'));
  });

  it('decodes PidsResponse and UpdateTaskRequest (repeated messages, a map)', () => {
    const pids = PidsResponse.encode({ processes: [{ pid: 1 }, { pid: 2, info: { typeUrl: 'x', value: new Uint8Array([1]) } }] });
    expect(PidsResponse.decode(pids).processes.map((p) => p.pid)).toEqual([1, 2]);
    const upd = UpdateTaskRequest.encode({ id: 'c1', annotations: [{ key: 'k', value: 'v' }] });
    expect(hex(upd)).toBe('0a026331' + '1a06' + '0a016b' + '120176');
    expect(UpdateTaskRequest.decode(upd).annotations).toEqual([{ key: 'k', value: 'v' }]);
  });
});

describe('encoding rules', () => {
  it('refuses values that do not fit the field type', () => {
    expect(() => KillRequest.encode({ signal: -1 })).toThrow(code('E_PROTO_VALUE_RANGE'));
    expect(() => KillRequest.encode({ signal: 2 ** 32 })).toThrow(code('E_PROTO_VALUE_RANGE'));
    expect(() => KillRequest.encode({ signal: 'x' } as unknown as { signal: number })).toThrow(code('E_PROTO_VALUE_RANGE'));
  });

  it('create() fills defaults without going through bytes', () => {
    expect(StateResponse.create({ id: 'c1', status: TaskStatus.STOPPED, exitStatus: 137 })).toEqual({
      id: 'c1',
      bundle: '',
      pid: 0,
      status: 3,
      stdin: '',
      stdout: '',
      stderr: '',
      terminal: false,
      exitStatus: 137,
      exitedAt: GO_ZERO_TIME,
      execId: '',
    });
  });

  it('keeps an unknown enum value, as proto3 requires', () => {
    expect(StateResponse.decode(StateResponse.encode({ status: 42 })).status).toBe(42);
  });
});

describe('round trips (fast-check)', () => {
  const str = fc.string({ unit: 'grapheme', maxLength: 40 });
  const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
  const ts = fc.record({ seconds: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), nanos: fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }) });
  const anyMsg = fc.record({ typeUrl: str, value: fc.uint8Array({ maxLength: 32 }) });

  it('KillRequest', () => {
    fc.assert(
      fc.property(fc.record({ id: str, execId: str, signal: u32, all: fc.boolean() }), (v) => {
        expect(KillRequest.decode(KillRequest.encode(v))).toEqual(v);
      }),
    );
  });

  it('CreateTaskRequest', () => {
    const mount = fc.record({ type: str, source: str, target: str, options: fc.array(str, { maxLength: 5 }) });
    const create = fc.record({
      id: str,
      bundle: str,
      rootfs: fc.array(mount, { maxLength: 3 }),
      terminal: fc.boolean(),
      stdin: str,
      stdout: str,
      stderr: str,
      checkpoint: str,
      parentCheckpoint: str,
      options: fc.option(anyMsg, { nil: undefined }),
    });
    fc.assert(
      fc.property(create, (v) => {
        expect(CreateTaskRequest.decode(CreateTaskRequest.encode(v))).toEqual(v);
      }),
    );
  });

  it('StateResponse, DeleteResponse and WaitResponse', () => {
    fc.assert(
      fc.property(
        fc.record({
          id: str,
          bundle: str,
          pid: u32,
          status: fc.integer({ min: 0, max: 5 }),
          stdin: str,
          stdout: str,
          stderr: str,
          terminal: fc.boolean(),
          exitStatus: u32,
          exitedAt: ts,
          execId: str,
        }),
        (v) => {
          expect(StateResponse.decode(StateResponse.encode(v))).toEqual(v);
          const d = { pid: v.pid, exitStatus: v.exitStatus, exitedAt: v.exitedAt };
          expect(DeleteResponse.decode(DeleteResponse.encode(d))).toEqual(d);
          const w = { exitStatus: v.exitStatus, exitedAt: v.exitedAt };
          expect(WaitResponse.decode(WaitResponse.encode(w))).toEqual(w);
        },
      ),
    );
  });

  it('decoding arbitrary bytes either succeeds or throws a typed ShimError, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (buf) => {
        for (const t of [KillRequest, CreateTaskRequest, StateResponse]) {
          try {
            t.decode(buf);
          } catch (e: unknown) {
            expect(e).toMatchObject({ name: 'ShimError', code: expect.stringMatching(/^E_PROTO_/) });
          }
        }
      }),
    );
  });
});

describe('Task service table', () => {
  it('lists the 17 methods of containerd 1.6 runtime/v2/task/shim.proto, in order', () => {
    expect(TASK_SERVICE).toBe('containerd.task.v2.Task');
    expect(Object.keys(TaskMethods)).toEqual([
      'State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill',
      'Exec', 'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown',
    ]);
    expect(isTaskMethod('Kill')).toBe(true);
    expect(isTaskMethod('toString')).toBe(false);
  });

  it('decodeTaskCall types the payload by method', () => {
    const call = decodeTaskCall(TASK_SERVICE, 'Kill', protocGolden('kill'));
    expect(call).toEqual({ kind: 'task', method: 'Kill', request: { id: 'c1', execId: '', signal: 9, all: true } });
    if (call.kind === 'task' && call.method === 'Kill') expect(call.request.signal).toBe(9);
    expect(decodeTaskCall(TASK_SERVICE, 'Delete', protocGolden('delete'))).toMatchObject({ method: 'Delete', request: { execId: 'e1' } });
  });

  it('decodeTaskCall leaves other services and unknown methods alone', () => {
    expect(decodeTaskCall('containerd.services.events.ttrpc.v1.Events', 'Forward', unhex('ff'))).toEqual({
      kind: 'other',
      service: 'containerd.services.events.ttrpc.v1.Events',
      method: 'Forward',
    });
    expect(decodeTaskCall(TASK_SERVICE, 'Frobnicate', new Uint8Array())).toMatchObject({ kind: 'other' });
  });

  it('decodeTaskCall throws on a malformed payload of a known method', () => {
    expect(() => decodeTaskCall(TASK_SERVICE, 'Kill', unhex('0a05'))).toThrow(code('E_PROTO_TRUNCATED'));
  });
});

describe('Timestamp helpers', () => {
  it('convert to and from Date at millisecond precision', () => {
    const d = new Date('2026-11-22T10:00:00.123Z');
    expect(dateToTimestamp(d)).toEqual({ seconds: BigInt(Math.floor(d.getTime() / 1000)), nanos: 123_000_000 });
    expect(timestampToDate(dateToTimestamp(d)).toISOString()).toBe(d.toISOString());
    expect(timestampToDate(GO_ZERO_TIME).toISOString()).toBe('0001-01-01T00:00:00.000Z');
  });
});
