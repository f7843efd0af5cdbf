/**
 * One check, where a value a user's code returned may be a promise.
 *
 * @module
 */

/** True for anything with a callable `then` (a promise, or a promise-like object or function). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
