/**
 * The one poll of the tests and benchmarks: waitFor(what, fn, timeoutMs?, describe?).
 */
import { sleep } from './cleanup.ts';

/**
 * Polls `fn` until it returns a value other than undefined, or fails after
 * `timeoutMs`: a generous deadline (the machine may be busy), not a speed check.
 * Between checks it waits a tenth of the time waited so far (20 ms to 1 s: a
 * change is seen at most 10 % late) and at least as long as the last check
 * took, so a long wait or a slow check (kubectl, a VM) does not keep the
 * machine busy. The error ends with what `describe` says (e.g. the last value
 * seen).
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  describe?: () => unknown,
): Promise<T> {
  const start = Date.now();
  const deadline = start + timeoutMs;
  for (;;) {
    const started = Date.now();
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const last = describe ? `: ${text(await describe())}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
    }
    const pause = Math.min(1000, Math.max(20, (Date.now() - start) / 10));
    await sleep(Math.max(pause, Date.now() - started));
  }
}

function text(value: unknown): string {
  if (typeof value === 'string') return value;
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)) ?? String(value);
}
