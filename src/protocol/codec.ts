// The one msgpack codec, and the validation that turns untrusted bytes into a typed Frame.

import { Packr } from 'msgpackr';
import { FerryError, isErrorCode, type WireError } from './errors.js';
import { PEER_ROLES, type Frame, type PeerRole } from './frames.js';

// Every option pinned: plain MessagePack with no per-connection record structures that could desync
// across reconnects, ints as JS numbers (no frame carries a value above 2^53).
const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  bundleStrings: false,
  structuredClone: false,
  int64AsType: 'number',
  useTimestamp32: false,
  encodeUndefinedAsNil: true,
  variableMapSize: true,
});

/**
 * Chunk frames are not msgpack: bulk data must not be copied into an encoder. A chunk is a binary message
 * `0xFE | u32 s | u32 e | u32 q | u8 f | 8-byte h | data` (big-endian). 0xFE can never start a valid
 * frame otherwise (every other frame is a msgpack map), so the two never collide.
 */
export const CHUNK_MAGIC = 0xfe;
export const CHUNK_HEADER_BYTES = 22;

/** Writes a chunk header into the first CHUNK_HEADER_BYTES of `buf`, whose rest already holds the data. */
export function writeChunkHeader(buf: Buffer, s: number, e: number, q: number, last: boolean, hash: Uint8Array): void {
  buf[0] = CHUNK_MAGIC;
  buf.writeUInt32BE(s, 1);
  buf.writeUInt32BE(e, 5);
  buf.writeUInt32BE(q, 9);
  buf[13] = last ? 1 : 0;
  buf.set(hash, 14);
}

export function encodeFrame(f: Frame): Buffer {
  if (f.t !== 'chunk') return packr.pack(f);
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + f.d.length);
  buf.set(f.d, CHUNK_HEADER_BYTES);
  writeChunkHeader(buf, f.s, f.e, f.q, f.f, f.h);
  return buf;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isStr = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length <= max;
const isBytes = (v: unknown, max: number): v is Uint8Array => v instanceof Uint8Array && v.length <= max;
const isVersion = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && isUint(v[0]) && isUint(v[1]);
const isRole = (v: unknown): v is PeerRole => typeof v === 'string' && (PEER_ROLES as readonly string[]).includes(v);

function isWireError(v: unknown): v is WireError {
  return isObj(v) && isErrorCode(v.code) && isStr(v.message, 64 * 1024) && (v.details === undefined || v.details === null || isObj(v.details));
}

const bad = (why: string): FerryError => new FerryError('E_PROTOCOL', `malformed frame: ${why}`);

/**
 * Decodes one WebSocket message. The size cap is checked before msgpack sees a byte: msgpack lengths are
 * attacker-controlled, and a small frame can still declare a huge array, so the cap bounds the damage.
 */
export function decodeFrame(buf: Uint8Array, maxBytes: number): Frame {
  if (buf.length > maxBytes) throw new FerryError('E_PROTOCOL', `frame of ${buf.length} bytes exceeds the ${maxBytes}-byte cap`);
  if (buf[0] === CHUNK_MAGIC) {
    if (buf.length < CHUNK_HEADER_BYTES) throw bad('short chunk');
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    const f = b[13];
    if (f !== 0 && f !== 1) throw bad('chunk flag');
    return { t: 'chunk', s: b.readUInt32BE(1), e: b.readUInt32BE(5), q: b.readUInt32BE(9), f: f === 1, h: b.subarray(14, 22), d: b.subarray(CHUNK_HEADER_BYTES) };
  }
  let v: unknown;
  try {
    v = packr.unpack(buf);
  } catch (e) {
    throw new FerryError('E_PROTOCOL', 'frame is not valid msgpack', { cause: e });
  }
  if (!isObj(v)) throw bad('not a map');
  switch (v.t) {
    case 'hello':
      if (isVersion(v.v) && isStr(v.name) && isBytes(v.nonce, 64)) return { t: 'hello', v: v.v, name: v.name, nonce: v.nonce };
      throw bad('hello');
    case 'auth':
      if (isVersion(v.v) && isRole(v.role) && isStr(v.name) && isBytes(v.nonce, 64) && isBytes(v.mac, 64))
        return { t: 'auth', v: v.v, role: v.role, name: v.name, nonce: v.nonce, mac: v.mac };
      throw bad('auth');
    case 'welcome':
      if (isStr(v.name) && isBytes(v.mac, 64) && (v.caps === null || isObj(v.caps)))
        return { t: 'welcome', name: v.name, mac: v.mac, caps: v.caps as never };
      throw bad('welcome');
    case 'req':
      if (isUint(v.id) && isStr(v.m, 64) && (v.dl === undefined || v.dl === null || isUint(v.dl)))
        return v.dl == null ? { t: 'req', id: v.id, m: v.m, p: v.p } : { t: 'req', id: v.id, m: v.m, p: v.p, dl: v.dl };
      throw bad('req');
    case 'res':
      if (isUint(v.id)) return { t: 'res', id: v.id, r: v.r };
      throw bad('res');
    case 'err':
      if (isUint(v.id) && isWireError(v.e)) return { t: 'err', id: v.id, e: v.e };
      throw bad('err');
    case 'evt':
      if (isStr(v.m, 64)) return { t: 'evt', m: v.m, p: v.p };
      throw bad('evt');
    case 'cancel':
      if (isUint(v.id)) return { t: 'cancel', id: v.id };
      throw bad('cancel');
    default:
      throw bad(`unknown type ${JSON.stringify(String(v.t)).slice(0, 40)}`);
  }
}
