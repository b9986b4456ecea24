// What the benchmarks share: the client that measures the freeze from outside, and memhog containers.

import { connect, type Socket } from 'node:net';
import Docker from 'dockerode';

export const PORT = 28300;
export const round = (x: number): number => Math.round(x * 10) / 10;

/** One TCP connection pinging as fast as answers come; the longest silence is the client-observed freeze. */
export class Pinger {
  private sock!: Socket;
  private buf = '';
  private last = 0;
  maxGap = 0;
  pongs = 0;
  broken: string | null = null;
  errors = 0;
  private prev = -1;
  static async open(port: number): Promise<Pinger> {
    const p = new Pinger();
    for (let i = 0; i < 200; i++) {
      const s = await new Promise<Socket | null>((r) => { const c = connect(port, '127.0.0.1', () => r(c)); c.once('error', () => r(null)); });
      if (s) { p.sock = s; break; }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!p.sock) throw new Error(`memhog on ${port} did not answer`);
    p.sock.setEncoding('utf8');
    p.sock.setNoDelay(true);
    p.sock.on('data', (d: string) => p.onData(d));
    p.sock.on('close', () => { p.broken ??= 'closed'; });
    p.sock.on('error', (e) => { p.broken = e.message; });
    return p;
  }
  start(): void { this.last = performance.now(); this.sock.write('ping\n'); }
  private onData(d: string): void {
    this.buf += d;
    for (let i; (i = this.buf.indexOf('\n')) >= 0;) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      const m = /^pong (\d+)/.exec(line);
      if (!m) continue;
      const n = Number(m[1]);
      if (this.prev >= 0 && n !== this.prev + 1) this.errors++;
      this.prev = n;
      const now = performance.now();
      this.maxGap = Math.max(this.maxGap, now - this.last);
      this.last = now;
      this.pongs++;
      this.sock.write('ping\n');
    }
  }
  async command(cmd: string): Promise<string> {
    const s = await new Promise<Socket>((r, j) => { const c = connect(PORT, '127.0.0.1', () => r(c)); c.once('error', j); });
    s.setEncoding('utf8');
    return new Promise((resolve) => { let b = ''; s.on('data', (d: string) => { b += d; if (b.includes('\n')) { s.destroy(); resolve(b.trim()); } }); s.write(`${cmd}\n`); });
  }
  close(): void { this.sock.destroy(); }
}

export async function waitPongs(p: Pinger, n: number): Promise<void> {
  const target = p.pongs + n;
  while (p.pongs < target && !p.broken) await new Promise((r) => setTimeout(r, 10));
}

export const memhogCmd = (mib: number, rate = 0): string[] => ['memhog', '--mib', String(mib), '--rate', String(rate), '--pattern', 'random', '--port', String(PORT)];

export async function startMemhog(d: Docker, name: string, mib: number, rate = 0): Promise<void> {
  for (const c of await d.listContainers({ all: true, filters: { name: [`^/${name}$`] } })) await d.getContainer(c.Id).remove({ force: true });
  const c = await d.createContainer({ name, Image: 'ferry/memhog:1', Hostname: name, Cmd: memhogCmd(mib, rate), HostConfig: { NetworkMode: 'host' } });
  await c.start();
}

/** p-th percentile (nearest rank) of xs. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
