import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { z } from 'zod';
import { CHUNK_HEADER_BYTES, encodeFrame, method, MAX_FRAME_BYTES, PROTOCOL_VERSION, FerryError, type Frame } from '../../../src/protocol/index.js';
import { Connection, type HandlerEntry } from '../../../src/rpc/connection.js';
import { acceptPeers, dial, WS_OPTIONS } from '../../../src/rpc/handshake.js';
import { silentLogger } from '../../../src/log/logger.js';

const SECRET = 'test-secret-0123456789';
const Echo = method('test/echo', z.object({ s: z.string() }), z.object({ s: z.string() }));
const Fail = method('test/fail', z.object({}), z.object({}));
const Hang = method('test/hang', z.object({}), z.object({}));
const Stream = method('test/stream', z.object({ n: z.number(), corrupt: z.boolean() }), z.object({ n: z.number() }));

interface Server { url: string; calls: string[]; aborted: string[]; peers: Connection[]; close(): Promise<void> }

async function server(): Promise<Server> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...WS_OPTIONS });
  await once(wss, 'listening');
  const calls: string[] = [];
  const aborted: string[] = [];
  const peers: Connection[] = [];
  const handlers: HandlerEntry[] = [
    { method: Echo, roles: ['controller'], handler: async (p) => { calls.push('echo'); return p; } },
    { method: Fail, roles: ['controller'], handler: async () => { calls.push('fail'); throw new FerryError('E_PRECONDITION', 'not today'); } },
    { method: Hang, roles: ['controller'], handler: async (_p, ctx) => {
      calls.push('hang');
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => { aborted.push('hang'); resolve(); }));
      throw ctx.signal.reason;
    } },
    { method: Stream, roles: ['controller'], handler: async (p, ctx) => {
      const { n, corrupt } = p as { n: number; corrupt: boolean };
      for (let i = 0; i < n; i++) await ctx.sendChunk(0, i, Buffer.alloc(CHUNK_HEADER_BYTES + 1000, i), i === n - 1);
      if (corrupt) {
        // A frame whose payload does not match its checksum, as a flipped bit on the way would produce.
        (ctx.conn as unknown as { ws: WebSocket }).ws.send(encodeFrame({ t: 'chunk', s: ctx.requestId, e: 1, q: 0, d: Buffer.from('x'), h: Buffer.alloc(8), f: true }));
      }
      return { n };
    } },
  ];
  acceptPeers(wss, { name: 'srv', secret: SECRET, caps: null, log: silentLogger() }, (c) => { c.serve(handlers); peers.push(c); });
  const { port } = wss.address() as AddressInfo;
  return { url: `ws://127.0.0.1:${port}/`, calls, aborted, peers, close: () => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(() => r()); }) };
}

const connect = (url: string, secret = SECRET, role: 'controller' | 'agent' = 'controller') =>
  dial({ url, name: 'client', role, serverRole: 'agent', secret, log: silentLogger() });

