/**
 * One process-wide list of cleanups for what tests and benchmarks create in
 * the kernel (test cgroups, network namespaces, bpffs pins, attachments).
 * The other helpers register their remove() here automatically, so that:
 *
 * - Ctrl-C (SIGINT) or SIGTERM runs every pending cleanup, newest first, and
 *   then exits (130 / 143): benchmarks and interrupted tests leave nothing
 *   behind. A second signal exits at once.
 * - a test can still remove things itself (t.after, try/finally): removing
 *   unregisters, and every remove() is idempotent.
 *
 * API:
 *   registerCleanup(fn): () => void   // returns `unregister`
 *   runAllCleanups(): Promise<void>   // what the signal handler runs
 *   afterOrSignal(t, fn)              // t.after(fn) when t is given, else only on signal
 *   runMain(main)                     // a benchmark's entry: cleans up on success, error and signal
 *   staleTestName(name), sweepOnce(kind, fn)  // what tests killed by SIGKILL left, removed by the next
 *
 * Links and other BPF fds need no entry: the kernel drops an unpinned link
 * when the process that holds its fd exits.
 */

import { existsSync } from 'node:fs';

export type CleanupFn = () => unknown;

/** Anything with node:test's `after(fn)`: a TestContext, a SuiteContext, or `{ after }` from node:test. */
export interface AfterHook {
  after(fn: () => unknown): unknown;
}

const pending = new Set<CleanupFn>();
let handlersInstalled = false;
let signalled = false;

function installSignalHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(signal, () => {
      if (signalled) process.exit(code);
      signalled = true;
      process.stderr.write(`\n${signal}: removing test cgroups, netns and pins before exiting...\n`);
      const timer = setTimeout(() => process.exit(code), 15_000);
      timer.unref();
      void runAllCleanups().finally(() => process.exit(code));
    });
  }
}

/** True once SIGINT/SIGTERM arrived: the handler is cleaning up and will exit the process. */
export function interrupted(): boolean {
  return signalled;
}

/**
 * Runs a benchmark's main: on success or failure every pending cleanup runs;
 * after a signal the handler owns the exit (errors from torn-down resources are ignored).
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  installSignalHandlers();
  try {
    await main();
  } catch (err) {
    if (interrupted()) return;
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
  if (interrupted()) return;
  await runAllCleanups();
}

/** Registers a cleanup to run on SIGINT/SIGTERM; returns a function that unregisters it. */
export function registerCleanup(fn: CleanupFn): () => void {
  installSignalHandlers();
  pending.add(fn);
  return () => {
    pending.delete(fn);
  };
}

/** Runs (and unregisters) every pending cleanup, newest first; errors are printed, not thrown. */
export async function runAllCleanups(): Promise<void> {
  const fns = [...pending].reverse();
  pending.clear();
  for (const fn of fns) {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`cleanup failed: ${(err as Error).stack ?? String(err)}\n`);
    }
  }
}

/** Runs `fn` after the test when `t` is given; in any case on SIGINT/SIGTERM (until it has run). */
export function afterOrSignal(t: AfterHook | undefined, fn: () => void | Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  let unregister = (): void => {};
  const once = (): Promise<void> => {
    unregister();
    done ??= (async () => {
      await fn();
    })();
    return done;
  };
  unregister = registerCleanup(once);
  t?.after(once);
  return once;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A short random suffix for `podmeter-test-<rand>` names: the pid of the process that made it (base 36), then random. */
export function randomSuffix(): string {
  return `${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export const TEST_PREFIX = 'podmeter-test-';

/** `podmeter-test-<pid>-<rand>`, and make run's demo namespaces `...-server`, `...-client`. */
const TEST_NAME = /^podmeter-test-([0-9a-z]{1,7})-[0-9a-z]{1,6}(?:-server|-client)?$/;

/**
 * True for a name a test process made (TEST_PREFIX + randomSuffix()) whose
 * process no longer runs: what a test killed by SIGKILL, a runner's bound or
 * a crash left, which its own cleanups could not remove. A name whose pid
 * runs (the test still going, or the pid reused) is never stale.
 */
export function staleTestName(name: string): boolean {
  const m = TEST_NAME.exec(name);
  if (!m) return false;
  const pid = Number.parseInt(m[1]!, 36);
  return pid > 0 && !existsSync(`/proc/${pid}`);
}

/**
 * Removes what dead tests left among `names` (staleTestName) with `remove`;
 * returns what went. One that cannot go (gone meanwhile, or still in use by
 * a process that is not ours to end) is left for the next sweep.
 */
export function sweepStale(names: Iterable<string>, remove: (name: string) => void): string[] {
  const removed: string[] = [];
  for (const name of names) {
    if (!staleTestName(name)) continue;
    try {
      remove(name);
      removed.push(name);
    } catch {
      // the next sweep tries again
    }
  }
  return removed;
}

const swept = new Set<string>();

/** Runs `sweep` the first time a process asks for `kind`: each helper clears what dead tests left before making its own. */
export function sweepOnce(kind: string, sweep: () => unknown): void {
  if (swept.has(kind)) return;
  swept.add(kind);
  try {
    sweep();
  } catch (err) {
    process.stderr.write(`test helpers: sweeping stale ${kind}s failed (going on): ${(err as Error).message}\n`);
  }
}
