// Moving a checkpoint between agents: files and tar streams cut into checksummed chunks, and their sinks.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_BYTES, CHUNK_HEADER_BYTES, FerryError, type ChunkFrame, type ManifestEntry } from '../src/protocol/index.js';

/** Where each manifest entry comes from on the source. */
export interface EntrySources { imagesDir: string; upperDir: string; volumeDir(name: string): Promise<string> }
/** Where each manifest entry goes on the destination. */
export interface EntryTargets { imagesDir: string; upperDir: string; volumeDir(name: string): Promise<string> }

// Overlay whiteouts are char devices and opaque dirs are trusted.* xattrs: both must survive the trip.
const TAR_FLAGS = ['--xattrs', '--xattrs-include=*', '--numeric-owner'];

/**
 * Sends one chunk: `buf` carries the data from CHUNK_HEADER_BYTES on (the header is written in place).
 * `written` is to be called once the socket no longer needs `buf`, which may then be refilled.
 */
type Send = (entry: number, seq: number, buf: Buffer, last: boolean, written: () => void) => Promise<void>;

const MAX_WRITES_IN_FLIGHT = 8;
const newChunk = (): Buffer => Buffer.allocUnsafe(CHUNK_HEADER_BYTES + CHUNK_BYTES);

/**
 * Chunk buffers for reading image files, reused once the socket has written them. A fresh 1 MiB buffer
 * per chunk costs its first touch of new memory (0.7 ms here, a VM's page faults) and the GC work of
 * dropping it: measured, that was most of the stream's CPU, at ~160 MB/s for a 256 MiB image.
 */
class ChunkPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: ((b: Buffer) => void)[] = [];
  private made = 0;

  constructor(private readonly max: number) {}

  async acquire(signal: AbortSignal): Promise<Buffer> {
    signal.throwIfAborted();
    const b = this.free.pop();
    if (b) return b;
    if (this.made < this.max) { this.made++; return newChunk(); }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.waiting.splice(this.waiting.indexOf(take), 1);
        reject(signal.reason);
      };
      const take = (buf: Buffer): void => { signal.removeEventListener('abort', onAbort); resolve(buf); };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(take);
    });
  }

  release(b: Buffer): void {
    const w = this.waiting.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}

/** A piece of an entry, and what to do once the socket is done with it. */
interface Piece { buf: Buffer; written: () => void }
const unpooled = (buf: Buffer): Piece => ({ buf, written: () => undefined });
// The socket's send queue (SEND_HIGH_WATER in rpc/connection.ts) is what bounds memory; this only has to
// cover it so reads never wait for the pool while the socket has room.
const POOL_CHUNKS = 20;

/** Streams every entry in manifest order; returns per-entry byte and chunk counts for the receiver to check. */
export async function sendEntries(entries: ManifestEntry[], src: EntrySources, send: Send, signal: AbortSignal): Promise<{ bytes: number; chunks: number }[]> {
  const out: { bytes: number; chunks: number }[] = [];
  const pool = new ChunkPool(POOL_CHUNKS);
  for (const [i, e] of entries.entries()) {
    signal.throwIfAborted();
    const pieces = e.kind === 'image-file'
      ? (e.size < CHUNK_BYTES ? smallFile(join(src.imagesDir, e.name), e.size) : fileChunks(join(src.imagesDir, e.name), pool, signal))
      : tarChunks(e.kind === 'rootfs-diff' ? src.upperDir : await src.volumeDir(e.name), signal);
    let bytes = 0;
    let seq = 0;
    // Hold one chunk back so the last one can carry the end-of-entry flag.
    let held: Piece | null = null;
    for await (const piece of pieces) {
      if (held) { await send(i, seq++, held.buf, false, held.written); bytes += held.buf.length - CHUNK_HEADER_BYTES; }
      held = piece;
    }
    const last = held ?? unpooled(Buffer.allocUnsafe(CHUNK_HEADER_BYTES));
    await send(i, seq++, last.buf, true, last.written);
    bytes += last.buf.length - CHUNK_HEADER_BYTES;
    out.push({ bytes, chunks: seq });
  }
  return out;
}

/**
 * A file read straight into chunk buffers (header room in front): no intermediate copies. The next read
 * is already in flight while the current chunk is sent, so disk and socket overlap.
 */
