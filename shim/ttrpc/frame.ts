// ttrpc framing: a 10-byte header and a payload, encoded whole and decoded incrementally from a byte stream.

import { FrameTooLargeError, ShimError } from './errors.js';

// Source: ttrpc 1.1.1 channel.go (messageHeaderLength, messageLengthMax, messageType*) and, for data
// frames and flags, ttrpc 1.2+ channel.go. containerd 1.6.20 pins ttrpc 1.1.1.

/** Bytes in a frame header: u32 BE length, u32 BE stream id, u8 type, u8 flags. */
export const FRAME_HEADER_LENGTH = 10;

/** ttrpc's maximum payload (`messageLengthMax = 4 << 20`); larger frames are refused, never truncated. */
export const MESSAGE_LENGTH_MAX = 4 << 20;

/** Frame types. ttrpc 1.1.1 knows 1 and 2 and ignores others; streaming (1.2+) adds data frames. */
export const FrameType = {
  REQUEST: 1,
  RESPONSE: 2,
  DATA: 3,
} as const;

/** Header flags, used by ttrpc 1.2+ streams (unary requests there carry REMOTE_CLOSED). 1.1.1 sends 0. */
export const FrameFlag = {
  REMOTE_CLOSED: 0x1,
  REMOTE_OPEN: 0x2,
  NO_DATA: 0x4,
} as const;

/** One ttrpc message. Client-initiated stream ids are odd (1, 3, 5…), one per call. */
export interface Frame {
  readonly streamId: number;
  /** A {@link FrameType}; unknown values are carried, not rejected, as ttrpc's server ignores them. */
  readonly type: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}

function isUint(v: number, max: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= max;
}

