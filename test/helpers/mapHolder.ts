/**
 * Test processes that create and hold BPF maps (mapholder.py, raw bpf(2) via
 * ctypes), optionally inside a test cgroup, plus small readers of what the
 * kernel says about them.
 *
 *   startHolder(t, { comm, cgroup? }): Promise<Holder>
 *     python3 mapholder.py serve, its comm set to `comm` (<= 15 chars); in
 *     `cgroup` (joined before exec) when given. Killed after the test.
 *   Holder.create(spec) -> { fd, id, memlock }; open(id); pin(fd, path); close(fd);
 *   fork(comm) -> pid of a child holding every fd the holder has
 *   fdinfoOf(pid, fd): Record<string,string>   /proc/<pid>/fdinfo/<fd>, parsed
 *   fdOfMap(pid, id): number | undefined        the holder's fd of map `id`
 *   MAP_TYPE: bpf_map_type numbers used by the tests
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomSuffix, type AfterHook } from './cleanup.ts';
import { spawnInCgroup, type CgroupRef } from './traffic.ts';

export const HOLDER_SCRIPT = fileURLToPath(new URL('./mapholder.py', import.meta.url));

export const MAP_TYPE = {
  hash: 1,
  array: 2,
  progArray: 3,
  percpuHash: 5,
  percpuArray: 6,
  lruHash: 9,
  ringbuf: 27,
} as const;

export const BPF_F_NO_PREALLOC = 1;

export interface MapSpec {
  name: string;
  type: number;
  key: number;
  value: number;
  max: number;
  flags?: number;
}

export interface Created {
  fd: number;
  id: number;
  memlock: number;
}

export interface Holder {
  pid: number;
  comm: string;
  child: ChildProcess;
  create(spec: MapSpec): Promise<Created>;
  open(id: number): Promise<{ fd: number }>;
  pin(fd: number, path: string): Promise<void>;
  close(fd: number): Promise<void>;
  fork(comm: string): Promise<number>;
  stop(): Promise<void>;
}

/** A comm unique to this run: 'pmt' + tag + random, at most 15 characters. */
export function uniqueComm(tag: string): string {
  return `pmt${tag}${randomSuffix().replace(/[^a-z0-9]/g, '')}`.slice(0, 15);
}

export function startHolder(t: AfterHook, options: { comm: string; cgroup?: CgroupRef }): Promise<Holder> {
  const argv = ['python3', HOLDER_SCRIPT, 'serve', '--comm', options.comm];
  let child: ChildProcess;
  if (options.cgroup !== undefined) {
    child = spawnInCgroup(options.cgroup, argv);
  } else {
    // PR_SET_PDEATHSIG in mapholder.py ends it with this process even on a crash.
    child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    const next = waiting.shift();
    if (next === undefined) return;
    const reply = JSON.parse(line) as { error?: string; errno?: number };
    if (reply.error !== undefined)
      next.reject(Object.assign(new Error(`mapholder: ${reply.error}`), { errno: reply.errno }));
    else next.resolve(reply);
  });
  child.once('exit', (code, signal) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`mapholder exited (${code ?? signal}): ${stderr.trim()}`));
  });
  const call = <T>(cmd: Record<string, unknown>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      waiting.push({ resolve: resolve as (v: unknown) => void, reject });
      child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  };
  t.after(stop);

  const holder: Holder = {
    pid: child.pid ?? -1,
    comm: options.comm,
    child,
    create: (spec) => call<Created>({ op: 'create', ...spec }),
    open: (id) => call<{ fd: number }>({ op: 'open', id }),
    pin: async (fd, path) => void (await call({ op: 'pin', fd, path })),
    close: async (fd) => void (await call({ op: 'close', fd })),
    fork: async (comm) => (await call<{ pid: number }>({ op: 'fork', comm })).pid,
    stop,
  };
  // The first answer proves python is up (and, in a cgroup, that sh has exec'd it: same pid).
  return waitForComm(holder).then(() => holder);
}

async function waitForComm(holder: Holder): Promise<void> {
  // Generous: python's start takes seconds in a TCG VM (test/node/kernels).
  for (let i = 0; i < 2400; i++) {
    try {
      if (readFileSync(`/proc/${holder.pid}/comm`, 'utf8').trim() === holder.comm) return;
    } catch {
      // not yet
    }
    if (holder.child.exitCode !== null) throw new Error(`mapholder exited with ${holder.child.exitCode}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`mapholder ${holder.pid} never set its comm to ${holder.comm} within 60 s`);
}

export function fdinfoOf(pid: number, fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) out[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return out;
}

/** The fd by which process `pid` holds map `id`, read from /proc ourselves. */
export function fdOfMap(pid: number, id: number): number | undefined {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf-map') continue;
      if (fdinfoOf(pid, Number(fd)).map_id === String(id)) return Number(fd);
    } catch {
      // closed meanwhile
    }
  }
  return undefined;
}
