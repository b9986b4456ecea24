// Opening an authenticated Connection: the server side (accept) and the client side (dial).

import WebSocket, { type WebSocketServer } from 'ws';
import {
  FerryError, MAX_PREAUTH_FRAME_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION, clientProof, decodeFrame, encodeFrame,
  newNonce, proofMatches, serverProof, type Capabilities, type Frame, type PeerRole,
} from '../protocol/index.js';
import type { Logger } from '../log/logger.js';
import { Connection } from './connection.js';

const HANDSHAKE_MS = 5_000;
/** Close codes of the handshake (4000–4999 is the application range). */
export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_VERSION = 4426;
export const CLOSE_PROTOCOL = 4400;

/** ws options both ends must set: never the 100 MiB default payload, never compression of page data. */
export const WS_OPTIONS = { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false } as const;

export interface ServerIdentity { name: string; secret: string; caps: Capabilities | null; log: Logger }

/**
 * Server side. Nothing but an `auth` frame is read before the peer proved it holds the secret; a peer
 * that fails is closed with 4401 and never reaches a handler.
 */
export function acceptPeers(wss: WebSocketServer, id: ServerIdentity, onPeer: (c: Connection) => void): void {
  wss.on('connection', (ws) => {
    const nonce = newNonce();
    const timer = setTimeout(() => ws.close(CLOSE_UNAUTHENTICATED, 'E_UNAUTHENTICATED'), HANDSHAKE_MS);
    const send = (f: Frame): void => ws.send(encodeFrame(f), { binary: true });
    ws.once('message', (data, isBinary) => {
      clearTimeout(timer);
      let f: Frame;
      try {
        if (!isBinary) throw new FerryError('E_PROTOCOL', 'text frame');
        f = decodeFrame(data as Buffer, MAX_PREAUTH_FRAME_BYTES);
      } catch {
        ws.close(CLOSE_PROTOCOL, 'E_PROTOCOL');
        return;
      }
      if (f.t !== 'auth') { ws.close(CLOSE_PROTOCOL, 'E_PROTOCOL'); return; }
      if (f.v[0] !== PROTOCOL_VERSION.major) { ws.close(CLOSE_VERSION, 'E_PROTOCOL_VERSION'); return; }
      if (!proofMatches(clientProof(id.secret, f.role, f.name, nonce, f.nonce), f.mac)) {
        id.log.warn({ claimed: f.name, role: f.role }, 'refused unauthenticated peer');
        ws.close(CLOSE_UNAUTHENTICATED, 'E_UNAUTHENTICATED');
        return;
      }
      send({ t: 'welcome', name: id.name, mac: serverProof(id.secret, id.name, nonce, f.nonce), caps: id.caps });
      onPeer(new Connection(ws, f.name, f.role, id.log));
    });
    ws.on('error', () => undefined);
    send({ t: 'hello', v: [PROTOCOL_VERSION.major, PROTOCOL_VERSION.minor], name: id.name, nonce });
  });
}

export interface DialOptions {
  url: string; name: string; role: PeerRole; secret: string; log: Logger; signal?: AbortSignal;
  /** The role the server plays, which bounds what it may call on us. */
  serverRole: PeerRole;
}
export interface Dialed { conn: Connection; caps: Capabilities | null }

/** Client side: connects, answers the challenge and checks the server's proof. */
export function dial(o: DialOptions): Promise<Dialed> {
  return new Promise<Dialed>((resolve, reject) => {
    const ws = new WebSocket(o.url, { ...WS_OPTIONS, handshakeTimeout: HANDSHAKE_MS });
    const nonce = newNonce();
    let settled = false;
    const fail = (e: FerryError): void => {
      if (settled) return;
      settled = true;
      ws.terminate();
      reject(e);
    };
    const timer = setTimeout(() => fail(new FerryError('E_UNAVAILABLE', `handshake with ${o.url} timed out`)), HANDSHAKE_MS * 2);
    const onAbort = (): void => fail(new FerryError('E_ABORTED', 'dial aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => { clearTimeout(timer); o.signal?.removeEventListener('abort', onAbort); };
    let serverNonce: Uint8Array | null = null;
    let serverName = '';
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      let f: Frame;
      try {
        if (!isBinary) throw new FerryError('E_PROTOCOL', 'text frame');
        f = decodeFrame(data as Buffer, MAX_PREAUTH_FRAME_BYTES);
      } catch {
        cleanup();
        fail(new FerryError('E_PROTOCOL', `bad handshake frame from ${o.url}`));
        return;
      }
      if (f.t === 'hello' && serverNonce === null) {
        if (f.v[0] !== PROTOCOL_VERSION.major) { cleanup(); fail(new FerryError('E_PROTOCOL_VERSION', `${o.url} speaks protocol ${f.v.join('.')}`)); return; }
        serverNonce = f.nonce;
        serverName = f.name;
        ws.send(encodeFrame({ t: 'auth', v: [PROTOCOL_VERSION.major, PROTOCOL_VERSION.minor], role: o.role, name: o.name, nonce, mac: clientProof(o.secret, o.role, o.name, f.nonce, nonce) }), { binary: true });
        return;
      }
      if (f.t === 'welcome' && serverNonce !== null) {
        cleanup();
        if (!proofMatches(serverProof(o.secret, serverName, serverNonce, nonce), f.mac) || f.name !== serverName) {
          fail(new FerryError('E_UNAUTHENTICATED', `${o.url} could not prove it holds the cluster secret`));
          return;
        }
        ws.off('message', onMessage);
        settled = true;
        resolve({ conn: new Connection(ws, serverName, o.serverRole, o.log), caps: f.caps });
        return;
      }
      cleanup();
      fail(new FerryError('E_PROTOCOL', `unexpected ${f.t} during handshake with ${o.url}`));
    };
    ws.on('message', onMessage);
    ws.on('error', (err) => { cleanup(); fail(new FerryError('E_UNAVAILABLE', `cannot reach ${o.url}: ${err.message}`)); });
    ws.on('close', (code) => {
      cleanup();
      fail(code === CLOSE_UNAUTHENTICATED
        ? new FerryError('E_UNAUTHENTICATED', `${o.url} refused our credentials`)
        : code === CLOSE_VERSION ? new FerryError('E_PROTOCOL_VERSION', `${o.url} refused our protocol version`)
        : new FerryError('E_UNAVAILABLE', `${o.url} closed the connection during the handshake (${code})`));
    });
  });
}
