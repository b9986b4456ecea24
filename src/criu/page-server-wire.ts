// CRIU 4.2's page-server protocol as its lazy-pages daemon and its lazy dump speak it
// (../shared/platform/pageserver.md §1): one TCP stream, no handshake, 32-byte little-endian headers
//   u32 cmd (low 16 bits; high 16 bits = PE_* flags), u32 padding (garbage; ignored), u64 nr_pages,
//   u64 vaddr (dump-time address), u64 dst_id (the task's namespace pid for GET and its answer).
// A GET is answered with a header (cmd ADD_F | PE_PRESENT << 16, the request's vaddr and dst_id echoed) and
// nr × 4096 bytes, strictly in request order; CLOSE is answered with a bare int32 status.
// 4.1.x used 24-byte headers and nothing on the wire tells the two apart, hence the pinned CRIU.

import { FerryError } from '../protocol/errors.js';

export const PS_HEADER = 32;
export const PS_IOV_ADD_F = 6;
export const PS_IOV_GET = 7;
export const PS_IOV_CLOSE = 0x1023;
export const PS_IOV_FORCE_CLOSE = 0x1024;
const PE_PRESENT = 4;
export const PAGE = 4096;
/** The daemon asks for at most 4 MiB at a time; anything larger is not CRIU talking. */
export const MAX_REQUEST_PAGES = 1024;

export interface PsHeader { cmd: number; flags: number; nrPages: number; vaddr: number; dstId: number }

export function encodeHeader(h: { cmd: number; flags?: number; nrPages?: number; vaddr?: number; dstId?: number }): Buffer {
  const b = Buffer.alloc(PS_HEADER);
  b.writeUInt32LE(((h.flags ?? 0) << 16 | h.cmd) >>> 0, 0);
  b.writeBigUInt64LE(BigInt(h.nrPages ?? 0), 8);
  b.writeBigUInt64LE(BigInt(h.vaddr ?? 0), 16);
  b.writeBigUInt64LE(BigInt(h.dstId ?? 0), 24);
  return b;
}

export function decodeHeader(b: Buffer, at = 0): PsHeader {
  if (b.length - at < PS_HEADER) throw new FerryError('E_PROTOCOL', 'short page-server header');
  const raw = b.readUInt32LE(at);
  const big = (o: number): number => {
    const v = b.readBigUInt64LE(at + o);
    // Addresses fit in 47 bits, pids and page counts far less: anything above 2^53 is garbage, not CRIU.
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FerryError('E_PROTOCOL', `page-server header field out of range: ${v}`);
    return Number(v);
  };
  return { cmd: raw & 0xffff, flags: raw >>> 16, nrPages: big(8), vaddr: big(16), dstId: big(24) };
}

export const getRequest = (pid: number, vaddr: number, nrPages: number): Buffer => encodeHeader({ cmd: PS_IOV_GET, nrPages, vaddr, dstId: pid });
export const pagesReply = (pid: number, vaddr: number, nrPages: number): Buffer => encodeHeader({ cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages, vaddr, dstId: pid });
export const closeRequest = (): Buffer => encodeHeader({ cmd: PS_IOV_CLOSE });

/** A GET from a lazy-pages daemon that a server may answer; anything else means the peer is not what it seems. */
export function checkGet(h: PsHeader): void {
  if (h.nrPages < 1 || h.nrPages > MAX_REQUEST_PAGES) throw new FerryError('E_PROTOCOL', `GET of ${h.nrPages} pages`);
  if (h.vaddr % PAGE) throw new FerryError('E_PROTOCOL', `GET at unaligned address ${h.vaddr.toString(16)}`);
  if (h.dstId < 1 || h.dstId > 4_194_304) throw new FerryError('E_PROTOCOL', `GET for pid ${h.dstId}`);
}