async function* fileChunks(path: string, pool: ChunkPool, signal: AbortSignal): AsyncGenerator<Piece> {
  const fh = await open(path, 'r');
  let pos = 0;
  const readAt = async (at: number): Promise<Piece> => {
    const whole = await pool.acquire(signal);
    const written = (): void => pool.release(whole);
    try {
      const { bytesRead } = await fh.read(whole, CHUNK_HEADER_BYTES, CHUNK_BYTES, at);
      return { buf: bytesRead === CHUNK_BYTES ? whole : whole.subarray(0, CHUNK_HEADER_BYTES + bytesRead), written };
    } catch (e) {
      written();
      throw e;
    }
  };
  let next = readAt(pos);
  try {
    for (;;) {
      signal.throwIfAborted();
      const piece = await next;
      const n = piece.buf.length - CHUNK_HEADER_BYTES;
      if (n === 0) return; // `next` is this empty piece: the finally below hands it back, once
      pos += n;
      next = readAt(pos);
      yield piece;
    }
  } finally {
    await next.then((p) => p.written(), () => undefined);
    await fh.close();
  }
}

/**
 * A CRIU image directory is ~50 small files on tmpfs. Read through the thread pool, each one cost an open,
 * a read and a close of event-loop round trips, ~1 ms apiece with both agents on 2 cores: most of the
 * transfer inside the freeze. Read synchronously, one fits in a single chunk in ~20 µs. A file that is not
 * `size` bytes any more shows up in the receiver's byte check.
 */
async function* smallFile(path: string, size: number): AsyncGenerator<Piece> {
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + size);
  const fd = openSync(path, 'r');
  let n = 0;
  try {
    for (let r; n < size && (r = readSync(fd, buf, CHUNK_HEADER_BYTES + n, size - n, n)) > 0;) n += r;
  } finally {
    closeSync(fd);
  }
  if (n > 0) yield unpooled(buf.subarray(0, CHUNK_HEADER_BYTES + n));
}

/** A directory as a tar stream, cut into chunk buffers. */
async function* tarChunks(dir: string, signal: AbortSignal): AsyncGenerator<Piece> {
  const child = spawn('tar', [...TAR_FLAGS, '-C', dir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'], signal });
  const exited = childExit(child, 'tar -c');
  exited.catch(() => undefined);
  let buf = newChunk();
  let fill = CHUNK_HEADER_BYTES;
  for await (const piece of child.stdout as AsyncIterable<Buffer>) {
    let off = 0;
    while (off < piece.length) {
      const n = Math.min(piece.length - off, buf.length - fill);
      piece.copy(buf, fill, off, off + n);
      fill += n;
      off += n;
      if (fill === buf.length) { yield unpooled(buf); buf = newChunk(); fill = CHUNK_HEADER_BYTES; }
    }
  }
  await exited;
  if (fill > CHUNK_HEADER_BYTES) yield unpooled(buf.subarray(0, fill));
}

function childExit(child: ChildProcess, what: string): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => { if (stderr.length < 4000) stderr += b.toString(); });
  return new Promise((resolve, reject) => {
    child.on('error', (e) => reject(new FerryError(e.name === 'AbortError' ? 'E_ABORTED' : 'E_INTERNAL', `${what}: ${e.message}`)));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new FerryError('E_INTERNAL', `${what} exited ${code}: ${stderr.trim().slice(-300)}`))));
  });
}

/**
 * The destination side: writes each entry as its chunks arrive, strictly in order, and checks at the end
 * that every entry arrived whole (the source's counts against what was received).
 */
export class EntryReceiver {
  private current = -1;
  private nextSeq = 0;
  private file: FileHandle | null = null;
  private filePos = 0;
  /** Positioned writes still in flight: chunks are checked in order, but the disk need not be waited for each. */
  private writes: Promise<unknown>[] = [];
  private tar: ChildProcess | null = null;
  private tarDone: Promise<void> | null = null;
  private readonly received: { bytes: number; chunks: number; done: boolean }[];
  bytes = 0;

  constructor(private readonly entries: ManifestEntry[], private readonly dst: EntryTargets, private readonly signal: AbortSignal, private readonly onBytes: (n: number) => void = () => undefined) {
    this.received = entries.map(() => ({ bytes: 0, chunks: 0, done: false }));
  }

  /** Milliseconds from the first to the last chunk of each entry kind, for the timing report. */
  readonly kindMs: Record<string, number> = {};
  private entryStart = 0;

