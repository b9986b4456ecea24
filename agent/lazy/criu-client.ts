// A client of the page server that `criu dump --lazy-pages` runs on the source: the frozen task's memory sits
// in CRIU's pipes, and we ask for exactly the pages the destination does not hold.
//
// Closing this connection in any way, even by dying, ends CRIU's dump as a success and kills the task
// (probed: docs/postcopy.md). So the session ends only on purpose: CLOSE at commit, or SIGKILL of CRIU (which
// lets a task that is still alive resume) on rollback.

import { connect, type Socket } from 'node:net';
import { FerryError } from '../../src/protocol/index.js';
import { PAGE, PS_HEADER, closeRequest, decodeHeader, getRequest } from '../../src/criu/page-server-wire.js';
import { StreamReader } from './stream-reader.js';

interface Pending { pid: number; vaddr: number; nr: number; resolve: (b: Buffer) => void; reject: (e: Error) => void }

/** CRIU's server answers from one pipe buffer at a time; larger asks only come back short. */
const MAX_GET = 256;
const IN_FLIGHT = 32;

export class CriuPageClient {
  private readonly pending: Pending[] = [];
  private broken: Error | null = null;
  private closing = false;
  private wake: (() => void) | null = null;

  private constructor(private readonly sock: Socket, private readonly reader: StreamReader) {
    void this.readLoop();
  }

  static async connect(port: number, signal: AbortSignal): Promise<CriuPageClient> {
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1', signal });
      s.once('connect', () => resolve(s));
      s.once('error', (e) => reject(new FerryError('E_CRIU_DUMP', `cannot reach CRIU's lazy page server on :${port}: ${e.message}`, { cause: e })));
    });
    sock.setNoDelay(true);
    return new CriuPageClient(sock, new StreamReader(sock));
  }

  /** Up to nr pages from vaddr; CRIU may answer fewer (never zero). */
  private get(pid: number, vaddr: number, nr: number): Promise<Buffer> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      this.pending.push({ pid, vaddr, nr, resolve, reject });
      this.sock.write(getRequest(pid, vaddr, nr));
      this.wake?.();
    });
  }

  /**
   * Fetches every range (which must lie inside PE_LAZY pagemap entries: a GET CRIU cannot serve ends its
   * session) with IN_FLIGHT requests pipelined; `onRun` gets each piece as it arrives, in no particular order.
   */
  async fetch(pid: number, ranges: Iterable<{ start: number; end: number }>, onRun: (vaddr: number, data: Buffer) => void | Promise<void>, signal: AbortSignal): Promise<number> {
    const work: [number, number][] = [];
    for (const r of ranges) for (let a = r.start; a < r.end; a += MAX_GET * PAGE) work.push([a, Math.min(r.end, a + MAX_GET * PAGE)]);
    let pages = 0;
    const lane = async (): Promise<void> => {
      for (let w = work.shift(); w; w = work.shift()) {
        signal.throwIfAborted();
        let [a] = w;
        const end = w[1];
        while (a < end) {
          const data = await this.get(pid, a, (end - a) / PAGE);
          await onRun(a, data);
          a += data.length;
          pages += data.length / PAGE;
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    return pages;
  }

  /**
   * Ends the session on purpose: CRIU finishes its dump (and kills the task if it is still alive). CRIU corks
   * its socket and never uncorks for the 4-byte status, so it arrives ~200 ms late (pageserver.md §1.4);
   * CRIU does not wait for us after CLOSE, so the caller waits for CRIU's exit, not for this status.
   */
  sendClose(): void {
    if (this.broken) throw this.broken;
    this.closing = true;
    this.wake?.();
    this.sock.end(closeRequest());
  }

  destroy(): void {
    this.closing = true;
    this.wake?.();
    this.sock.destroy();
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        if (this.closing) return;
        if (!this.pending.length) {
          // Nothing asked: wait for the next request rather than read (a CLOSE reply is read by close()).
          await new Promise<void>((r) => { this.wake = r; });
          this.wake = null;
          continue;
        }
        const h = await this.reader.read(PS_HEADER);
        if (!h) throw new FerryError('E_CRIU_DUMP', "CRIU's page server closed the session");
        const hdr = decodeHeader(h);
        const p = this.pending.shift()!;
        if (hdr.dstId !== p.pid || hdr.vaddr !== p.vaddr || hdr.nrPages < 1 || hdr.nrPages > p.nr) {
          throw new FerryError('E_PROTOCOL', `CRIU answered ${hdr.nrPages} pages at ${hdr.vaddr.toString(16)} of ${hdr.dstId} for a GET of ${p.nr} at ${p.vaddr.toString(16)} of ${p.pid}`);
        }
        const data = await this.reader.read(hdr.nrPages * PAGE);
        if (!data) throw new FerryError('E_CRIU_DUMP', "CRIU's page server closed mid-answer");
        p.resolve(Buffer.from(data));
      }
    } catch (e) {
      this.broken = e as Error;
      for (const p of this.pending.splice(0)) p.reject(this.broken);
    }
  }
}