/** Encodes a frame. Throws `E_TTRPC_FRAME_TOO_LARGE` above `maxLength`, `E_TTRPC_FRAME_INVALID` on out-of-range header fields. */
export function encodeFrame(frame: Frame, maxLength: number = MESSAGE_LENGTH_MAX): Uint8Array {
  const { streamId, type, flags, payload } = frame;
  if (!isUint(streamId, 0xffff_ffff) || !isUint(type, 0xff) || !isUint(flags, 0xff)) {
    throw new ShimError('E_TTRPC_FRAME_INVALID', `invalid ttrpc frame header (stream ${streamId}, type ${type}, flags ${flags})`, { streamId, type, flags });
  }
  if (payload.length > maxLength) {
    throw new ShimError('E_TTRPC_FRAME_TOO_LARGE', `ttrpc payload of ${payload.length} bytes exceeds the ${maxLength}-byte maximum`, {
      streamId,
      length: payload.length,
      max: maxLength,
    });
  }
  const out = new Uint8Array(FRAME_HEADER_LENGTH + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(4, streamId);
  out[8] = type;
  out[9] = flags;
  out.set(payload, FRAME_HEADER_LENGTH);
  return out;
}

interface Header {
  readonly length: number;
  readonly streamId: number;
  readonly type: number;
  readonly flags: number;
}

function parseHeader(h: Uint8Array): Header {
  const view = new DataView(h.buffer, h.byteOffset, FRAME_HEADER_LENGTH);
  return { length: view.getUint32(0), streamId: view.getUint32(4), type: view.getUint8(8), flags: view.getUint8(9) };
}

/**
 * Decodes exactly one complete frame. Throws `E_TTRPC_TRUNCATED` if `bytes` ends early,
 * `E_TTRPC_FRAME_TOO_LARGE` above `maxLength`, and `E_TTRPC_FRAME_INVALID` if bytes follow the frame.
 */
export function decodeFrame(bytes: Uint8Array, maxLength: number = MESSAGE_LENGTH_MAX): Frame {
  if (bytes.length < FRAME_HEADER_LENGTH) {
    throw new ShimError('E_TTRPC_TRUNCATED', `ttrpc frame header needs ${FRAME_HEADER_LENGTH} bytes, got ${bytes.length}`, { length: bytes.length });
  }
  const h = parseHeader(bytes);
  if (h.length > maxLength) throw new FrameTooLargeError(h, maxLength, []);
  const total = FRAME_HEADER_LENGTH + h.length;
  if (bytes.length < total) {
    throw new ShimError('E_TTRPC_TRUNCATED', `ttrpc frame needs ${total} bytes, got ${bytes.length}`, { streamId: h.streamId, expected: total, length: bytes.length });
  }
  if (bytes.length > total) {
    throw new ShimError('E_TTRPC_FRAME_INVALID', `${bytes.length - total} bytes after the ttrpc frame`, { streamId: h.streamId, trailing: bytes.length - total });
  }
  return { streamId: h.streamId, type: h.type, flags: h.flags, payload: bytes.slice(FRAME_HEADER_LENGTH) };
}

// HEADER: waiting for 10 bytes; PAYLOAD: waiting for `header.length`; DISCARD: skipping an oversized payload.
type State = 'header' | 'payload' | 'discard';

/**
 * Incremental frame decoder for a byte stream (ws `receiver.js` style): chunk boundaries never matter,
 * a header may be split across pushes and one push may complete many frames.
 *
 * Payloads are fresh copies. Pushed chunks are referenced until consumed, so callers must not reuse
 * them (Node's socket `data` chunks are never reused). Memory is bounded by one maximal frame plus
 * the last chunk: an oversized payload is skipped as it arrives, not buffered.
 */
export class FrameDecoder {
  private readonly maxLength: number;
  private chunks: Uint8Array[] = [];
  private head = 0; // read offset into chunks[0]
  private buffered = 0;
  private state: State = 'header';
  private header: Header | undefined;
  private discardLeft = 0;

  /** @param opts.maxLength largest accepted payload; defaults to ttrpc's {@link MESSAGE_LENGTH_MAX}. */
  constructor(opts: { maxLength?: number } = {}) {
    this.maxLength = opts.maxLength ?? MESSAGE_LENGTH_MAX;
  }

  /** Bytes received but not yet returned as part of a frame. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Adds bytes and returns every frame they complete, in order.
   *
   * On a header whose length exceeds the maximum it throws a {@link FrameTooLargeError} that carries the
   * frames completed before it (`decoded`). The decoder stays usable: like ttrpc's `channel.recv`, it
   * skips that payload, and the next `push` (an empty one will do) continues with the following frame.
   */
  push(chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Frame[] = [];
    for (;;) {
      switch (this.state) {
        case 'discard': {
          const n = Math.min(this.buffered, this.discardLeft);
          this.drop(n);
          this.discardLeft -= n;
          if (this.discardLeft > 0) return out;
          this.state = 'header';
          break;
        }
        case 'header': {
          if (this.buffered < FRAME_HEADER_LENGTH) return out;
          const h = parseHeader(this.take(FRAME_HEADER_LENGTH));
          if (h.length > this.maxLength) {
            this.state = 'discard';
            this.discardLeft = h.length;
            throw new FrameTooLargeError(h, this.maxLength, out);
          }
          this.header = h;
          this.state = 'payload';
          break;
        }
        case 'payload': {
          const h = this.header;
          if (h === undefined) throw new Error('FrameDecoder: payload state without a header'); // unreachable
          if (this.buffered < h.length) return out;
          out.push({ streamId: h.streamId, type: h.type, flags: h.flags, payload: this.take(h.length) });
          this.header = undefined;
          this.state = 'header';
          break;
        }
      }
    }
  }

  /**
   * Declares the end of the stream. Throws `E_TTRPC_TRUNCATED` if it ended inside a frame: a peer that
   * closes mid-frame has lost a message, and the caller should know which stream.
   */
  end(): void {
    if (this.buffered === 0 && this.state === 'header') return;
    throw new ShimError('E_TTRPC_TRUNCATED', `ttrpc stream ended inside a frame (${this.buffered} bytes buffered)`, {
      buffered: this.buffered,
      ...(this.header === undefined ? {} : { streamId: this.header.streamId, expected: this.header.length }),
    });
  }

  // Copies n buffered bytes out (n <= buffered).
  private take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      if (c === undefined) throw new Error('FrameDecoder: buffer underrun'); // unreachable: callers check `buffered`
      const k = Math.min(n - at, c.length - this.head);
      out.set(c.subarray(this.head, this.head + k), at);
      at += k;
      this.advance(c, k);
    }
    return out;
  }

  // Drops n buffered bytes (n <= buffered) without copying.
  private drop(n: number): void {
    while (n > 0) {
      const c = this.chunks[0];
      if (c === undefined) throw new Error('FrameDecoder: buffer underrun'); // unreachable
      const k = Math.min(n, c.length - this.head);
      n -= k;
      this.advance(c, k);
    }
  }

  private advance(c: Uint8Array, k: number): void {
    this.head += k;
    this.buffered -= k;
    if (this.head === c.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
