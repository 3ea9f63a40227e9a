/**
 * iperf3 TCP runs between two test cgroups inside a test netns (benchmarks).
 *
 *   startIperfServer(cgroup, netns, port = 5201): Promise<IperfServer>
 *     `iperf3 -s` in the cgroup/netns, resolved once it listens; stop() kills it
 *     (removing the cgroup kills it too).
 *   runIperfClient({ cgroup, netns, address?, port?, seconds, omitSeconds?, family?, affinity? }): Promise<IperfResult>
 *     address: the server's (default loopback of `family`)
 *     One `iperf3 -c -J` run; retries briefly while the server still finishes the last test.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { sleep } from './cleanup.ts';
import { spawnInCgroup, type CgroupRef, type Family, type NetnsRef, loopbackAddress } from './traffic.ts';

export interface IperfServer {
  port: number;
  stop(): void;
}

export interface IperfResult {
  /** Receiver-side goodput, bits per second. */
  bitsPerSecond: number;
  bytes: number;
  retransmits: number;
  seconds: number;
}

function collect(child: ChildProcess): { out: () => string; err: () => string; exit: Promise<number | null> } {
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { out: () => out, err: () => err, exit };
}

export async function startIperfServer(cgroup: CgroupRef, netns: NetnsRef, port = 5201): Promise<IperfServer> {
  const child = spawnInCgroup(cgroup, ['iperf3', '-s', '--forceflush', '-p', String(port)], { netns });
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const ok = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (/listening/i.test(line)) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    child.once('exit', () => resolve(false));
  });
  if (!ok) {
    stop();
    throw new Error(`iperf3 server did not start: ${stderr.trim() || '(no stderr)'}`);
  }
  return { port, stop };
}

export async function runIperfClient(o: {
  cgroup: CgroupRef;
  netns: NetnsRef;
  /** The server's address; default the loopback address of `family`. */
  address?: string;
  port?: number;
  seconds: number;
  omitSeconds?: number;
  family?: Family;
  /** iperf3 -A: 'n' pins the client to CPU n, 'n,m' also the server (for this test) to CPU m. */
  affinity?: string;
}): Promise<IperfResult> {
  const args = [
    'iperf3',
    '-c',
    o.address ?? loopbackAddress(o.family ?? 4),
    '-p',
    String(o.port ?? 5201),
    '-t',
    String(o.seconds),
    '-J',
  ];
  if (o.omitSeconds) args.push('-O', String(o.omitSeconds));
  if (o.affinity !== undefined) args.push('-A', o.affinity);
  for (let attempt = 0; ; attempt++) {
    const child = spawnInCgroup(o.cgroup, args, { netns: o.netns });
    const io = collect(child);
    const code = await io.exit;
    let json: {
      error?: string;
      end?: {
        sum_received?: { bits_per_second: number; bytes: number; seconds: number };
        sum_sent?: { retransmits?: number };
      };
    } = {};
    try {
      json = JSON.parse(io.out()) as typeof json;
    } catch {
      // fall through to the error below
    }
    const received = json.end?.sum_received;
    if (code === 0 && received !== undefined) {
      return {
        bitsPerSecond: received.bits_per_second,
        bytes: received.bytes,
        seconds: received.seconds,
        retransmits: json.end?.sum_sent?.retransmits ?? 0,
      };
    }
    const why = json.error ?? (io.err().trim() || `exit code ${code}`);
    if (attempt < 10 && /busy|connect/i.test(why)) {
      await sleep(300);
      continue;
    }
    throw new Error(`iperf3 client failed: ${why}`);
  }
}
