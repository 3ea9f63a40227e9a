/**
 * Network traffic from processes placed in given cgroups (and netns), so the
 * kernel attributes their sockets' packets to those cgroups.
 *
 * As a CLI (one JSON object per stdout line; errors on stderr, exit != 0):
 *   node test/helpers/traffic.ts udp-recv --family 4|6 --count N [--progress-every K] [--timeout-ms MS]
 *   node test/helpers/traffic.ts udp-send --family 4|6 --port P --count N --payload BYTES [--window W] [--timeout-ms MS]
 *   node test/helpers/traffic.ts tcp-recv --family 4|6 [--timeout-ms MS]
 *   node test/helpers/traffic.ts tcp-send --family 4|6 --port P --bytes N [--timeout-ms MS]
 *   Receivers bind to --address (default 127.0.0.1 / ::1), port 0, and first print {"event":"listening","port":P};
 *   senders send to --address (same default) from --bind (default: the kernel's choice);
 *   every mode ends with {"event":"done","count":datagrams,"bytes":payloadBytes}.
 *   udp-recv prints {"event":"progress","count":K} every K datagrams; udp-send with
 *   --window W keeps at most W datagrams unacknowledged, reading acknowledged
 *   counts (one integer per line) from stdin: flow control without any packet
 *   of its own, so the counters see only the test's datagrams.
 *
 * As a module:
 *   spawnInCgroup(cgroup, argv, { netns? }): ChildProcess
 *     Race-free: `sh -c 'echo $$ > <cg>/cgroup.procs && exec [ip netns exec <ns>] argv...'`,
 *     so the process is in the cgroup before it creates any socket.
 *     stdio: pipes; the process is killed by the cgroup's remove().
 *   spawnTraffic(cgroup, netns, cliArgs): TrafficProcess   (this CLI, via spawnInCgroup)
 *   udpExchange({ senderCgroup, receiverCgroup, netns?, receiverNetns?, address?, bind?, family, count, payload, timeoutMs? })
 *     -> Promise<{ count, bytes }> once the receiver got all `count` datagrams
 *     netns: the sender's (and the receiver's unless receiverNetns); address: the
 *     receiver's (default loopback); bind: the sender's source address
 *   tcpTransfer({ senderCgroup, receiverCgroup, netns?, receiverNetns?, address?, bind?, family, bytes, timeoutMs? })
 *     -> Promise<{ bytes }> once the receiver read all bytes and both ends closed
 *   udpDatagramBytes(family, payload): 28 + payload (IPv4) or 48 + payload (IPv6): skb->len
 *     of one datagram at the cgroup_skb hooks (IP + UDP headers + payload; no
 *     fragmentation on lo, MTU 65536, for payloads up to 65,000 bytes; on a
 *     veth (MTU 1500) up to 1472 / 1452 bytes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { trackProcess } from './cgroups.ts';

export type Family = 4 | 6;
/** A cgroup directory path, or anything with `.path` (a TestCgroup). */
export type CgroupRef = string | { path: string };
/** A netns name, or anything with `.name` (a TestNetns); undefined: the caller's own netns. */
export type NetnsRef = string | { name: string } | undefined;

/** IP + UDP header bytes: IPv4 20 + 8, IPv6 40 + 8. */
export const UDP_OVERHEAD: Readonly<Record<Family, number>> = { 4: 28, 6: 48 };

/** skb->len of one UDP datagram with `payload` bytes at the cgroup_skb hooks. */
export function udpDatagramBytes(family: Family, payload: number): number {
  return UDP_OVERHEAD[family] + payload;
}

export function loopbackAddress(family: Family): string {
  return family === 4 ? '127.0.0.1' : '::1';
}

const SELF = fileURLToPath(import.meta.url);
const DEFAULT_TIMEOUT_MS = 60_000;
/** The receive buffer udp-recv asks for (SO_RCVBUF). */
const UDP_RCVBUF = 4 * 1024 * 1024;

/**
 * The receive buffer udp-recv gets: the kernel grants twice the request,
 * capped at net.core.rmem_max (212992 unless raised, as on stock kernels).
 */
function grantedRcvbuf(): number {
  const max = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
  return 2 * Math.min(UDP_RCVBUF, max);
}

function cgroupPath(ref: CgroupRef): string {
  return typeof ref === 'string' ? ref : ref.path;
}

function netnsName(ref: NetnsRef): string | undefined {
  return ref === undefined || typeof ref === 'string' ? ref : ref.name;
}

/** Runs argv inside the cgroup (and netns); the process joins the cgroup before exec. */
export function spawnInCgroup(cgroup: CgroupRef, argv: string[], options: { netns?: NetnsRef } = {}): ChildProcess {
  const cg = cgroupPath(cgroup);
  const ns = netnsName(options.netns);
  const command = ns === undefined ? argv : ['ip', 'netns', 'exec', ns, ...argv];
  const child = spawn(
    'sh',
    ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'podmeter-spawn', cg, ...command],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  trackProcess(cg, child);
  return child;
}

