// The runtime options runc-v2 accepts (containerd.runc.v1.Options) and the one CRI sends to custom runtimes (runtimeoptions.v1.Options).

import { defineMessage, field, type Value } from './schema.js';
import type { AnyValue } from './well-known.js';

// Source: containerd 1.6.20 (Debian golang-github-containerd-containerd-dev 1.6.20~ds1-1+deb12u3),
// runtime/v2/runc/options/oci.proto and pkg/runtimeoptions/v1/api.proto.

/**
 * `Any.type_url` of runc-v2's options. containerd's typeurl registry uses the bare proto name (no
 * `type.googleapis.com/` prefix), and runc-v2 type-asserts the decoded value to this message
 * (`runtime/v2/runc/container.go NewContainer`, `manager_linux.go Start`).
 */
export const RUNC_OPTIONS_TYPE_URL = 'containerd.runc.v1.Options';

/**
 * `Any.type_url` that CRI puts on options for a runtime type other than `io.containerd.runc.v1/v2`
 * (`getRuntimeOptionsType` in pkg/cri). runc-v2 cannot unmarshal it.
 */
export const RUNTIME_OPTIONS_TYPE_URL = 'runtimeoptions.v1.Options';

/** `containerd.runc.v1.Options` (runtime/v2/runc/options/oci.proto). */
export const RuncOptions = defineMessage('containerd.runc.v1.Options', {
  noPivotRoot: field.bool(1),
  noNewKeyring: field.bool(2),
  shimCgroup: field.string(3),
  ioUid: field.uint32(4),
  ioGid: field.uint32(5),
  /** The runc binary runc-v2 runs (default `runc` on PATH). */
  binaryName: field.string(6),
  /** runc's `--root` (default `/run/containerd/runc/<namespace>`). */
  root: field.string(7),
  criuPath: field.string(8),
  systemdCgroup: field.bool(9),
  criuImagePath: field.string(10),
  criuWorkPath: field.string(11),
});
/** A decoded `containerd.runc.v1.Options`. */
export type RuncOptionsValue = Value<typeof RuncOptions.fields>;

/** `runtimeoptions.v1.Options` (pkg/runtimeoptions/v1/api.proto): what CRI sends for a custom runtime type. */
export const RuntimeOptions = defineMessage('runtimeoptions.v1.Options', {
  typeUrl: field.string(1),
  configPath: field.string(2),
});

/** What the shim's config says runc-v2 should use; `null` leaves runc-v2's own default. */
export interface RuncOverrides {
  readonly runcBinary: string | null;
  readonly runcRoot: string | null;
}

/** Whether a type URL names runc-v2's options, with or without the `type.googleapis.com/` prefix. */
export const isRuncOptionsUrl = (url: string): boolean => url === RUNC_OPTIONS_TYPE_URL || url.endsWith(`/${RUNC_OPTIONS_TYPE_URL}`);

/**
 * The options runc-v2 should get in place of `incoming` (a Create request's `options`, or the Any
 * containerd writes to `start`'s stdin). Incoming runc Options keep every field except the overridden
 * ones; anything else (CRI's `runtimeoptions.v1.Options`, an unknown type) is replaced by fresh runc
 * Options. Returns `undefined` when nothing needs to change, so the caller forwards the original bytes.
 * Throws `E_PROTO_*` when incoming runc Options do not decode.
 */
export function rewriteRuntimeOptions(incoming: AnyValue | undefined, o: RuncOverrides): AnyValue | undefined {
  const overrides = { ...(o.runcBinary === null ? {} : { binaryName: o.runcBinary }), ...(o.runcRoot === null ? {} : { root: o.runcRoot }) };
  const hasOverrides = Object.keys(overrides).length > 0;
  if (incoming === undefined || incoming.typeUrl === '') {
    return hasOverrides ? { typeUrl: RUNC_OPTIONS_TYPE_URL, value: RuncOptions.encode(overrides) } : undefined;
  }
  if (isRuncOptionsUrl(incoming.typeUrl)) {
    if (!hasOverrides) return undefined;
    const current = RuncOptions.decode(incoming.value);
    if (Object.entries(overrides).every(([k, v]) => current[k as keyof typeof overrides] === v)) return undefined;
    return { typeUrl: incoming.typeUrl, value: RuncOptions.encode({ ...current, ...overrides }) };
  }
  return { typeUrl: RUNC_OPTIONS_TYPE_URL, value: RuncOptions.encode(overrides) };
}
