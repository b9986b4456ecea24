// The demos' Redis client: RESP over one TCP connection, one command at a time, and whether it ever broke.

import type { Socket } from 'node:net';

/** Sends commands and returns their one-line replies (integer or status), in order. */
export class Client {
  private buf = '';
  private waiting: ((l: string) => void)[] = [];
  broken: string | null = null;
  constructor(private readonly s: Socket) {
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      this.buf += d;
      for (let i; (i = this.buf.indexOf('\r\n')) >= 0;) { const l = this.buf.slice(0, i); this.buf = this.buf.slice(i + 2); this.waiting.shift()?.(l); }
    });
    s.on('close', () => { this.broken ??= 'connection closed'; });
    s.on('error', (e) => { this.broken = e.message; });
  }
  cmd(...a: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.broken) { reject(new Error(this.broken)); return; }
      this.waiting.push(resolve);
      this.s.write(`*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`);
    });
  }
}

/**
 * The demos' workload: INCR counter + RPUSH log <n> in a loop over one connection, checking that each reply
 * continues the sequence exactly. `maxGap` is the longest wait for a reply (reset it to measure one move).
 */
export class Writer {
  acked = 0;
  errors = 0;
  maxGap = 0;
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(client: Client) {
    this.done = (async () => {
      let last = performance.now();
      while (!this.stopped) {
        const n = await client.cmd('INCR', 'counter');
        if (n !== `:${this.acked + 1}`) { this.errors++; process.stderr.write(`counter jumped: expected ${this.acked + 1}, got ${n}\n`); }
        const l = await client.cmd('RPUSH', 'log', String(this.acked + 1));
        if (l !== `:${this.acked + 1}`) { this.errors++; process.stderr.write(`log length ${l}, expected ${this.acked + 1}\n`); }
        this.acked++;
        const now = performance.now();
        this.maxGap = Math.max(this.maxGap, now - last);
        last = now;
      }
    })();
  }
  /** Stops after the command in flight; a broken connection counts as an error. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done.catch((e: unknown) => { this.errors++; process.stderr.write(`client failed: ${(e as Error).message}\n`); });
  }
}