export interface TrafficEvent {
  event: 'listening' | 'progress' | 'done';
  port?: number;
  count?: number;
  bytes?: number;
}

/** A running traffic CLI: its parsed stdout events, stderr, and exit. */
export class TrafficProcess {
  readonly child: ChildProcess;
  readonly events: TrafficEvent[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';
  readonly #listeners = new Set<(e: TrafficEvent) => void>();

  constructor(child: ChildProcess) {
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
    });
    child.stdin?.on('error', () => {}); // EPIPE once it has exited
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        let e: TrafficEvent;
        try {
          e = JSON.parse(line) as TrafficEvent;
        } catch {
          this.stderr += `(stdout) ${line}\n`;
          return;
        }
        this.events.push(e);
        for (const l of this.#listeners) l(e);
      });
    }
  }

  on(fn: (e: TrafficEvent) => void): void {
    this.#listeners.add(fn);
  }

  last(type: TrafficEvent['event']): TrafficEvent | undefined {
    return this.events.findLast((e) => e.event === type);
  }

  /** The first event of `type`; rejects when the process exits without it. */
  waitFor(type: TrafficEvent['event']): Promise<TrafficEvent> {
    const seen = this.events.find((e) => e.event === type);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const listener = (e: TrafficEvent): void => {
        if (e.event === type) {
          this.#listeners.delete(listener);
          resolve(e);
        }
      };
      this.on(listener);
      void this.exited.then(({ code, signal }) => {
        // Lines still buffered in readline are delivered before 'close'; give them a tick.
        setImmediate(() => {
          const e = this.events.find((x) => x.event === type);
          if (e !== undefined) return resolve(e);
          reject(
            new Error(
              `exited (code ${code}, signal ${signal}) before '${type}'; stderr: ${this.stderr.trim() || '(empty)'}`,
            ),
          );
        });
      });
    });
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** Runs this file's CLI in a cgroup (and netns). */
export function spawnTraffic(cgroup: CgroupRef, netns: NetnsRef, args: string[]): TrafficProcess {
  return new TrafficProcess(spawnInCgroup(cgroup, [process.execPath, SELF, ...args], { netns }));
}

function withTimeout<T>(promise: Promise<T>, ms: number, describe: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(describe())), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function expectSuccess(p: TrafficProcess, role: string): Promise<void> {
  const { code, signal } = await p.exited;
  if (code !== 0)
    throw new Error(`${role} exited with code ${code} (signal ${signal}); stderr: ${p.stderr.trim() || '(empty)'}`);
}

/** Where the two ends of an exchange run and which addresses they use (defaults: one netns, loopback). */
export interface Endpoints {
  netns?: NetnsRef;
  /** The receiver's netns when it differs from the sender's. */
  receiverNetns?: NetnsRef;
  /** The receiver's address (it binds to it; the sender sends to it). */
  address?: string;
  /** The sender's source address. */
  bind?: string;
  /** Where the sender sends when it is not `address` (a Service address that a DNAT rule turns into `address`). */
  target?: string;
}

function endpointArgs(o: Endpoints): { recv: string[]; send: string[] } {
  const recv = o.address === undefined ? [] : ['--address', o.address];
  const to = o.target ?? o.address;
  return {
    recv,
    send: [...(to === undefined ? [] : ['--address', to]), ...(o.bind === undefined ? [] : ['--bind', o.bind])],
  };
}

export interface UdpExchangeOptions extends Endpoints {
  senderCgroup: CgroupRef;
  receiverCgroup: CgroupRef;
  family: Family;
  count: number;
  /** UDP payload bytes per datagram (≤ 65,000 for unfragmented, exact sizes). */
  payload: number;
  timeoutMs?: number;
}

