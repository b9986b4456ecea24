// Drives the native dirty tracker (native/dirtytrack, protocol in docs/dirtytrack.md §2) over its stdin/stdout.

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { FerryError } from '../../src/protocol/index.js';
import type { PageRange } from '../../src/protocol/pages.js';
import type { Logger } from '../../src/log/logger.js';

export interface AttachedMm { pid: number; pids: number[]; vmas: number; pages: number; untrackable: number; new: boolean; stop_us?: number }
export interface ScanResult {
  pages: number;
  scanUs: number;
  /** Written ranges per tracked mm, keyed by thread-group id. */
  ranges: Map<number, PageRange[]>;
  exited: number[];
  execed: number[];
  /** Mms dropped from tracking this round: their dirty information is lost. */
  failed: number[];
}

type Reply = Record<string, unknown> & { ok: boolean };

/** Requests are strictly serial in the helper, so one outstanding request at a time here too. */
export class DirtyTracker {
  // Replies of up to 64 MiB arrive in 64 KiB pieces: collect them and join once, not on every piece.
  private pieces: Buffer[] = [];
  private buffered = 0;
  private waiting: { need: 'line' | number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private exited: Error | null = null;
  private stderrTail = '';

  private constructor(private readonly child: ChildProcessByStdio<Writable, Readable, Readable>, private readonly log: Logger) {
    child.stdout.on('data', (b: Buffer) => { this.pieces.push(b); this.buffered += b.length; this.pump(); });
    child.stderr.on('data', (b: Buffer) => { this.stderrTail = (this.stderrTail + b.toString()).slice(-2000); });
    child.on('exit', (code, sig) => this.fail(new FerryError('E_INTERNAL', `dirty tracker exited (${sig ?? code}): ${this.stderrTail.trim().split('\n').at(-1) ?? ''}`)));
    child.on('error', (e) => this.fail(new FerryError('E_INTERNAL', `dirty tracker: ${e.message}`, { cause: e })));
    child.stdin.on('error', () => undefined);
  }

  static start(binary: string, log: Logger): DirtyTracker {
    // Not tied to a request's signal: the tracker must outlive a cancelled call until it has released its targets.
    const child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new DirtyTracker(child, log);
  }

  get pid(): number | undefined { return this.child.pid; }

  attach(pids: number[]): Promise<{ mms: AttachedMm[]; exited: number[] }> {
    return this.request({ cmd: 'attach', pids }, async (r) => ({ mms: r.mms as AttachedMm[], exited: (r.exited as number[]) ?? [] }));
  }

  scan(first: boolean): Promise<ScanResult> {
    return this.request({ cmd: 'scan', first }, async (r, body) => {
      const ranges = new Map<number, PageRange[]>();
      let o = 0;
      while (o < body.length) {
        const pid = body.readUInt32LE(o);
        const n = body.readUInt32LE(o + 4);
        o += 8;
        const list: PageRange[] = [];
        for (let i = 0; i < n; i++, o += 16) list.push([Number(body.readBigUInt64LE(o)), Number(body.readBigUInt64LE(o + 8))]);
        ranges.set(pid, list);
      }
      return {
        pages: r.pages as number, scanUs: r.scan_us as number, ranges,
        exited: (r.exited as number[]) ?? [], execed: (r.execed as number[]) ?? [],
        failed: ((r.failed as { pid: number }[]) ?? []).map((f) => f.pid),
      };
    });
  }

  /** Reads pages while the task runs; what was unmapped since the scan comes back in `missing`, not in `data`. */
  read(pid: number, ranges: readonly PageRange[]): Promise<{ data: Buffer; missing: PageRange[] }> {
    return this.request({ cmd: 'read', pid, ranges }, async (r, body) => ({ data: body, missing: (r.missing as PageRange[]) ?? [] }));
  }

  /** Unregisters everything in the targets (they run untracked afterwards). Idempotent. */
  release(): Promise<void> {
    return this.request({ cmd: 'release' }, async () => undefined);
  }

  /** Releases and ends the helper; if it does not go within 5 s it is killed (the kernel releases for it). */
  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(t);
  }

  private request<T>(req: Record<string, unknown>, parse: (r: Reply, body: Buffer) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.exited) throw this.exited;
      this.child.stdin.write(`${JSON.stringify(req)}\n`);
      const line = await this.next('line');
      let r: Reply;
      try {
        r = JSON.parse(line.toString('utf8')) as Reply;
      } catch {
        throw new FerryError('E_INTERNAL', `dirty tracker sent a malformed reply: ${line.toString('utf8').slice(0, 200)}`);
      }
      if (!r.ok) throw new FerryError('E_PRECONDITION', `dirty tracker ${String(req.cmd)}: ${String(r.code)} ${String(r.message)}`, { details: { trackerCode: r.code, errno: r.errno } });
      const n = typeof r.bytes === 'number' ? r.bytes : 0;
      const body = n > 0 ? await this.next(n) : Buffer.alloc(0);
      return parse(r, body);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private next(need: 'line' | number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.exited) { reject(this.exited); return; }
      this.waiting = { need, resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    const w = this.waiting;
    if (!w) return;
    let take: number;
    if (w.need === 'line') {
      let nl = -1;
      let before = 0;
      for (const p of this.pieces) {
        const i = p.indexOf(0x0a);
        if (i >= 0) { nl = before + i; break; }
        before += p.length;
      }
      if (nl < 0) return;
      take = nl + 1;
    } else {
      if (this.buffered < w.need) return;
      take = w.need;
    }
    const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.buffered);
    const out = all.subarray(0, w.need === 'line' ? take - 1 : take);
    const rest = all.subarray(take);
    this.pieces = rest.length ? [rest] : [];
    this.buffered = rest.length;
    this.waiting = null;
    w.resolve(out);
  }

  private fail(e: Error): void {
    if (this.exited) return;
    this.exited = e;
    this.log.debug({ err: e.message }, 'dirty tracker gone');
    const w = this.waiting;
    this.waiting = null;
    w?.reject(e);
  }
}
