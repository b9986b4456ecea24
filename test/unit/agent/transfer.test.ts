import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { CHUNK_BYTES, CHUNK_HEADER_BYTES, MAX_FRAME_BYTES, decodeFrame, writeChunkHeader, type ChunkFrame, type ManifestEntry } from '../../../src/protocol/index.js';
import { checksum } from '../../../src/rpc/connection.js';
import { EntryReceiver, sendEntries } from '../../../agent/transfer.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });
const tmp = (): string => { const d = mkdtempSync(join(tmpdir(), 'ferry-xfer-')); dirs.push(d); return d; };

/** Runs sender and receiver back to back through the real chunk encoding and decoding. */
async function roundTrip(entries: ManifestEntry[], src: string, upper: string, dst: string, dstUpper: string, tamper?: (c: ChunkFrame) => void) {
  const rx = new EntryReceiver(entries, { imagesDir: dst, upperDir: dstUpper, volumeDir: async () => dstUpper }, new AbortController().signal);
  const frames: ChunkFrame[] = [];
  const sent = await sendEntries(entries, { imagesDir: src, upperDir: upper, volumeDir: async () => upper }, async (e, q, buf, last, written) => {
    writeChunkHeader(buf, 1, e, q, last, checksum(buf.subarray(CHUNK_HEADER_BYTES)));
    const f = decodeFrame(Buffer.from(buf), MAX_FRAME_BYTES);
    written();
    if (f.t !== 'chunk') throw new Error('not a chunk');
    expect(Buffer.from(f.h)).toEqual(checksum(f.d));
    frames.push(f);
  }, new AbortController().signal);
  try {
    for (const f of frames) { tamper?.(f); await rx.accept(f); }
    rx.verify(sent);
  } finally {
    await rx.dispose();
  }
  return { sent, frames };
}

describe('checkpoint transfer', () => {
  // Sizes around the chunk boundary: empty, one byte, exactly one chunk, one past it, several.
  const sizes = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 17];

  it('moves files of every size across chunk boundaries byte for byte', async () => {
    const [src, upper, dst, dstUpper] = [tmp(), tmp(), tmp(), tmp()];
    const entries: ManifestEntry[] = sizes.map((size, i) => ({ kind: 'image-file', name: `f${i}.img`, size }));
    const data = sizes.map((n) => randomBytes(n));
    data.forEach((d, i) => writeFileSync(join(src, `f${i}.img`), d));
    const { sent } = await roundTrip(entries, src, upper, dst, dstUpper);
    data.forEach((d, i) => expect(readFileSync(join(dst, `f${i}.img`)).equals(d)).toBe(true));
    expect(sent.map((s) => s.bytes)).toEqual(sizes);
    // Every entry has at least one chunk (the one carrying the end flag).
    expect(sent.map((s) => s.chunks)).toEqual(sizes.map((n) => Math.max(1, Math.ceil(n / CHUNK_BYTES))));
  });

  it('moves a directory tree as a tar stream, keeping modes and contents', async () => {
    const [src, upper, dst, dstUpper] = [tmp(), tmp(), tmp(), tmp()];
    mkdirSync(join(upper, 'a/b'), { recursive: true });
    writeFileSync(join(upper, 'a/b/file'), 'hello', { mode: 0o640 });
    writeFileSync(join(upper, 'big'), randomBytes(2 * CHUNK_BYTES + 5));
    await roundTrip([{ kind: 'rootfs-diff' }], src, upper, dst, dstUpper);
    expect(readFileSync(join(dstUpper, 'a/b/file'), 'utf8')).toBe('hello');
    expect(readFileSync(join(dstUpper, 'big')).equals(readFileSync(join(upper, 'big')))).toBe(true);
  });

  it('reuses chunk buffers only after the socket is done with them', async () => {
    const src = tmp();
    const n = 45; // more chunks than the sender's pool holds
    const data = randomBytes(n * CHUNK_BYTES + 3);
    writeFileSync(join(src, 'pages.img'), data);
    const inFlight: { buf: Buffer; copy: Buffer; written: () => void }[] = [];
    const backing = new Set<ArrayBufferLike>();
    const got: Buffer[] = [];
    // A socket that is slow to write: each buffer is handed back a few chunks later, and must not have
    // changed while it was queued.
    const flush = (keep: number): void => {
      while (inFlight.length > keep) {
        const w = inFlight.shift()!;
        expect(w.buf.equals(w.copy)).toBe(true);
        got.push(w.copy.subarray(CHUNK_HEADER_BYTES));
        w.written();
      }
    };
    await sendEntries([{ kind: 'image-file', name: 'pages.img', size: data.length }], { imagesDir: src, upperDir: src, volumeDir: async () => src }, async (_e, _q, buf, _last, written) => {
      backing.add(buf.buffer);
      inFlight.push({ buf, copy: Buffer.from(buf), written });
      await new Promise((r) => setImmediate(r));
      flush(4);
    }, new AbortController().signal);
    flush(0);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(backing.size).toBeLessThan(n);
  });

  it('stops a sender that waits for a chunk buffer when aborted', async () => {
    const src = tmp();
    writeFileSync(join(src, 'pages.img'), randomBytes(30 * CHUNK_BYTES));
    const ac = new AbortController();
    let sends = 0;
    // A socket that never finishes writing: the pool runs dry and the reader waits, until the abort.
    const run = sendEntries([{ kind: 'image-file', name: 'pages.img', size: 30 * CHUNK_BYTES }], { imagesDir: src, upperDir: src, volumeDir: async () => src }, async () => {
      if (++sends === 15) ac.abort(new Error('cancelled'));
    }, ac.signal);
    await expect(run).rejects.toThrow('cancelled');
    expect(sends).toBeLessThan(30);
  });

  it('detects a lost chunk', async () => {
    const [src, upper, dst, dstUpper] = [tmp(), tmp(), tmp(), tmp()];
    writeFileSync(join(src, 'p.img'), randomBytes(3 * CHUNK_BYTES));
    let n = 0;
    await expect(roundTrip([{ kind: 'image-file', name: 'p.img', size: 3 * CHUNK_BYTES }], src, upper, dst, dstUpper, (f) => {
      if (n++ === 1) f.q = 2; // the receiver sees chunk 2 where chunk 1 belongs
    })).rejects.toMatchObject({ code: 'E_INTEGRITY' });
  });

  it('detects a truncated entry', async () => {
    const [src, upper, dst, dstUpper] = [tmp(), tmp(), tmp(), tmp()];
    writeFileSync(join(src, 'p.img'), randomBytes(10));
    // The manifest promised more than the file holds: the size check catches it.
    await expect(roundTrip([{ kind: 'image-file', name: 'p.img', size: 11 }], src, upper, dst, dstUpper)).rejects.toMatchObject({ code: 'E_INTEGRITY' });
  });

  it('refuses to overwrite an existing image file', async () => {
    const [src, upper, dst, dstUpper] = [tmp(), tmp(), tmp(), tmp()];
    writeFileSync(join(src, 'p.img'), 'x');
    writeFileSync(join(dst, 'p.img'), 'planted');
    await expect(roundTrip([{ kind: 'image-file', name: 'p.img', size: 1 }], src, upper, dst, dstUpper)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readFileSync(join(dst, 'p.img'), 'utf8')).toBe('planted');
  });
});
