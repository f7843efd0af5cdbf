/**
 * One 'abort' listener per AbortSignal, however many runs wait on it. A program may give the same
 * signal (its shutdown signal, say) to many runs at once; one listener each made Node warn of a
 * possible leak past ten ("MaxListenersExceededWarning ... abort listeners added to [AbortSignal]").
 *
 * @module
 */

interface Waiters {
  callbacks: Set<() => void>;
  listener: () => void;
}

const waiting = new WeakMap<AbortSignal, Waiters>();

/**
 * Calls `onAbort` once when `signal` aborts (never if it already has: check `signal.aborted`
 * first). Returns what stops waiting; call it when the wait is over.
 */
export function whenAborted(signal: AbortSignal, onAbort: () => void): () => void {
  let waiters = waiting.get(signal);
  if (!waiters) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      waiting.delete(signal);
      for (const callback of callbacks) {
        // One that throws must not keep the others from their abort (as separate listeners
        // would not); its error is thrown as a listener's would be.
        try {
          callback();
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    };
    waiters = { callbacks, listener };
    waiting.set(signal, waiters);
    signal.addEventListener('abort', listener, { once: true });
  }
  // Wrapped, so that the same function given twice is two waits.
  const entry = () => onAbort();
  const own = waiters;
  own.callbacks.add(entry);
  return () => {
    if (!own.callbacks.delete(entry) || own.callbacks.size > 0 || waiting.get(signal) !== own) return;
    waiting.delete(signal);
    signal.removeEventListener('abort', own.listener);
  };
}
