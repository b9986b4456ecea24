import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeFrame, encodeFrame, MAX_FRAME_BYTES, type Frame } from '../../../src/protocol/index.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('codec golden bytes', () => {
  // Pinned: a change here is a wire-format change and needs a protocol version bump.
  it('encodes a request as plain msgpack map', () => {
    const f: Frame = { t: 'req', id: 1, m: 'agent/info', p: {} };
    expect(hex(encodeFrame(f))).toBe('84a174a3726571a2696401a16daa6167656e742f696e666fa17080');
  });
  it('encodes a cancel', () => {
    expect(hex(encodeFrame({ t: 'cancel', id: 7 }))).toBe('82a174a663616e63656ca26964' + '07');
  });
  it('encodes a chunk as a fixed binary header followed by the raw data', () => {
    const f: Frame = { t: 'chunk', s: 3, e: 0, q: 1, d: Buffer.from([1, 2, 3]), h: Buffer.alloc(8, 0xab), f: true };
    expect(hex(encodeFrame(f))).toBe('fe' + '00000003' + '00000000' + '00000001' + '01' + 'abababababababab' + '010203');
  });
});

describe('decodeFrame', () => {
  it('round-trips every frame type', () => {
    const frames: Frame[] = [
      { t: 'hello', v: [1, 0], name: 'host-a', nonce: Buffer.alloc(32, 1) },
      { t: 'auth', v: [1, 0], role: 'controller', name: 'c', nonce: Buffer.alloc(32, 2), mac: Buffer.alloc(32, 3) },
      { t: 'welcome', name: 'host-a', mac: Buffer.alloc(32, 4), caps: null },
      { t: 'req', id: 5, m: 'x/y', p: { a: [1, 'b'] }, dl: 1000 },
      { t: 'res', id: 5, r: { ok: true } },
      { t: 'err', id: 5, e: { code: 'E_NOT_FOUND', message: 'nope' } },
      { t: 'evt', m: 'migration/progress', p: { x: 1 } },
      { t: 'cancel', id: 9 },
      { t: 'chunk', s: 1, e: 2, q: 3, d: Buffer.from('data'), h: Buffer.alloc(8), f: false },
    ];
    for (const f of frames) expect(decodeFrame(encodeFrame(f), MAX_FRAME_BYTES)).toEqual(f);
  });

  it('rejects a frame over the cap before decoding it', () => {
    const big = encodeFrame({ t: 'evt', m: 'x', p: Buffer.alloc(2048) });
    expect(() => decodeFrame(big, 1024)).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });

  it.each([
    ['not msgpack', Buffer.from([0xc1])],
    ['not a map', encodeFrame([1, 2] as unknown as Frame)],
    ['unknown type', encodeFrame({ t: 'boom' } as unknown as Frame)],
    ['req without id', encodeFrame({ t: 'req', m: 'x', p: 1 } as unknown as Frame)],
    ['negative id', encodeFrame({ t: 'res', id: -1, r: 1 } as unknown as Frame)],
    ['err with unknown code', encodeFrame({ t: 'err', id: 1, e: { code: 'E_WHATEVER', message: 'm' } } as unknown as Frame)],
    ['chunk shorter than its header', Buffer.from('fe0000000100', 'hex')],
    ['chunk with a bad flag byte', Buffer.from(`fe${'00'.repeat(12)}02${'00'.repeat(8)}`, 'hex')],
    ['auth with unknown role', encodeFrame({ t: 'auth', v: [1, 0], role: 'root', name: 'x', nonce: Buffer.alloc(32), mac: Buffer.alloc(32) } as unknown as Frame)],
  ])('rejects %s with E_PROTOCOL', (_name, buf) => {
    expect(() => decodeFrame(buf, MAX_FRAME_BYTES)).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });

  it('never throws anything but E_PROTOCOL on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      try {
        decodeFrame(bytes, MAX_FRAME_BYTES);
      } catch (e) {
        expect((e as { code?: string }).code).toBe('E_PROTOCOL');
      }
    }), { numRuns: 2000 });
  });

  it('a small frame declaring a huge array is bounded by the cap', () => {
    // 0xdd = array32 with 2^31 elements declared, no elements present.
    const bomb = Buffer.from([0xdd, 0x7f, 0xff, 0xff, 0xff]);
    expect(() => decodeFrame(bomb, MAX_FRAME_BYTES)).toThrow(expect.objectContaining({ code: 'E_PROTOCOL' }));
  });
});
