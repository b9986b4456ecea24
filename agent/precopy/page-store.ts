// The destination's pre-copy page store: the newest copy of every page a round brought, keyed by
// (namespace pid, address).
//
// One sparse file per process on the agent's tmpfs, with page `a` at offset `a`: tmpfs allocates only the pages
// written, a later round overwrites in place, and a rebuild reads a whole pagemap entry with one pread.

import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PageSet } from '../../src/criu/page-set.js';
import { FerryError } from '../../src/protocol/index.js';

export class PageStore {
  /** Pages held, so that a rebuild can tell a page it was promised from one it never got. */
  readonly held = new PageSet();
  private readonly files = new Map<number, FileHandle>();
  private bytesIn = 0;

  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<PageStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new PageStore(dir);
  }

  get bytes(): number { return this.bytesIn; }

  private async file(nsPid: number): Promise<FileHandle> {
    let f = this.files.get(nsPid);
    if (!f) {
      f = await open(join(this.dir, `${nsPid}.pages`), 'w+', 0o600);
      this.files.set(nsPid, f);
    }
    return f;
  }

  async write(nsPid: number, addr: number, data: Buffer): Promise<void> {
    if (addr % 4096 || data.length % 4096) throw new FerryError('E_PROTOCOL', `unaligned page write at ${addr.toString(16)}`);
    const f = await this.file(nsPid);
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await f.write(data, off, data.length - off, addr + off);
      off += bytesWritten;
    }
    this.held.add(nsPid, addr, addr + data.length);
    this.bytesIn += data.length;
  }

  /**
   * Reads [addr, addr + into.length) into `into`. Pages the store never got read as zeros: the caller decides,
   * with `held`, whether that is allowed (a rebuild takes them from the delta instead).
   */
  async readInto(nsPid: number, addr: number, into: Buffer): Promise<void> {
    const f = this.files.get(nsPid);
    let off = 0;
    while (f && off < into.length) {
      const { bytesRead } = await f.read(into, off, into.length - off, addr + off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    into.fill(0, off);
  }

  async destroy(): Promise<void> {
    for (const f of this.files.values()) await f.close().catch(() => undefined);
    this.files.clear();
    await rm(this.dir, { recursive: true, force: true });
  }
}
