// HTTP to a link-local metadata service: a fresh connection per request, a clock-driven timeout, a bounded body.

import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { FerryError } from '../../src/protocol/errors.js';
import type { Clock } from './clock.js';

/** Metadata documents are a few hundred bytes; anything far bigger is not a metadata service talking. */
export const MAX_METADATA_BODY_BYTES = 64 * 1024;

/** One request to the metadata service. */
export interface MetadataRequest {
  method?: 'GET' | 'PUT' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** Measured on the injected clock, so fake-clock tests decide when a request times out. */
  timeoutMs: number;
  signal: AbortSignal;
}

/** A fully read response. Status handling (404 = no notice, 401 = stale token…) is the provider's business. */
export interface MetadataResponse {
  status: number;
  body: string;
  /** A response header by case-insensitive name, or null. */
  header(name: string): string | null;
}

/**
 * A minimal client for one metadata endpoint. Errors are FerryErrors: `E_UNAVAILABLE` (no connection, reset),
 * `E_DEADLINE` (no complete answer in time), `E_ABORTED` (the caller's signal), `E_PROTOCOL` (oversized body).
 *
 * Built on node:http with `agent: false` rather than fetch: each request owns its socket and destroys it on abort or
 * timeout. fetch's shared pool re-opens an idle connection after an abort and keeps it ~4 s, an open handle
 * outliving the watcher. Polls are seconds apart, so connection reuse buys nothing here.
 */
export class MetadataHttp {
  constructor(
    /** Base URL, e.g. `http://169.254.169.254` or an emulator's `http://127.0.0.1:<port>`. */
    readonly endpoint: string,
    private readonly clock: Clock,
  ) {}

  /** Sends one request and reads the whole body. Redirects are returned as they are, never followed. */
  request(path: string, r: MetadataRequest): Promise<MetadataResponse> {
    const method = r.method ?? 'GET';
    const what = `${method} ${path}`;
    if (r.signal.aborted) return Promise.reject(new FerryError('E_ABORTED', `${what} aborted`));
    const url = new URL(path, this.endpoint);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<MetadataResponse>((resolve, reject) => {
      const timer = new AbortController();
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        timer.abort();
        r.signal.removeEventListener('abort', onAbort);
        return true;
      };
      const fail = (e: FerryError): void => {
        if (!settle()) return;
        req.destroy();
        reject(e);
      };
      const onAbort = (): void => fail(new FerryError('E_ABORTED', `${what} aborted`));
      const req = send(url, {
        method,
        agent: false,
        headers: { ...r.headers, ...(r.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(r.body)) }) },
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_METADATA_BODY_BYTES) fail(new FerryError('E_PROTOCOL', `${what}: response body over ${MAX_METADATA_BODY_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => {
          if (!settle()) return;
          const headers = res.headers;
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), header: (name) => headerValue(headers, name) });
        });
        res.on('error', (e: Error) => fail(new FerryError('E_UNAVAILABLE', `${what}: ${reason(e)}`, { cause: e })));
      });
      req.on('error', (e: Error) => fail(new FerryError('E_UNAVAILABLE', `${what}: ${reason(e)}`, { cause: e })));
      r.signal.addEventListener('abort', onAbort, { once: true });
      void this.clock.sleep(r.timeoutMs, timer.signal).then(() => {
        if (!timer.signal.aborted) fail(new FerryError('E_DEADLINE', `${what}: no answer within ${r.timeoutMs} ms`));
      });
      req.end(r.body);
    });
  }
}

function headerValue(h: IncomingHttpHeaders, name: string): string | null {
  const v = h[name.toLowerCase()];
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(', ') : v;
}

/** The socket error code (ECONNREFUSED…) is what an operator needs to see first. */
function reason(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === undefined ? e.message : `${code} (${e.message})`;
}
