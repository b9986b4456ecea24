import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  FRAME_HEADER_LENGTH,
  FrameDecoder,
  FrameFlag,
  FrameType,
  MESSAGE_LENGTH_MAX,
  decodeFrame,
  encodeFrame,
  type Frame,
} from '../../../shim/ttrpc/frame.js';
import { FrameTooLargeError, isShimError } from '../../../shim/ttrpc/errors.js';
import { bytes, hex, unhex } from './helpers.js';

const code = (c: string) => expect.objectContaining({ code: c });

const f = (streamId: number, payload: string, type: number = FrameType.REQUEST, flags = 0): Frame => ({
  streamId,
  type,
  flags,
  payload: unhex(payload),
});

const concat = (parts: readonly Uint8Array[]): Uint8Array => bytes(...parts);

// Feeds `wire` to a fresh decoder cut at `cuts` (ascending offsets) and returns every frame.
function decodeSplit(wire: Uint8Array, cuts: readonly number[], opts: { maxLength?: number } = {}): Frame[] {
  const d = new FrameDecoder(opts);
  const out: Frame[] = [];
  let at = 0;
  for (const c of [...cuts, wire.length]) {
    out.push(...d.push(wire.subarray(at, c)));
    at = c;
  }
  d.end();
  return out;
}

describe('encodeFrame', () => {
  it('writes the 10-byte header big-endian (ttrpc channel.go)', () => {
    const wire = encodeFrame(f(0x01020304, 'aabbcc', FrameType.RESPONSE, FrameFlag.REMOTE_CLOSED));
    // length 3 | stream 0x01020304 | type 2 | flags 1 | payload
    expect(hex(wire)).toBe('00000003' + '01020304' + '02' + '01' + 'aabbcc');
    expect(FRAME_HEADER_LENGTH).toBe(10);
    expect(MESSAGE_LENGTH_MAX).toBe(4 * 1024 * 1024);
  });

  it('matches the frame Appendix B’s probe built for a refused Kill', () => {
    // frame(sid=5, type 2, lenField(1, varField(1, 9) + lenField(2, "no")))
    const payload = unhex('0a06 0809 12026e6f');
    expect(hex(encodeFrame({ streamId: 5, type: 2, flags: 0, payload }))).toBe('00000008' + '00000005' + '0200' + hex(payload));
  });

  it('accepts exactly the maximum and rejects one byte more, without truncating', () => {
    const max = new Uint8Array(MESSAGE_LENGTH_MAX);
    expect(encodeFrame({ streamId: 1, type: 1, flags: 0, payload: max }).length).toBe(MESSAGE_LENGTH_MAX + 10);
    expect(() => encodeFrame({ streamId: 1, type: 1, flags: 0, payload: new Uint8Array(MESSAGE_LENGTH_MAX + 1) })).toThrow(
      code('E_TTRPC_FRAME_TOO_LARGE'),
    );
    expect(() => encodeFrame(f(1, '0102'), 1)).toThrow(code('E_TTRPC_FRAME_TOO_LARGE'));
  });

  it.each([
    ['stream id -1', { streamId: -1 }],
    ['stream id 2^32', { streamId: 2 ** 32 }],
    ['type 256', { type: 256 }],
    ['flags 1.5', { flags: 1.5 }],
  ])('rejects %s with E_TTRPC_FRAME_INVALID', (_n, patch) => {
    expect(() => encodeFrame({ ...f(1, ''), ...patch })).toThrow(code('E_TTRPC_FRAME_INVALID'));
  });
});

describe('decodeFrame (one complete frame)', () => {
  const wire = encodeFrame(f(3, '0a0263311809'));

  it('round-trips', () => {
    expect(decodeFrame(wire)).toEqual(f(3, '0a0263311809'));
  });

  it('throws E_TTRPC_TRUNCATED at every cut', () => {
    for (let cut = 0; cut < wire.length; cut++) {
      expect(() => decodeFrame(wire.subarray(0, cut)), `cut at ${cut}`).toThrow(code('E_TTRPC_TRUNCATED'));
    }
  });

  it('rejects trailing bytes and oversize headers', () => {
    expect(() => decodeFrame(concat([wire, unhex('00')]))).toThrow(code('E_TTRPC_FRAME_INVALID'));
    expect(() => decodeFrame(unhex('00400001 00000001 0100'))).toThrow(code('E_TTRPC_FRAME_TOO_LARGE'));
  });
});

