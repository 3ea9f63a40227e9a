/**
 * Runs `bin/podmeter <subcommand> ...` as a child process whose JSON log
 * lines (stderr) are collected; used by the agent and operator fixtures.
 *
 *   launchPodmeter(args, { ready, logs, env?, onLine?, prefix? }) -> { child, listen }
 *     `prefix` is a command that runs bin/podmeter (its path and `args` appended),
 *     e.g. one entering namespaces first.
 *     `listen` resolves with the address of the log line whose msg is `ready`,
 *     or rejects with the non-JSON stderr and the last log lines if it exits
 *     first or is not ready within `readyMs` (default 180 s; then it is killed).
 *   signalAndWait(child, signal, timeoutMs = 60 s, logs?) -> exit code (null
 *     after a signal); kills (SIGKILL) and rejects (naming the signal, each
 *     thread's state and kernel stack, the last log lines) when the child
 *     outlives the timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const PODMETER = new URL('../../bin/podmeter', import.meta.url).pathname;

export function launchPodmeter(
  args: string[],
  options: {
    ready: string;
    logs: Record<string, unknown>[];
    env?: NodeJS.ProcessEnv;
    onLine?: (line: string) => void;
    readyMs?: number;
    prefix?: string[];
  },
): { child: ChildProcess; listen: Promise<string> } {
  const [command, ...argv] = [...(options.prefix ?? []), PODMETER, ...args];
  const child = spawn(command!, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
  let stderr = '';
  let timer: NodeJS.Timeout | undefined;
  const listen = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        options.logs.push(entry);
        options.onLine?.(line);
        if (entry.msg === options.ready) resolve(String(entry.listen));
      } catch {
        stderr += `${line}\n`;
      }
    });
    const readyMs = options.readyMs ?? 180_000;
    timer = setTimeout(() => {
      child.kill('SIGKILL'); // never left running behind a failed test
      reject(
        new Error(
          `${args[0]} not ready within ${readyMs} ms (killed):\n${stderr}${JSON.stringify(options.logs.slice(-5))}`,
        ),
      );
    }, readyMs);
    child.once('exit', (code) =>
      reject(
        new Error(`${args[0]} exited (${code}) before ready:\n${stderr}${JSON.stringify(options.logs.slice(-5))}`),
      ),
    );
  }).finally(() => clearTimeout(timer));

  return { child, listen };
}

/**
 * Sends `signal` (unless the child has exited) and waits for the exit. A child
 * still running after `timeoutMs` is killed (SIGKILL) and the promise rejects
 * with what it was doing (each thread's state, wait channel and kernel stack,
 * and its last log lines when `logs` is given): a test's cleanup never leaves
 * a process behind, even one that hangs, and a hang says where.
 */
export async function signalAndWait(
  child: ChildProcess,
  signal: NodeJS.Signals,
  timeoutMs = 60_000,
  logs?: Record<string, unknown>[],
): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  let timer: NodeJS.Timeout | undefined;
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('exit', (code) => resolve(code));
    timer = setTimeout(() => {
      const where = child.pid === undefined ? '' : threadsOf(child.pid);
      child.kill('SIGKILL');
      const last =
        logs === undefined
          ? ''
          : `\nlast log lines:\n${logs
              .slice(-10)
              .map((l) => JSON.stringify(l))
              .join('\n')}`;
      reject(
        new Error(
          `pid ${child.pid} still running ${timeoutMs} ms after ${signal}; killed it (SIGKILL)\n${where}${last}`,
        ),
      );
    }, timeoutMs);
  });
  child.kill(signal);
  return exited.finally(() => clearTimeout(timer));
}

/** Each thread of `pid`: name, state, wait channel and kernel stack (root reads the stacks). */
export function threadsOf(pid: number): string {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch (err) {
      return `(${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`;
    }
  };
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return `pid ${pid}: gone from /proc\n`;
  }
  return tids
    .map((tid) => {
      const dir = `/proc/${pid}/task/${tid}`;
      const state = /^State:\s*(.*)$/m.exec(read(`${dir}/status`))?.[1] ?? '?';
      const stack = read(`${dir}/stack`).split('\n').slice(0, 12).join(' < ');
      return `thread ${tid} (${read(`${dir}/comm`)}): ${state}, wchan ${read(`${dir}/wchan`)}, stack: ${stack}\n`;
    })
    .join('');
}
