import { describe, expect, it } from 'vitest';
import {
  RUNC_OPTIONS_TYPE_URL, RUNTIME_OPTIONS_TYPE_URL, RuncOptions, RuntimeOptions, rewriteRuntimeOptions,
} from '../../../shim/proto/runc-options.js';
import { hex, unhex } from './helpers.js';

// Golden bytes from `protoc --encode` (protobuf 3.21, Debian protobuf-compiler) on containerd 1.6.20's
// runtime/v2/runc/options/oci.proto and pkg/runtimeoptions/v1/api.proto (gogoproto lines stripped):
//   printf '%s' 'TEXT' | protoc -Ip --encode=containerd.runc.v1.Options oci.proto | xxd -p
const GOLDEN = {
  overridesOnly: {
    text: 'binary_name: "/usr/sbin/runc" root: "/run/ferry/runc"',
    hex: '320e2f7573722f7362696e2f72756e633a0f2f72756e2f66657272792f72756e63',
  },
  full: {
    text: 'no_pivot_root: true shim_cgroup: "/ferry" io_uid: 1000 io_gid: 1000 binary_name: "runc" systemd_cgroup: true criu_image_path: "/img" criu_work_path: "/work"',
    hex: '08011a062f666572727920e80728e807320472756e63480152042f696d675a052f776f726b',
  },
  fullOverridden: {
    hex: '08011a062f666572727920e80728e807320e2f7573722f7362696e2f72756e633a0f2f72756e2f66657272792f72756e63480152042f696d675a052f776f726b',
  },
  runtimeOptions: {
    text: 'type_url: "io.containerd.ferry.v1" config_path: "/etc/ferry/runtime.toml"',
    hex: '0a16696f2e636f6e7461696e6572642e66657272792e763112172f6574632f66657272792f72756e74696d652e746f6d6c',
  },
};

const overrides = { runcBinary: '/usr/sbin/runc', runcRoot: '/run/ferry/runc' };
const none = { runcBinary: null, runcRoot: null };

describe('containerd.runc.v1.Options', () => {
  it('encodes and decodes protoc’s bytes', () => {
    expect(hex(RuncOptions.encode({ binaryName: '/usr/sbin/runc', root: '/run/ferry/runc' }))).toBe(GOLDEN.overridesOnly.hex);
    const full = RuncOptions.decode(unhex(GOLDEN.full.hex));
    expect(full).toMatchObject({
      noPivotRoot: true, noNewKeyring: false, shimCgroup: '/ferry', ioUid: 1000, ioGid: 1000, binaryName: 'runc', root: '',
      criuPath: '', systemdCgroup: true, criuImagePath: '/img', criuWorkPath: '/work',
    });
    expect(hex(RuncOptions.encode(full))).toBe(GOLDEN.full.hex);
  });

  it('runtimeoptions.v1.Options matches protoc', () => {
    const v = RuntimeOptions.decode(unhex(GOLDEN.runtimeOptions.hex));
    expect(v).toMatchObject({ typeUrl: 'io.containerd.ferry.v1', configPath: '/etc/ferry/runtime.toml' });
    expect(hex(RuntimeOptions.encode(v))).toBe(GOLDEN.runtimeOptions.hex);
  });
});

describe('rewriteRuntimeOptions', () => {
  it('replaces CRI’s runtimeoptions by runc Options with the overrides', () => {
    const out = rewriteRuntimeOptions({ typeUrl: RUNTIME_OPTIONS_TYPE_URL, value: unhex(GOLDEN.runtimeOptions.hex) }, overrides);
    expect(out?.typeUrl).toBe(RUNC_OPTIONS_TYPE_URL);
    expect(hex(out!.value)).toBe(GOLDEN.overridesOnly.hex);
  });

  it('replaces runtimeoptions by empty runc Options when nothing is configured (runc-v2 cannot read runtimeoptions)', () => {
    const out = rewriteRuntimeOptions({ typeUrl: RUNTIME_OPTIONS_TYPE_URL, value: new Uint8Array(0) }, none);
    expect(out).toEqual({ typeUrl: RUNC_OPTIONS_TYPE_URL, value: new Uint8Array(0) });
  });

  it('keeps every other field of incoming runc Options, byte-exact with protoc', () => {
    const out = rewriteRuntimeOptions({ typeUrl: RUNC_OPTIONS_TYPE_URL, value: unhex(GOLDEN.full.hex) }, overrides);
    expect(out?.typeUrl).toBe(RUNC_OPTIONS_TYPE_URL);
    expect(hex(out!.value)).toBe(GOLDEN.fullOverridden.hex);
  });

  it('changes nothing (undefined) when runc Options already fit or nothing is configured', () => {
    expect(rewriteRuntimeOptions({ typeUrl: RUNC_OPTIONS_TYPE_URL, value: unhex(GOLDEN.full.hex) }, none)).toBeUndefined();
    expect(rewriteRuntimeOptions({ typeUrl: RUNC_OPTIONS_TYPE_URL, value: unhex(GOLDEN.overridesOnly.hex) }, overrides)).toBeUndefined();
    expect(rewriteRuntimeOptions(undefined, none)).toBeUndefined();
  });

  it('absent options get runc Options when something is configured; the prefixed type URL is kept', () => {
    expect(hex(rewriteRuntimeOptions(undefined, overrides)!.value)).toBe(GOLDEN.overridesOnly.hex);
    const prefixed = `type.googleapis.com/${RUNC_OPTIONS_TYPE_URL}`;
    expect(rewriteRuntimeOptions({ typeUrl: prefixed, value: new Uint8Array(0) }, { runcBinary: 'x', runcRoot: null })?.typeUrl).toBe(prefixed);
  });
});