describe('Connection over a real WebSocket', () => {
  const toClose: (() => Promise<void> | void)[] = [];
  afterEach(async () => { for (const f of toClose.splice(0)) await f(); });
  const start = async () => { const s = await server(); toClose.push(s.close); return s; };

  it('authenticates both ways and answers requests', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    expect(conn.peerName).toBe('srv');
    await expect(conn.request(Echo, { s: 'hi' })).resolves.toEqual({ s: 'hi' });
    conn.close();
  });

  it('refuses a peer with the wrong secret before any handler runs', async () => {
    const s = await start();
    await expect(connect(s.url, 'wrong-secret-0123456789')).rejects.toMatchObject({ code: 'E_UNAUTHENTICATED' });
    expect(s.calls).toEqual([]);
    expect(s.peers).toHaveLength(0);
  });

  it('refuses a client that skips the handshake and sends a request', async () => {
    const s = await start();
    const ws = new WebSocket(s.url);
    await once(ws, 'message'); // hello
    ws.send(encodeFrame({ t: 'req', id: 1, m: 'test/echo', p: { s: 'x' } }));
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(4400);
    expect(s.calls).toEqual([]);
  });

  it('refuses a client that speaks another major version', async () => {
    const s = await start();
    const ws = new WebSocket(s.url);
    await once(ws, 'message');
    ws.send(encodeFrame({ t: 'auth', v: [PROTOCOL_VERSION.major + 1, 0], role: 'controller', name: 'x', nonce: Buffer.alloc(32), mac: Buffer.alloc(32) }));
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(4426);
  });

  it('a server that cannot prove the secret is refused by the client', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    toClose.push(() => new Promise((r) => wss.close(() => r())));
    wss.on('connection', (ws) => {
      ws.send(encodeFrame({ t: 'hello', v: [1, 0], name: 'impostor', nonce: Buffer.alloc(32, 9) }));
      ws.on('message', () => ws.send(encodeFrame({ t: 'welcome', name: 'impostor', mac: Buffer.alloc(32), caps: null })));
    });
    const { port } = wss.address() as AddressInfo;
    await expect(connect(`ws://127.0.0.1:${port}/`)).rejects.toMatchObject({ code: 'E_UNAUTHENTICATED' });
  });

  it('carries typed errors', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    await expect(conn.request(Fail, {})).rejects.toMatchObject({ code: 'E_PRECONDITION' });
    conn.close();
  });

  it('validates params and refuses roles that may not call a method', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    await expect(conn.request(Echo, { s: 1 } as unknown as { s: string })).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
    conn.close();
    const { conn: agent } = await connect(s.url, SECRET, 'agent');
    await expect(agent.request(Echo, { s: 'x' })).rejects.toMatchObject({ code: 'E_FORBIDDEN' });
    agent.close();
    expect(s.calls).toEqual([]);
  });

  it('closes the connection on an oversized frame', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    const closed = once(conn, 'close');
    const ws = (conn as unknown as { ws: WebSocket }).ws;
    ws.send(Buffer.alloc(MAX_FRAME_BYTES + 1));
    const [err] = (await closed) as [FerryError];
    expect(err.code).toBe('E_UNAVAILABLE');
    await expect(conn.request(Echo, { s: 'x' })).rejects.toMatchObject({ code: 'E_UNAVAILABLE' });
  });

  it('closes the connection on a malformed frame', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    const closed = once(conn, 'close');
    (conn as unknown as { ws: WebSocket }).ws.send(encodeFrame({ t: 'nonsense' } as unknown as Frame));
    await closed;
    expect(conn.closed).toBe(true);
  });

  it('cancelling a request aborts the handler on the other side', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    const ac = new AbortController();
    const p = conn.request(Hang, {}, { signal: ac.signal });
    await expect.poll(() => s.calls).toContain('hang');
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'E_ABORTED' });
    await expect.poll(() => s.aborted).toEqual(['hang']);
    conn.close();
  });

  it('a lost peer fails pending requests with E_UNAVAILABLE and aborts its handlers', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    const p = conn.request(Hang, {});
    await expect.poll(() => s.calls).toContain('hang');
    (conn as unknown as { ws: WebSocket }).ws.terminate();
    await expect(p).rejects.toMatchObject({ code: 'E_UNAVAILABLE' });
    await expect.poll(() => s.aborted).toEqual(['hang']);
  });

  it('delivers chunks in order before the result', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    const got: number[] = [];
    const r = await conn.request(Stream, { n: 50, corrupt: false }, { onChunk: async (c) => { got.push(c.q); expect(c.d[0]).toBe(c.q % 256); } });
    expect(r).toEqual({ n: 50 });
    expect(got).toEqual([...Array(50).keys()]);
    conn.close();
  });

  it('a chunk that fails its checksum fails the request with E_INTEGRITY', async () => {
    const s = await start();
    const { conn } = await connect(s.url);
    await expect(conn.request(Stream, { n: 3, corrupt: true }, { onChunk: () => undefined })).rejects.toMatchObject({ code: 'E_INTEGRITY' });
    conn.close();
  });
});
