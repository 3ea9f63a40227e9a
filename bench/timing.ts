/** What the benchmarks that time synchronous steps share: the timing itself, and a turn of the loop for Ctrl-C. */

/** Lets a pending Ctrl-C run its handler between the synchronous phases. */
export const yieldToSignals = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Runs fn once; its result and how long it took. */
export function timed<T>(fn: () => T): { ms: number; value: T } {
  const start = performance.now();
  const value = fn();
  return { ms: performance.now() - start, value };
}
