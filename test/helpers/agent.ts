/**
 * Runs the real agent (`bin/podmeter agent`) as a child process for tests
 * and benchmarks, on a test cgroup root with its own bpffs dir and state dir,
 * and reads its HTTP API.
 *
 *   startAgentProcess(t, { cgroupRoot, args? }) -> AgentProcess
 *     .url, .bpffs, .stateDir, .cgroups(), .metrics(), .kill(signal), .restart()
 *
 * Cleanup (t.after or signal): stops the agent, removes its pins (which
 * detaches its links) and its state dir.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PinDir } from '../../agent/counting/pins.ts';
import type { CgroupView } from '../../agent/http/api.ts';
import { launchPodmeter, signalAndWait } from './podmeter.ts';
import { sweepStaleBpffsDirs } from './bpffs.ts';
import { afterOrSignal, randomSuffix, sweepOnce, TEST_PREFIX, type AfterHook } from './cleanup.ts';

export interface AgentProcess {
  url: string;
  bpffs: string;
  stateDir: string;
  child: ChildProcess;
  /** Every log line so far (JSON objects). */
  logs: Record<string, unknown>[];
  cgroups(): Promise<CgroupView[]>;
  metrics(): Promise<string>;
  /** Sends a signal and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** Starts the agent again with the same flags (and port), e.g. after kill('SIGKILL'). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface AgentOptions {
  cgroupRoot: string;
  args?: string[];
  env?: Record<string, string>;
  /** An earlier agent's bpffs dir and state dir (another agent version or other flags over its pins). */
  bpffs?: string;
  stateDir?: string;
  /** A command that runs bin/podmeter (launchPodmeter's `prefix`). */
  prefix?: string[];
}

/** Spawns `podmeter agent` and resolves when it is ready (or rejects with its stderr). */
export async function startAgentProcess(t: AfterHook | undefined, options: AgentOptions): Promise<AgentProcess> {
  sweepOnce('bpffs dir', sweepStaleBpffsDirs);
  const bpffs = options.bpffs ?? `/sys/fs/bpf/${TEST_PREFIX}${randomSuffix()}`;
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), TEST_PREFIX));
  let listen = '127.0.0.1:0';
  const logs: Record<string, unknown>[] = [];
  let child!: ChildProcess;

  const launch = (): Promise<string> => {
    const args = [
      'agent',
      '--cgroup-root',
      options.cgroupRoot,
      '--bpffs',
      bpffs,
      '--state-dir',
      stateDir,
      '--listen',
      listen,
      '--log-format',
      'json',
      ...(options.args ?? []),
    ];
    const launched = launchPodmeter(args, {
      ready: 'agent ready',
      logs,
      ...(options.env ? { env: options.env } : {}),
      ...(options.prefix ? { prefix: options.prefix } : {}),
    });
    child = launched.child;
    return launched.listen;
  };

  const kill = (signal: NodeJS.Signals = 'SIGTERM') => signalAndWait(child, signal, undefined, logs);
  const listening = launch();
  // Registered before the agent is ready: an agent that never gets there is stopped too.
  const stop = afterOrSignal(t, async () => {
    try {
      await kill('SIGTERM');
    } finally {
      new PinDir(bpffs).removeAll();
      // Retried: a later agent started over these dirs (a restart test) may still be writing its
      // state file while this earlier one's cleanup runs (after hooks run in registration order).
      // An ENOTEMPTY here failed the hook, and the later agent's cleanup never ran: its file hung.
      rmSync(stateDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    }
  });
  listen = await listening;
  // https with --metrics-auth kubernetes (the ready line says which).
  const url = `${logs.findLast((l) => l.msg === 'agent ready')?.scheme === 'https' ? 'https' : 'http'}://${listen}`;
  const get = async (path: string) => {
    const res = await fetch(`${url}${path}`);
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return res;
  };

  return {
    url,
    bpffs,
    stateDir,
    get child() {
      return child;
    },
    logs,
    cgroups: async () => ((await (await get('/api/v1/cgroups')).json()) as { cgroups: CgroupView[] }).cgroups,
    metrics: async () => (await get('/metrics')).text(),
    kill,
    restart: async () => {
      await launch();
    },
    stop,
  };
}

/**
 * Log lines that report a denied API call ("forbidden", HTTP 403). 403 must
 * stand alone: epoch-millisecond times and byte counts often contain it.
 */
export function permissionErrors(logs: Record<string, unknown>[]): string[] {
  return logs.map((l) => JSON.stringify(l)).filter((line) => /forbidden|\b403\b/i.test(line));
}
