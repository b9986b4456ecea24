// Moving a checkpoint between agents: files and tar streams cut into checksummed chunks, and their sinks.

import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { CHUNK_BYTES, FerryError, type ChunkFrame, type ManifestEntry } from '../src/protocol/index.js';

/** Where each manifest entry comes from on the source. */
export interface EntrySources { imagesDir: string; upperDir: string; volumeDir(name: string): Promise<string> }
/** Where each manifest entry goes on the destination. */
export interface EntryTargets { imagesDir: string; upperDir: string; volumeDir(name: string): Promise<string> }

// Overlay whiteouts are char devices and opaque dirs are trusted.* xattrs: both must survive the trip.
const TAR_FLAGS = ['--xattrs', '--xattrs-include=*', '--numeric-owner'];

type Send = (entry: number, seq: number, data: Uint8Array, last: boolean) => Promise<void>;

/** Streams every entry in manifest order; returns per-entry byte and chunk counts for the receiver to check. */
export async function sendEntries(entries: ManifestEntry[], src: EntrySources, send: Send, signal: AbortSignal): Promise<{ bytes: number; chunks: number }[]> {
  const out: { bytes: number; chunks: number }[] = [];
  for (const [i, e] of entries.entries()) {
    signal.throwIfAborted();
    let stream: Readable;
    let child: ChildProcess | null = null;
    if (e.kind === 'image-file') {
      stream = createReadStream(join(src.imagesDir, e.name), { highWaterMark: CHUNK_BYTES, signal });
    } else {
      const dir = e.kind === 'rootfs-diff' ? src.upperDir : await src.volumeDir(e.name);
      child = spawn('tar', [...TAR_FLAGS, '-C', dir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'], signal });
      stream = child.stdout!;
    }
    const exited = child ? childExit(child, 'tar -c') : Promise.resolve();
    let bytes = 0;
    let seq = 0;
    // Hold one chunk back so the last one can carry the end-of-entry flag.
    let held: Buffer | null = null;
    for await (const piece of rechunk(stream)) {
      if (held) { await send(i, seq++, held, false); bytes += held.length; }
      held = piece;
    }
    await exited;
    const last = held ?? Buffer.alloc(0);
    await send(i, seq++, last, true);
    bytes += last.length;
    out.push({ bytes, chunks: seq });
  }
  return out;
}

/** Re-cuts a stream into pieces of exactly CHUNK_BYTES (the last one shorter). */
async function* rechunk(stream: Readable): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let size = 0;
  for await (const b of stream as AsyncIterable<Buffer>) {
    let buf = b;
    while (size + buf.length >= CHUNK_BYTES) {
      const take = CHUNK_BYTES - size;
      parts.push(buf.subarray(0, take));
      yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, CHUNK_BYTES);
      buf = buf.subarray(take);
      parts = [];
      size = 0;
    }
    if (buf.length) { parts.push(buf); size += buf.length; }
  }
  if (size) yield Buffer.concat(parts, size);
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
  private tar: ChildProcess | null = null;
  private tarDone: Promise<void> | null = null;
  private readonly received: { bytes: number; chunks: number; done: boolean }[];
  bytes = 0;

  constructor(private readonly entries: ManifestEntry[], private readonly dst: EntryTargets, private readonly signal: AbortSignal, private readonly onBytes: (n: number) => void = () => undefined) {
    this.received = entries.map(() => ({ bytes: 0, chunks: 0, done: false }));
  }

  async accept(c: ChunkFrame): Promise<void> {
    this.signal.throwIfAborted();
    if (c.e !== this.current) {
      // Entries arrive one after another; a new entry may only start once the previous one finished.
      if (c.e !== this.current + 1 || (this.current >= 0 && !this.received[this.current]!.done) || c.q !== 0)
        throw new FerryError('E_INTEGRITY', `chunk for entry ${c.e} seq ${c.q} arrived out of order`);
      this.current = c.e;
      this.nextSeq = 0;
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
    if (c.f) { await this.closeEntry(c.e); r.done = true; }
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
      return;
    }
    const dir = e.kind === 'rootfs-diff' ? this.dst.upperDir : await this.dst.volumeDir(e.name);
    // GNU tar refuses member names with '..' and strips leading '/', so entries stay inside dir.
    this.tar = spawn('tar', [...TAR_FLAGS, '--same-permissions', '--same-owner', '-C', dir, '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.tarDone = childExit(this.tar, 'tar -x');
    this.tarDone.catch(() => undefined);
  }

  private async write(d: Uint8Array): Promise<void> {
    if (this.file) { await this.file.write(d); return; }
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
    if (this.file) { await this.file.close(); this.file = null; return; }
    this.tar!.stdin!.end();
    await this.tarDone;
    this.tar = null;
    this.tarDone = null;
  }
}
