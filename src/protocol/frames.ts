// The envelope of every message on a Ferry WebSocket: one msgpack value per binary WebSocket message.

import type { WireError } from './errors.js';
import type { Capabilities } from './version.js';

/** Which process sits on the other end; decides which methods it may call. */
export type PeerRole = 'controller' | 'agent' | 'cli' | 'shim';
export const PEER_ROLES: readonly PeerRole[] = ['controller', 'agent', 'cli', 'shim'];

/** Server → client, first frame on a connection: version and a fresh challenge. */
export interface HelloFrame { t: 'hello'; v: [number, number]; name: string; nonce: Uint8Array }
/** Client → server: who it is and proof of the shared secret over both nonces. */
export interface AuthFrame { t: 'auth'; v: [number, number]; role: PeerRole; name: string; nonce: Uint8Array; mac: Uint8Array }
/** Server → client: the server's proof (mutual authentication) and its capabilities. */
export interface WelcomeFrame { t: 'welcome'; name: string; mac: Uint8Array; caps: Capabilities | null }
/** A call. `dl` is the caller's remaining budget in ms; the callee turns it into its own local deadline. */
export interface RequestFrame { t: 'req'; id: number; m: string; p: unknown; dl?: number }
export interface ResultFrame { t: 'res'; id: number; r: unknown }
export interface ErrorFrame { t: 'err'; id: number; e: WireError }
/** A one-way notification (progress, log lines). */
export interface EventFrame { t: 'evt'; m: string; p: unknown }
/** The caller gave up on request `id`; the callee aborts its work. */
export interface CancelFrame { t: 'cancel'; id: number }
/**
 * A piece of bulk data belonging to request `s` (the pull request that asked for it), entry `e` of its
 * manifest, sequence `q` within the entry. `h` is the XXH64 (seed 0) of `d`, big-endian; `f` marks the entry's last chunk.
 */
export interface ChunkFrame { t: 'chunk'; s: number; e: number; q: number; d: Uint8Array; h: Uint8Array; f: boolean }

export type Frame =
  | HelloFrame | AuthFrame | WelcomeFrame
  | RequestFrame | ResultFrame | ErrorFrame | EventFrame | CancelFrame | ChunkFrame;