/** Sends `count` datagrams from a process in senderCgroup to one in receiverCgroup. */
export async function udpExchange(o: UdpExchangeOptions): Promise<{ count: number; bytes: number }> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // Unacknowledged datagrams (each ~payload + 1 KiB of the buffer) stay within
  // a fifth of the receiver's buffer, so none is dropped however slowly it reads.
  const window = Math.max(1, Math.min(256, Math.floor(grantedRcvbuf() / 5 / (o.payload + 1024))));
  const progressEvery = Math.max(1, Math.floor(window / 4));
  const fam = String(o.family);
  const where = endpointArgs(o);
  const receiver = spawnTraffic(o.receiverCgroup, o.receiverNetns ?? o.netns, [
    'udp-recv',
    ...where.recv,
    '--family',
    fam,
    '--count',
    String(o.count),
    '--progress-every',
    String(progressEvery),
    '--timeout-ms',
    String(timeoutMs + 5000),
  ]);
  let sender: TrafficProcess | undefined;
  const describe = (): string => {
    const got = receiver.last('progress')?.count ?? 0;
    return (
      `udpExchange (IPv${o.family}, ${o.count} x ${o.payload} B): receiver got ${got} of ${o.count} datagrams within ${timeoutMs} ms; ` +
      `receiver stderr: ${receiver.stderr.trim() || '(empty)'}; sender stderr: ${sender?.stderr.trim() || '(empty)'}`
    );
  };
  try {
    return await withTimeout(
      (async () => {
        const { port } = await receiver.waitFor('listening');
        const s = spawnTraffic(o.senderCgroup, o.netns, [
          'udp-send',
          ...where.send,
          '--family',
          fam,
          '--port',
          String(port),
          '--count',
          String(o.count),
          '--payload',
          String(o.payload),
          '--window',
          String(window),
          '--timeout-ms',
          String(timeoutMs + 5000),
        ]);
        sender = s;
        receiver.on((e) => {
          if (e.event === 'progress' || e.event === 'done') s.child.stdin?.write(`${e.count}\n`);
        });
        const [done] = await Promise.all([receiver.waitFor('done'), s.waitFor('done')]);
        await Promise.all([expectSuccess(receiver, 'udp receiver'), expectSuccess(s, 'udp sender')]);
        return { count: done.count ?? 0, bytes: done.bytes ?? 0 };
      })(),
      timeoutMs,
      describe,
    );
  } catch (err) {
    throw err instanceof Error && err.message.startsWith('udpExchange')
      ? err
      : new Error(`${describe()}: ${String(err)}`, { cause: err });
  } finally {
    receiver.kill();
    sender?.kill();
  }
}

export interface TcpTransferOptions extends Endpoints {
  senderCgroup: CgroupRef;
  receiverCgroup: CgroupRef;
  family: Family;
  /** Payload bytes the sender writes (then it closes). */
  bytes: number;
  timeoutMs?: number;
}

/** One TCP connection: the sender writes `bytes` and closes; resolves when the receiver read them all. */
export async function tcpTransfer(o: TcpTransferOptions): Promise<{ bytes: number }> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const fam = String(o.family);
  const where = endpointArgs(o);
  const receiver = spawnTraffic(o.receiverCgroup, o.receiverNetns ?? o.netns, [
    'tcp-recv',
    ...where.recv,
    '--family',
    fam,
    '--timeout-ms',
    String(timeoutMs + 5000),
  ]);
  let sender: TrafficProcess | undefined;
  const describe = (): string =>
    `tcpTransfer (IPv${o.family}, ${o.bytes} B) did not finish within ${timeoutMs} ms; ` +
    `receiver stderr: ${receiver.stderr.trim() || '(empty)'}; sender stderr: ${sender?.stderr.trim() || '(empty)'}`;
  try {
    return await withTimeout(
      (async () => {
        const { port } = await receiver.waitFor('listening');
        const s = spawnTraffic(o.senderCgroup, o.netns, [
          'tcp-send',
          ...where.send,
          '--family',
          fam,
          '--port',
          String(port),
          '--bytes',
          String(o.bytes),
          '--timeout-ms',
          String(timeoutMs + 5000),
        ]);
        sender = s;
        const [done] = await Promise.all([receiver.waitFor('done'), s.waitFor('done')]);
        await Promise.all([expectSuccess(receiver, 'tcp receiver'), expectSuccess(s, 'tcp sender')]);
        if (done.bytes !== o.bytes) throw new Error(`tcp receiver read ${done.bytes} bytes, expected ${o.bytes}`);
        return { bytes: done.bytes };
      })(),
      timeoutMs,
      describe,
    );
  } catch (err) {
    throw err instanceof Error && err.message.startsWith('tcpTransfer')
      ? err
      : new Error(`${describe()}: ${String(err)}`, { cause: err });
  } finally {
    receiver.kill();
    sender?.kill();
  }
}

// ---------------------------------------------------------------------------
// CLI

