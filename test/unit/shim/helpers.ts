// Shared test helpers for the shim codec tests: hex conversion, golden fixtures and controllable promises.

import { readFileSync } from 'node:fs';

/** Lower-case hex of bytes. */
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Bytes from hex, ignoring spaces so fixtures can be grouped by field. */
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** UTF-8 bytes of a string. */
export const utf8 = (s: string): number[] => [...Buffer.from(s, 'utf8')];

/** Concatenates byte arrays and number lists into one Uint8Array. */
export const bytes = (...parts: Array<Uint8Array | readonly number[]>): Uint8Array => {
  const flat: number[] = [];
  for (const p of parts) flat.push(...p);
  return new Uint8Array(flat);
};

interface GoldenEntry {
  name: string;
  type: string;
  text: string;
  hex: string;
}

const golden: readonly GoldenEntry[] = JSON.parse(readFileSync(new URL('./fixtures/protoc-golden.json', import.meta.url), 'utf8')) as GoldenEntry[];

/** A reference encoding produced by `protoc --encode` (see fixtures/gen-protoc-golden.sh). */
export function protocGolden(name: string): Uint8Array {
  const e = golden.find((g) => g.name === name);
  if (e === undefined) throw new Error(`no protoc fixture named ${name}`);
  return unhex(e.hex);
}

/** A promise with its resolve/reject exposed, so a test decides when a held call is released. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every already-settled promise callback run (no timers involved). */
export async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}