  async accept(c: ChunkFrame): Promise<void> {
    this.signal.throwIfAborted();
    if (c.e !== this.current) {
      this.entryStart = performance.now();
      // Entries arrive one after another; a new entry may only start once the previous one finished.
      if (c.e !== this.current + 1 || (this.current >= 0 && !this.received[this.current]!.done) || c.q !== 0)
        throw new FerryError('E_INTEGRITY', `chunk for entry ${c.e} seq ${c.q} arrived out of order`);
      this.current = c.e;
      this.nextSeq = 0;
      const e = this.entries[c.e]!;
      if (e.kind === 'image-file' && c.q === 0 && c.f) {
        // A whole image file in one chunk (most of them): one synchronous tmpfs write, see smallFile().
        // 'wx': never overwrite, never follow a planted symlink.
        writeFileSync(join(this.dst.imagesDir, e.name), c.d, { flag: 'wx', mode: 0o600 });
        this.nextSeq = 1;
        const r = this.received[c.e]!;
        r.bytes += c.d.length;
        r.chunks++;
        r.done = true;
        this.bytes += c.d.length;
        this.onBytes(c.d.length);
        this.kindMs[e.kind] = (this.kindMs[e.kind] ?? 0) + Math.round((performance.now() - this.entryStart) * 10) / 10;
        return;
      }
      await this.openEntry(c.e);
    }
    if (c.q !== this.nextSeq) throw new FerryError('E_INTEGRITY', `entry ${c.e}: expected chunk ${this.nextSeq}, got ${c.q}`);
    this.nextSeq++;
    const r = this.received[c.e]!;
    if (c.d.length) await this.write(c.d);
    r.bytes += c.d.length;
    r.chunks++;
    this.bytes += c.d.length;
    this.onBytes(c.d.length);
    if (c.f) {
      await this.closeEntry(c.e);
      r.done = true;
      const k = this.entries[c.e]!.kind;
      this.kindMs[k] = (this.kindMs[k] ?? 0) + Math.round((performance.now() - this.entryStart) * 10) / 10;
    }
  }

  /** Compares what arrived with what the source says it sent; any difference is corruption or truncation. */
  verify(sent: { bytes: number; chunks: number }[]): void {
    if (sent.length !== this.entries.length) throw new FerryError('E_INTEGRITY', `source sent ${sent.length} entries, manifest has ${this.entries.length}`);
    for (const [i, s] of sent.entries()) {
      const r = this.received[i]!;
      const e = this.entries[i]!;
      if (!r.done || r.bytes !== s.bytes || r.chunks !== s.chunks)
        throw new FerryError('E_INTEGRITY', `entry ${i} (${e.kind}) incomplete: got ${r.bytes} B in ${r.chunks} chunks, source sent ${s.bytes} B in ${s.chunks}`);
      if (e.kind === 'image-file' && r.bytes !== e.size) throw new FerryError('E_INTEGRITY', `image ${e.name}: ${r.bytes} B, expected ${e.size}`);
    }
  }

  /** Releases whatever is open; after a failure the caller removes the partial files. */
  async dispose(): Promise<void> {
    for (const w of this.writes.splice(0)) await w.catch(() => undefined);
    await this.file?.close().catch(() => undefined);
    this.file = null;
    if (this.tar && this.tar.exitCode === null) this.tar.kill('SIGKILL');
    await this.tarDone?.catch(() => undefined);
  }

  private async openEntry(i: number): Promise<void> {
    const e = this.entries[i]!;
    if (e.kind === 'image-file') {
      // 'wx': never overwrite, never follow a planted symlink.
      this.file = await open(join(this.dst.imagesDir, e.name), 'wx', 0o600);
      this.filePos = 0;
      return;
    }
    const dir = e.kind === 'rootfs-diff' ? this.dst.upperDir : await this.dst.volumeDir(e.name);
    // GNU tar refuses member names with '..' and strips leading '/', so entries stay inside dir.
    this.tar = spawn('tar', [...TAR_FLAGS, '--same-permissions', '--same-owner', '-C', dir, '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.tarDone = childExit(this.tar, 'tar -x');
    this.tarDone.catch(() => undefined);
  }

  private async write(d: Uint8Array): Promise<void> {
    if (this.file) {
      const w = this.file.write(d, 0, d.length, this.filePos);
      w.catch(() => undefined);
      this.filePos += d.length;
      this.writes.push(w);
      if (this.writes.length >= MAX_WRITES_IN_FLIGHT) await this.writes.shift();
      return;
    }
    const stdin = this.tar!.stdin!;
    if (!stdin.write(d)) {
      await new Promise<void>((resolve, reject) => {
        const onErr = (err: Error): void => { stdin.off('drain', onDrain); reject(new FerryError('E_INTERNAL', `tar -x: ${err.message}`)); };
        const onDrain = (): void => { stdin.off('error', onErr); resolve(); };
        stdin.once('drain', onDrain);
        stdin.once('error', onErr);
      });
    }
  }

  private async closeEntry(_i: number): Promise<void> {
    if (this.file) {
      const pending = this.writes.splice(0);
      for (const w of pending) await w;
      await this.file.close();
      this.file = null;
      return;
    }
    this.tar!.stdin!.end();
    await this.tarDone;
    this.tar = null;
    this.tarDone = null;
  }
}
