/**
 * A removed cgroup's last counts: its storage stays readable while sockets
 * that outlived its processes hold it, so it is read again, backing off from
 * 10 ms to 1 s, until the kernel releases it or DRAIN_LIMIT_MS have passed.
 */

/** How long to keep reading a removed cgroup's storage. */
export const DRAIN_LIMIT_MS = 120_000;

/** Calls `read` (true while the storage is still there) until it is gone or the limit passed, then `drained`. */
export function drainStorage(read: () => boolean, drained: () => void): void {
  const started = Date.now();
  let delay = 10;
  const poll = () => {
    if (read() && Date.now() - started < DRAIN_LIMIT_MS) {
      delay = Math.min(delay * 2, 1000);
      setTimeout(poll, delay).unref();
      return;
    }
    drained();
  };
  setTimeout(poll, delay).unref();
}
