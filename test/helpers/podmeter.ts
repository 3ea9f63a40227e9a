/**
 * Runs `bin/podmeter <subcommand> ...` as a child process whose JSON log
 * lines (stderr) are collected; used by the agent and operator fixtures.
 *
 *   launchPodmeter(args, { ready, logs, env?, onLine? }) -> { child, listen }
 *     `listen` resolves with the address of the log line whose msg is `ready`,
 *     or rejects with the non-JSON stderr and the last log lines if it exits first.
 *   signalAndWait(child, signal) -> exit code (null after a signal)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export const PODMETER = new URL('../../bin/podmeter', import.meta.url).pathname;

export function launchPodmeter(
  args: string[],
  options: { ready: string; logs: Record<string, unknown>[]; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void },
): { child: ChildProcess; listen: Promise<string> } {
  const child = spawn(PODMETER, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
  let stderr = '';
  const listen = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        options.logs.push(entry);
        options.onLine?.(line);
        if (entry.msg === options.ready) resolve(String(entry.listen));
      } catch {
        stderr += `${line}\n`;
      }
    });
    child.once('exit', (code) => reject(new Error(`${args[0]} exited (${code}) before ready:\n${stderr}${JSON.stringify(options.logs.slice(-5))}`)));
  });
  return { child, listen };
}

/** Sends `signal` (unless the child has exited) and waits for the exit. */
export async function signalAndWait(child: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill(signal);
  return exited;
}
