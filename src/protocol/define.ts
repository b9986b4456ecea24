// Helpers that declare a protocol method once, with the schemas that validate it on both ends.

import type { z } from 'zod';

/** A request/response method: the name on the wire and the shapes of its params and result. */
export interface Method<P, R> {
  readonly name: string;
  readonly params: z.ZodType<P>;
  readonly result: z.ZodType<R>;
}
/** A one-way event. */
export interface EventType<P> {
  readonly name: string;
  readonly payload: z.ZodType<P>;
}

export const method = <P, R>(name: string, params: z.ZodType<P>, result: z.ZodType<R>): Method<P, R> => ({ name, params, result });
export const event = <P>(name: string, payload: z.ZodType<P>): EventType<P> => ({ name, payload });

export type ParamsOf<M> = M extends Method<infer P, unknown> ? P : never;
export type ResultOf<M> = M extends Method<unknown, infer R> ? R : never;
/** The handler table type: a missing or mistyped handler is a compile error. */
export type HandlersOf<Api extends Record<string, Method<any, any>>, Ctx> = {
  [K in keyof Api]: (params: ParamsOf<Api[K]>, ctx: Ctx) => Promise<ResultOf<Api[K]>>;
};
