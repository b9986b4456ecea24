// The destination agent's page server: `criu lazy-pages --page-server` connects here (loopback) and asks for
// every lazy page of the restored task; we answer from what pre-copy brought and the final delta.
//
// Rules from ../shared/platform/pageserver.md §3/§7: answers strictly in request order; never answer 0 pages
// and never close on a page we lack (the kernel would zero-fill the rest and the task would run on zeros):
// hold the answer and report the failure, so the agent kills the restored task itself.

import { createServer, type Server, type Socket } from 'node:net';
import { FerryError } from '../../src/protocol/index.js';
import { PAGE, PS_HEADER, PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE, PS_IOV_GET, checkGet, decodeHeader, pagesReply } from '../../src/criu/page-server-wire.js';
import type { Logger } from '../../src/log/logger.js';
import { StreamReader } from './stream-reader.js';

/** Where served pages come from. `read` returns 1..nr contiguous pages from vaddr, or null if it has none. */
export interface PageSource {
  read(pid: number, vaddr: number, nr: number): Promise<Buffer | null>;
}

/** Requests whose pages are fetched ahead of the answer being written. */
const MAX_AHEAD = 8;

export interface ServeStats { requests: number; pages: number; firstGetMs: number | null; ms: number }

export class LazyPageServer {
  private conn: Socket | null = null;
  private readonly t0 = performance.now();
  readonly stats: ServeStats = { requests: 0, pages: 0, firstGetMs: null, ms: 0 };
  /** Resolves when the daemon sent CLOSE (every lazy page is in place); rejects on a protocol error or a missing page. */
  readonly done: Promise<ServeStats>;
  private settle!: { resolve: (s: ServeStats) => void; reject: (e: Error) => void };

  private constructor(private readonly server: Server, private readonly source: PageSource, private readonly log: Logger) {
    this.done = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    // Nobody has to await `done` (an aborted restore drops it); the rejection must not crash the agent.
    this.done.catch(() => undefined);
    server.on('connection', (s) => this.accept(s));
  }

  static async listen(source: PageSource, log: Logger): Promise<LazyPageServer> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    return new LazyPageServer(server, source, log);
  }

  get port(): number {
    const a = this.server.address();
    if (!a || typeof a === 'string') throw new FerryError('E_INTERNAL', 'page server has no port');
    return a.port;
  }

  close(): void {
    this.server.close();
    this.conn?.destroy();
  }

  private accept(s: Socket): void {
    // One lazy-pages daemon per restore. A second connection on loopback is not ours to serve.
    if (this.conn) { s.destroy(); return; }
    this.conn = s;
    s.setNoDelay(true);
    this.server.close();
    void this.serve(s, new StreamReader(s)).then(
      () => { this.stats.ms = performance.now() - this.t0; this.settle.resolve(this.stats); },
      (e: Error) => { this.log.error({ err: e.message }, 'lazy page server failed'); this.settle.reject(e); },
    );
  }

  /**
   * Requests are read as they come and their pages fetched concurrently (a remote source answers in a round
   * trip, and the daemon keeps several requests in flight), but answered strictly in order, as the daemon
   * expects. A held read holds every answer after it, never the reading of the next request.
   */
  private async serve(s: Socket, r: StreamReader): Promise<void> {
    const queue: { h: ReturnType<typeof decodeHeader>; data: Promise<Buffer | null> }[] = [];
    let wake: (() => void) | null = null;
    let ended: 'close' | Error | null = null;
    const reader = (async () => {
      try {
        for (;;) {
          // Bounded: at most MAX_AHEAD answers fetched ahead of the one being written.
          while (queue.length >= MAX_AHEAD) await new Promise<void>((res) => { wake = res; });
          const b = await r.read(PS_HEADER);
          if (!b) throw new FerryError('E_PROTOCOL', 'lazy-pages daemon went away without CLOSE');
          const h = decodeHeader(b);
          if (h.cmd === PS_IOV_CLOSE || h.cmd === PS_IOV_FORCE_CLOSE) { ended = 'close'; return; }
          if (h.cmd !== PS_IOV_GET) throw new FerryError('E_PROTOCOL', `unexpected page-server command ${h.cmd.toString(16)}`);
          checkGet(h);
          this.stats.firstGetMs ??= performance.now() - this.t0;
          const data = this.source.read(h.dstId, h.vaddr, h.nrPages);
          data.catch(() => undefined); // awaited in order below; a rejection must not surface unhandled first
          queue.push({ h, data });
          const w = wake as (() => void) | null;
          wake = null;
          w?.();
        }
      } catch (e) {
        ended = e as Error;
      } finally {
        const w = wake as (() => void) | null;
        wake = null;
        w?.();
      }
    })();
    for (;;) {
      const next = queue[0];
      if (!next) {
        if (ended === 'close') break;
        if (ended) throw ended;
        await new Promise<void>((res) => { wake = res; });
        continue;
      }
      const { h } = next;
      const data = await next.data;
      queue.shift();
      const w = wake as (() => void) | null;
      wake = null;
      w?.();
      if (!data) {
        // Held, not answered: see the header comment. The agent kills the restored task on this rejection.
        throw new FerryError('E_INTEGRITY', `page ${h.vaddr.toString(16)} of process ${h.dstId} is neither pre-copied nor in the final delta`);
      }
      const n = data.length / PAGE;
      if (n < 1 || n > h.nrPages || data.length % PAGE) throw new FerryError('E_INTERNAL', `page source returned ${data.length} bytes for ${h.nrPages} pages`);
      this.stats.requests++;
      this.stats.pages += n;
      // Header and data leave together (corked) without copying up to 4 MiB into one buffer; back-pressure
      // keeps a slow daemon from making us queue the whole memory.
      s.cork();
      s.write(pagesReply(h.dstId, h.vaddr, n));
      const more = s.write(data);
      s.uncork();
      if (!more) await new Promise((res) => s.once('drain', res));
    }
    await reader;
    const st = Buffer.alloc(4);
    s.write(st);
    s.end();
  }
}
