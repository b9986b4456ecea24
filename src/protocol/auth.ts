// Mutual challenge-response over a shared secret: neither side reveals the secret, both prove they hold it.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PeerRole } from './frames.js';

export const NONCE_BYTES = 32;
export const newNonce = (): Buffer => randomBytes(NONCE_BYTES);

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const mac = (secret: string, text: string): Buffer => createHmac('sha256', secret).update(text).digest();

// Each MAC binds both nonces, the direction and the claimed identity, so a recorded proof cannot be
// replayed on another connection, reflected back, or reused under another name.
export const clientProof = (secret: string, role: PeerRole, name: string, serverNonce: Uint8Array, clientNonce: Uint8Array): Buffer =>
  mac(secret, `ferry/1 client|${role}|${name}|${hex(serverNonce)}|${hex(clientNonce)}`);

export const serverProof = (secret: string, name: string, serverNonce: Uint8Array, clientNonce: Uint8Array): Buffer =>
  mac(secret, `ferry/1 server|${name}|${hex(clientNonce)}|${hex(serverNonce)}`);

export function proofMatches(expected: Buffer, got: Uint8Array): boolean {
  return got.length === expected.length && timingSafeEqual(expected, Buffer.from(got.buffer, got.byteOffset, got.byteLength));
}
