// The loopback HTTP server under every metadata emulator: records requests, tracks connections, closes cleanly.

import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the emulator received it. */
export interface RecordedRequest { method: string; url: string; headers: IncomingHttpHeaders; body: string }

/** Answers a request; may keep `res` open (a hanging GET) and answer later. */
export type EmulatorHandler = (req: RecordedRequest, res: ServerResponse) => void;

/** A node:http server on 127.0.0.1 whose requests and open connections tests can wait on. */
export class HttpEmulator {
  readonly requests: RecordedRequest[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly changed = new Set<() => void>();

  private constructor(readonly server: Server, readonly url: string) {}

  /** Listens on `port` (0: any free one). */
  static async start(handler: EmulatorHandler, port = 0): Promise<HttpEmulator> {
    const server = createServer();
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    const emu = new HttpEmulator(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('connection', (s: Socket) => {
      emu.sockets.add(s);
      s.on('close', () => { emu.sockets.delete(s); emu.notify(); });
    });
    server.on('request', (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        const r: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
        emu.requests.push(r);
        handler(r, res);
        emu.notify();
      });
    });
    return emu;
  }

  /** Resolves with the `nth` (1-based) matching request, already received or still to come. */
  whenRequest(match: (r: RecordedRequest) => boolean, nth = 1): Promise<RecordedRequest> {
    return this.when(() => this.requests.filter(match)[nth - 1]);
  }

  /** Resolves once no client connection is open: the client has let go of every socket. */
  idle(): Promise<void> {
    return this.when(() => (this.sockets.size === 0 ? true : undefined)).then(() => undefined);
  }

  /** Drops every connection and stops listening. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private when<T>(probe: () => T | undefined): Promise<T> {
    return new Promise((resolve) => {
      const check = (): void => {
        const v = probe();
        if (v === undefined) return;
        this.changed.delete(check);
        resolve(v);
      };
      this.changed.add(check);
      check();
    });
  }

  private notify(): void {
    for (const c of [...this.changed]) c();
  }
}
