// Exact-length reads from a socket, for the binary page-server protocol.

import type { Socket } from 'node:net';
import { FerryError } from '../../src/protocol/index.js';

export class StreamReader {
  private pieces: Buffer[] = [];
  private buffered = 0;
  private waiting: { n: number; resolve: (b: Buffer | null) => void; reject: (e: Error) => void } | null = null;
  private ended: Error | 'eof' | null = null;

  constructor(sock: Socket) {
    sock.on('data', (b: Buffer) => { this.pieces.push(b); this.buffered += b.length; this.pump(); });
    sock.on('end', () => this.finish('eof'));
    sock.on('close', () => this.finish('eof'));
    sock.on('error', (e) => this.finish(e));
  }

  /** Exactly n bytes; null on a clean end of stream before the first byte. */
  read(n: number): Promise<Buffer | null> {
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.buffered >= w.n) {
      const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.buffered);
      const rest = all.subarray(w.n);
      this.pieces = rest.length ? [rest] : [];
      this.buffered = rest.length;
      this.waiting = null;
      w.resolve(all.subarray(0, w.n));
    } else if (this.ended) {
      this.waiting = null;
      if (this.ended === 'eof' && this.buffered === 0) w.resolve(null);
      else w.reject(this.ended === 'eof' ? new FerryError('E_PROTOCOL', `stream ended ${this.buffered} bytes into a ${w.n}-byte read`) : this.ended);
    }
  }

  private finish(e: Error | 'eof'): void {
    this.ended ??= e;
    this.pump();
  }
}
