/**
 * The node's conntrack table, for Service flows: with kube-proxy a pod's
 * socket talks to a ClusterIP, and the DNAT to a backend happens in the
 * node's network namespace, where conntrack records it. backends() asks the
 * table (netlink, agent/native/src/conntrack.cc) which address answers each
 * flow. Reading the table needs CAP_NET_ADMIN; opening it in another network
 * namespace (`netns`, e.g. /proc/1/ns/net from a pod with hostPID) also
 * CAP_SYS_ADMIN.
 */
import { OwnedFd } from './fd.ts';
import { native } from './native.ts';

/** One flow as the pod's socket sees it: addresses as 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), as in the peer trie's keys (agent/peers/cidr.ts). Ports in host order. */
export interface FlowTuple {
  protocol: number;
  local: Uint8Array;
  localPort: number;
  remote: Uint8Array;
  remotePort: number;
}

export interface Backend {
  /** 16 bytes, IPv4-mapped for IPv4. */
  address: Uint8Array;
  port: number;
  /** The conntrack entry's id (CTA_ID): a tuple reused by a new flow has a new one. */
  id?: number;
}

/** Bytes of one tuple and one answer record (agent/native/src/conntrack.h lays them out). */
const TUPLE_BYTES = 40;
const ANSWER_BYTES = 24;

/** IP protocols whose conntrack tuples are addresses and ports. */
const PORT_PROTOCOLS: ReadonlyMap<number, string> = new Map([
  [6, 'TCP'],
  [17, 'UDP'],
  [33, 'DCCP'],
  [132, 'SCTP'],
  [136, 'UDP-Lite'],
]);

function isMapped(address: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (address[i] !== 0) return false;
  return address[10] === 0xff && address[11] === 0xff;
}

function checkAddress(i: number, what: string, address: unknown): asserts address is Uint8Array {
  if (!(address instanceof Uint8Array) || address.length !== 16) {
    const got = address instanceof Uint8Array ? `${address.length} bytes` : typeof address;
    throw new TypeError(
      `conntrack tuple ${i}: the ${what} address must be a Uint8Array of 16 bytes (IPv4 as ::ffff:a.b.c.d), not ${got}`,
    );
  }
}

function checkPort(i: number, what: string, port: unknown): asserts port is number {
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65_535)
    throw new RangeError(
      `conntrack tuple ${i}: the ${what} port must be an integer from 0 to 65535, not ${String(port)}`,
    );
}

/** Writes tuple `i` as the addon's record: the original direction, from the pod's socket (local) to the remote. */
function encode(t: FlowTuple, i: number, out: Uint8Array, view: DataView): void {
  if (!PORT_PROTOCOLS.has(t.protocol)) {
    const known = [...PORT_PROTOCOLS].map(([n, name]) => `${name} ${n}`).join(', ');
    throw new RangeError(`conntrack tuple ${i}: protocol ${String(t.protocol)} has no ports (${known})`);
  }
  checkAddress(i, 'local', t.local);
  checkAddress(i, 'remote', t.remote);
  if (isMapped(t.local) !== isMapped(t.remote))
    throw new TypeError(`conntrack tuple ${i}: one address is IPv4 (IPv4-mapped) and the other IPv6`);
  checkPort(i, 'local', t.localPort);
  checkPort(i, 'remote', t.remotePort);
  const at = i * TUPLE_BYTES;
  out.set(t.local, at);
  out.set(t.remote, at + 16);
  view.setUint16(at + 32, t.localPort);
  view.setUint16(at + 34, t.remotePort);
  out[at + 36] = t.protocol;
}

export class Conntrack extends OwnedFd {
  /** The conntrack table of this process's network namespace, or of the one at `netns` (/proc/PID/ns/net, /run/netns/NAME). */
  static open(options: { netns?: string } = {}): Conntrack {
    const { netns } = options;
    if (netns !== undefined && (typeof netns !== 'string' || netns === ''))
      throw new TypeError('Conntrack.open: netns must be a path to a network namespace');
    return new Conntrack(native.conntrackOpen(netns));
  }

  /**
   * For each tuple (original direction: source = local, destination = remote), the backend that answers it (the reply tuple's source), or undefined when conntrack has no entry.
   * A tuple that is an entry's reply direction (a flow the pod accepted through a Service: local is the backend)
   * gets the original's source, the client: whoever answers the pod, either way. One sendto() per 256
   * tuples, one recv() per answer (bench/conntrack.bench.ts).
   */
  backends(tuples: readonly FlowTuple[]): (Backend | undefined)[] {
    const request = new Uint8Array(tuples.length * TUPLE_BYTES);
    const requestView = new DataView(request.buffer);
    tuples.forEach((t, i) => encode(t, i, request, requestView));
    const answers = native.conntrackReplies(this.fd, request);
    const view = new DataView(answers.buffer, answers.byteOffset, answers.byteLength);
    return tuples.map((_, i) => {
      const at = i * ANSWER_BYTES;
      if (answers[at + 18] !== 1) return undefined;
      return {
        address: answers.slice(at, at + 16),
        port: view.getUint16(at + 16),
        id: view.getUint32(at + 20),
      };
    });
  }
}
