// Protocol version and capability names exchanged in the handshake.

/** Major changes break compatibility; peers with a different major are refused. */
export const PROTOCOL_VERSION = { major: 1, minor: 0 } as const;

/** Largest frame accepted after authentication: one page chunk plus envelope. */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024 + 64 * 1024;
/** Largest frame accepted before authentication: a handshake is tiny. */
export const MAX_PREAUTH_FRAME_BYTES = 16 * 1024;
/** Bulk data is cut into chunks of at most this size. */
export const CHUNK_BYTES = 1024 * 1024;

/** What a host can do, measured by the agent's probe at start. */
export interface Capabilities {
  criuVersion: string | null;
  /** CRIU ≥ 4.2: older versions cannot dump inet sockets on kernels ≥ 6.16. */
  criuUsable: boolean;
  kernel: string;
  /** Kernel soft-dirty tracking (CRIU pre-dump). */
  softDirty: boolean;
  /** userfaultfd available (lazy pages, Ferry's dirty tracker). */
  uffd: boolean;
  dockerVersion: string | null;
  runcVersion: string | null;
}