describe('FrameDecoder', () => {
  const frames = [f(1, '0a02'), f(3, ''), f(5, '0102030405060708090a0b0c', FrameType.DATA, FrameFlag.REMOTE_CLOSED | FrameFlag.NO_DATA)];
  const wire = concat(frames.map((x) => encodeFrame(x)));

  it('decodes many frames from one chunk', () => {
    expect(new FrameDecoder().push(wire)).toEqual(frames);
  });

  it('decodes the same frames whatever the single split point', () => {
    for (let cut = 0; cut <= wire.length; cut++) expect(decodeSplit(wire, [cut]), `split at ${cut}`).toEqual(frames);
  });

  it('decodes the same frames for every pair of split points', () => {
    for (let a = 0; a <= wire.length; a++) {
      for (let b = a; b <= wire.length; b++) expect(decodeSplit(wire, [a, b])).toEqual(frames);
    }
  });

  it('decodes one byte at a time, returning each frame on its last byte', () => {
    const d = new FrameDecoder();
    const seen: Array<[number, Frame]> = [];
    for (let i = 0; i < wire.length; i++) for (const fr of d.push(wire.subarray(i, i + 1))) seen.push([i, fr]);
    expect(seen.map(([, fr]) => fr)).toEqual(frames);
    expect(seen.map(([i]) => i)).toEqual([11, 21, 43]);
    expect(d.bufferedBytes).toBe(0);
  });

  it('returns payload copies that do not alias the pushed chunk', () => {
    const chunk = encodeFrame(f(1, 'aabb'));
    const [got] = new FrameDecoder().push(chunk);
    chunk[10] = 0;
    expect(hex(got?.payload ?? new Uint8Array())).toBe('aabb');
  });

  it('end() throws E_TTRPC_TRUNCATED inside a header or a payload, and not between frames', () => {
    for (let cut = 0; cut <= wire.length; cut++) {
      const d = new FrameDecoder();
      d.push(wire.subarray(0, cut));
      const atBoundary = [0, 12, 22, wire.length].includes(cut);
      if (atBoundary) expect(() => d.end()).not.toThrow();
      else expect(() => d.end(), `cut at ${cut}`).toThrow(code('E_TTRPC_TRUNCATED'));
    }
  });

  describe('oversized frames', () => {
    const big = { streamId: 9, type: FrameType.REQUEST, flags: 0, payload: new Uint8Array(100).fill(0xee) };
    const wire2 = concat([encodeFrame(f(1, 'aa')), encodeFrame(big), encodeFrame(f(11, 'bb'))]);

    it('throws FrameTooLargeError carrying the stream, the length and the frames before it', () => {
      const d = new FrameDecoder({ maxLength: 64 });
      let err: unknown;
      try {
        d.push(wire2);
      } catch (e: unknown) {
        err = e;
      }
      expect(err).toBeInstanceOf(FrameTooLargeError);
      expect(isShimError(err, 'E_TTRPC_FRAME_TOO_LARGE')).toBe(true);
      expect(err).toMatchObject({ streamId: 9, length: 100, frameType: 1, decoded: [f(1, 'aa')] });
      // Like ttrpc's channel.recv, the payload is skipped and the connection goes on.
      expect(d.push(new Uint8Array(0))).toEqual([f(11, 'bb')]);
      expect(() => d.end()).not.toThrow();
    });

    it('skips the payload across any chunking and never buffers it', () => {
      for (let cut = 0; cut <= wire2.length; cut++) {
        const d = new FrameDecoder({ maxLength: 64 });
        const out: Frame[] = [];
        let errors = 0;
        for (const part of [wire2.subarray(0, cut), wire2.subarray(cut), new Uint8Array(0)]) {
          try {
            out.push(...d.push(part));
          } catch (e: unknown) {
            if (!(e instanceof FrameTooLargeError)) throw e;
            errors++;
            out.push(...e.decoded);
          }
          expect(d.bufferedBytes).toBeLessThanOrEqual(Math.max(part.length, 12));
        }
        expect(errors, `split at ${cut}`).toBe(1);
        expect(out).toEqual([f(1, 'aa'), f(11, 'bb')]);
      }
    });

    it('rejects a header just over ttrpc’s 4 MiB limit before any payload arrives', () => {
      const header = unhex('00400001 00000007 0100'); // 4 MiB + 1
      expect(() => new FrameDecoder().push(header)).toThrow(code('E_TTRPC_FRAME_TOO_LARGE'));
      const atMax = unhex('00400000 00000007 0100');
      const d = new FrameDecoder();
      expect(d.push(atMax)).toEqual([]);
      expect(d.push(new Uint8Array(MESSAGE_LENGTH_MAX))[0]?.payload.length).toBe(MESSAGE_LENGTH_MAX);
    });
  });

  it('round-trips random frames under random chunking (fast-check)', () => {
    const frame = fc.record({
      streamId: fc.integer({ min: 0, max: 0xffff_ffff }),
      type: fc.integer({ min: 0, max: 255 }),
      flags: fc.integer({ min: 0, max: 255 }),
      payload: fc.uint8Array({ maxLength: 300 }),
    });
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (fs, rawCuts) => {
        const w = concat(fs.map((x) => encodeFrame(x)));
        const cuts = [...new Set(rawCuts.map((c) => c % (w.length + 1)))].sort((a, b) => a - b);
        expect(decodeSplit(w, cuts)).toEqual(fs);
      }),
    );
  });
});