function emit(e: TrafficEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

function fail(message: string, code = 1): never {
  process.stderr.write(`traffic: ${message}\n`);
  process.exit(code);
}

function intOption(values: Record<string, string | boolean | undefined>, name: string, fallback?: number): number {
  const raw = values[name];
  if (raw === undefined) {
    if (fallback === undefined) fail(`--${name} is required`);
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) fail(`--${name} must be a non-negative integer, got '${String(raw)}'`);
  return n;
}

/** Where a CLI end binds and sends to (--address, --bind). */
interface Where {
  address: string;
  bind: string | undefined;
}

function udpRecv(family: Family, count: number, progressEvery: number, where: Where): void {
  const socket = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', recvBufferSize: UDP_RCVBUF });
  let received = 0;
  let bytes = 0;
  socket.on('error', (err) => fail(`udp-recv: ${err.message}`));
  socket.on('message', (msg) => {
    received++;
    bytes += msg.length;
    if (received === count) {
      emit({ event: 'done', count: received, bytes });
      socket.close(() => process.exit(0));
    } else if (received % progressEvery === 0) {
      emit({ event: 'progress', count: received });
    }
  });
  socket.bind(0, where.address, () => {
    emit({ event: 'listening', port: socket.address().port });
    if (count === 0) {
      emit({ event: 'done', count: 0, bytes: 0 });
      process.exit(0);
    }
  });
}

function udpSend(family: Family, port: number, count: number, payload: number, window: number, where: Where): void {
  const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
  const data = Buffer.alloc(payload, 0x61);
  let acked = 0;
  let wake: (() => void) | undefined;
  if (window > 0) {
    createInterface({ input: process.stdin }).on('line', (line) => {
      const n = Number(line.trim());
      if (Number.isFinite(n) && n > acked) acked = n;
      wake?.();
    });
  }
  const send = (): Promise<void> =>
    new Promise((resolve, reject) => socket.send(data, port, where.address, (err) => (err ? reject(err) : resolve())));
  void (async () => {
    if (where.bind !== undefined) await new Promise<void>((resolve) => socket.bind(0, where.bind, resolve));
    for (let sent = 0; sent < count; sent++) {
      while (window > 0 && sent - acked >= window) await new Promise<void>((r) => (wake = r));
      await send();
      if (window === 0 && sent % 16 === 15) await new Promise((r) => setImmediate(r));
    }
    emit({ event: 'done', count, bytes: count * payload });
    socket.close(() => process.exit(0));
  })().catch((err: unknown) => fail(`udp-send: ${(err as Error).message}`));
}

function tcpRecv(where: Where): void {
  const server = net.createServer((conn) => {
    server.close();
    let bytes = 0;
    conn.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    conn.on('end', () => conn.end());
    conn.on('close', () => {
      emit({ event: 'done', count: 0, bytes });
      process.exit(0);
    });
    conn.on('error', (err) => fail(`tcp-recv: ${err.message}`));
  });
  server.on('error', (err) => fail(`tcp-recv: ${err.message}`));
  server.listen(0, where.address, () => {
    const address = server.address();
    if (address === null || typeof address === 'string') fail('tcp-recv: no port');
    emit({ event: 'listening', port: address.port });
  });
}

function tcpSend(port: number, total: number, where: Where): void {
  const chunk = Buffer.alloc(1024 * 1024, 0x62);
  const conn = net.connect({
    port,
    host: where.address,
    ...(where.bind === undefined ? {} : { localAddress: where.bind }),
  });
  conn.on('error', (err) => fail(`tcp-send: ${err.message}`));
  conn.on('connect', () => {
    let left = total;
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!conn.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          conn.once('drain', pump);
          return;
        }
      }
      conn.end();
    };
    pump();
  });
  conn.on('end', () => conn.end());
  conn.on('close', () => {
    emit({ event: 'done', count: 0, bytes: total });
    process.exit(0);
  });
}

function main(argv: string[]): void {
  const [mode, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      family: { type: 'string' },
      count: { type: 'string' },
      payload: { type: 'string' },
      port: { type: 'string' },
      bytes: { type: 'string' },
      window: { type: 'string' },
      'progress-every': { type: 'string' },
      'timeout-ms': { type: 'string' },
      address: { type: 'string' },
      bind: { type: 'string' },
    },
  });
  const family = intOption(values, 'family');
  if (family !== 4 && family !== 6) fail('--family must be 4 or 6');
  const timeoutMs = intOption(values, 'timeout-ms', DEFAULT_TIMEOUT_MS);
  setTimeout(() => fail(`${mode}: timed out after ${timeoutMs} ms`, 2), timeoutMs).unref();
  const where: Where = { address: values.address ?? loopbackAddress(family), bind: values.bind };
  switch (mode) {
    case 'udp-recv':
      return udpRecv(family, intOption(values, 'count'), Math.max(1, intOption(values, 'progress-every', 16)), where);
    case 'udp-send':
      return udpSend(
        family,
        intOption(values, 'port'),
        intOption(values, 'count'),
        intOption(values, 'payload'),
        intOption(values, 'window', 0),
        where,
      );
    case 'tcp-recv':
      return tcpRecv(where);
    case 'tcp-send':
      return tcpSend(intOption(values, 'port'), intOption(values, 'bytes'), where);
    default:
      fail(`usage: node ${SELF} udp-recv|udp-send|tcp-recv|tcp-send --family 4|6 ... (see the file's header)`);
  }
}

if (import.meta.main) main(process.argv.slice(2));
