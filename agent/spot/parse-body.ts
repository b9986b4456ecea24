// Turns a metadata response body into a validated value, or an E_PROTOCOL error that watchers log and ignore.

import type { z } from 'zod';
import { FerryError } from '../../src/protocol/errors.js';

/** How much of a bad body goes into the error details: enough to recognise it, not a log flood. */
const BODY_EXCERPT_CHARS = 120;

/** Parses `text` as JSON and validates it against `schema`; throws `E_PROTOCOL` with an excerpt otherwise. */
export function parseJsonBody<T>(schema: z.ZodType<T>, text: string, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e: unknown) {
    throw new FerryError('E_PROTOCOL', `${what}: not JSON`, { cause: e, details: { body: text.slice(0, BODY_EXCERPT_CHARS) } });
  }
  return validate(schema, value, what, text);
}

/** Validates an already parsed value (e.g. one element of a document); throws `E_PROTOCOL` otherwise. */
export function validate<T>(schema: z.ZodType<T>, value: unknown, what: string, text?: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue === undefined ? '' : ` at ${issue.path.join('.') || '(root)'}: ${issue.message}`;
  const body = (text ?? safeStringify(value)).slice(0, BODY_EXCERPT_CHARS);
  throw new FerryError('E_PROTOCOL', `${what}: unexpected shape${where}`, { details: { body } });
}

function safeStringify(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
