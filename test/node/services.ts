/**
 * What node.test.ts's Service check (9) runs and asserts: the sink and
 * sender programs (python3 in the workload image), the Services and the
 * EndpointSlice it makes, and the arithmetic of one phase's counters.
 *
 * The second zone (test/node/up, guest/boot.sh): Node NAME-zone-b, zone b
 * of region r1, no kubelet; its pod CIDR 10.244.1.0/24 is routed to a
 * network namespace in the guest, whose veth address 10.0.3.2 is that
 * Node's InternalIP and which holds 10.244.1.10, "a pod of zone b".
 */
import assert from 'node:assert/strict';
import { samples } from '../helpers/samples.ts';

export const ZONE_B = {
  /** The network namespace, as a hostPID pod's process names it (boot.sh's `ip netns add`). */
  netns: '/proc/1/root/run/netns/podmeter-zone-b',
  podIP: '10.244.1.10',
  // Its address on the veth: the Node's InternalIP, and the source of what it sends to the VM node.
  nodeIP: '10.0.3.2',
  nodeName: (vmNode: string) => `${vmNode}-zone-b`,
};

/** The VM node's InternalIP (boot.sh: the kubelet's --node-ip). */
export const VM_NODE_IP = '10.0.2.15';
/** The VM node's address on its pod bridge (cni0, the bridge plugin's gateway of 10.244.0.0/24). */
export const POD_GATEWAY = '10.244.0.1';

export const SINK_PORT = 7000;
/** The sink's first log line, once both sockets are bound. */
export const SINK_LISTENING = 'listening';

/**
 * A TCP and UDP sink on SINK_PORT: per TCP connection it reads to the end,
 * sends back how many bytes it read, closes and logs `tcp <peer> <bytes>`;
 * per datagram it logs `udp <peer> <datagrams so far>`. No other traffic.
 */
export const SINK = [
  'import socket, threading',
  'l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
  'l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  `l.bind(("0.0.0.0", ${SINK_PORT}))`,
  'l.listen(16)',
  'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
  `u.bind(("0.0.0.0", ${SINK_PORT}))`,
  'def tcp():',
  '    while True:',
  '        c, a = l.accept()',
  '        n = 0',
  '        while True:',
  '            d = c.recv(65536)',
  '            if not d: break',
  '            n += len(d)',
  '        c.sendall(str(n).encode())',
  '        c.close()',
  '        print("tcp", a[0], n, flush=True)',
  'threading.Thread(target=tcp, daemon=True).start()',
  `print("${SINK_LISTENING}", flush=True)`,
  'n = 0',
  'while True:',
  '    d, a = u.recvfrom(65536)',
  '    n += 1',
  '    print("udp", a[0], n, flush=True)',
];

/**
 * `python3 -c SEND tcp|udp HOST PORT COUNT SIZE`: TCP sends COUNT x SIZE
 * bytes on one connection, half-closes, prints what the sink says it read
 * once the sink has closed (so every segment and FIN is done); UDP sends
 * COUNT datagrams of SIZE bytes, 10 ms apart, and prints COUNT.
 */
export const SEND = [
  'import socket, sys, time',
  'proto, host, port, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])',
  'if proto == "tcp":',
  '    s = socket.create_connection((host, port), timeout=300)',
  '    s.sendall(b"x" * (count * size))',
  '    s.shutdown(socket.SHUT_WR)',
  '    got = b""',
  '    while True:',
  '        d = s.recv(100)',
  '        if not d: break',
  '        got += d',
  '    s.close()',
  '    print(got.decode())',
  'else:',
  '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
  '    for _ in range(count):',
  '        s.sendto(b"x" * size, (host, port))',
  '        time.sleep(0.01)',
  '    print(count)',
].join('\n');

/**
 * `python3 -c PROBE HOST PORT...`: for each, connects over TCP until the sink
 * answers (the Service's rules are in place), at most 300 s.
 */
export const PROBE = [
  'import socket, sys, time',
  'for port in sys.argv[2:]:',
  '    deadline = time.time() + 300',
  '    while True:',
  '        try:',
  '            s = socket.create_connection((sys.argv[1], int(port)), timeout=3)',
  '            s.shutdown(socket.SHUT_WR)',
  '            s.recv(100)',
  '            s.close()',
  '            break',
  '        except OSError as e:',
  '            if time.time() > deadline: raise',
  '            time.sleep(1)',
].join('\n');

const sinkPorts = [
  { name: 'tcp', protocol: 'TCP', port: SINK_PORT },
  { name: 'udp', protocol: 'UDP', port: SINK_PORT },
];

/** A Service of the sink's two ports: with a selector (its pods are the endpoints), or none (EndpointSlices made by hand). */
export function sinkService(
  ns: string,
  name: string,
  opts: { selector?: Record<string, string>; nodePort?: 'Cluster' | 'Local' } = {},
): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: {
      ...(opts.selector ? { selector: opts.selector } : {}),
      ...(opts.nodePort ? { type: 'NodePort', externalTrafficPolicy: opts.nodePort } : {}),
      ports: sinkPorts.map((p) => ({ ...p, targetPort: p.port })),
    },
  };
}

/** The EndpointSlice of a Service without selector: the sink at `ip` on Node `nodeName` in `zone`. */
export function sinkEndpointSlice(ns: string, service: string, ip: string, nodeName: string, zone: string): object {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: service,
      namespace: ns,
      labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'podmeter-test' },
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName, zone }],
    ports: sinkPorts,
  };
}

/** The eth0 statistics files of a pod, in the order podCounters reads them. */
export const ETH0_STATISTICS = ['tx_bytes', 'tx_packets', 'rx_bytes', 'rx_packets'].map(
  (f) => `/sys/class/net/eth0/statistics/${f}`,
);

/**
 * One pod's counters at one moment: its eth0 (`cat ETH0_STATISTICS` output)
 * and the agent's series of it: txBytes, txPackets, rxBytes, rxPackets,
 * egressBytes, egressPackets, ingressBytes, ingressPackets, and each peer
 * class's bytes as `<direction> <class>`.
 */
export function podCounters(eth0: string, metrics: string, ns: string, pod: string): Record<string, number> {
  const [txBytes, txPackets, rxBytes, rxPackets] = eth0.trim().split('\n').map(Number);
  const c: Record<string, number> = {
    txBytes: txBytes!,
    txPackets: txPackets!,
    rxBytes: rxBytes!,
    rxPackets: rxPackets!,
  };
  const of = (name: string) => samples(metrics, name).filter((s) => s.labels.namespace === ns && s.labels.pod === pod);
  for (const s of of('podmeter_pod_network_bytes_total')) c[`${s.labels.direction}Bytes`] = Number(s.value);
  for (const s of of('podmeter_pod_network_packets_total')) c[`${s.labels.direction}Packets`] = Number(s.value);
  for (const s of of('podmeter_pod_network_peer_bytes_total'))
    c[`${s.labels.direction} ${s.labels.peer}`] = Number(s.value);
  return c;
}

/** after - before, key by key (a key missing on one side is 0 there). */
export function counterDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  return Object.fromEntries([...keys].map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));
}

/** The most neighbour frames a short window may hold, by direction (assertNeighbourFrames). */
export const NEIGHBOUR_FRAMES_MAX = { tx: 6, rx: 16 } as const;

/**
 * What a pod's interface carried beyond what its sockets sent or received
 * (podmeter's count plus 14 bytes of Ethernet header a frame): neighbour
 * frames, ARP (42 B), IPv6 router and neighbour solicitations (70-86 B) and
 * MLD reports (90 B), each of 42-90 bytes, at most `max` of them. What a pod
 * sends of them is its own kernel's (a few in a short window); what it
 * receives also has every broadcast ARP request and flooded multicast of
 * the bridge (the node asking for other pods, other pods' DAD and MLD): 8
 * frames of 476 B in a check 9 phase that began as two other pods started.
 */
export function assertNeighbourFrames(what: string, frames: number, bytes: number, d: object, max: number): void {
  assert.ok(
    frames >= 0 && frames <= max,
    `${what}: ${frames} frames more than the pod's sockets: ${JSON.stringify(d)}`,
  );
  assert.ok(
    bytes >= 42 * frames && bytes <= 90 * frames,
    `${what}: ${bytes} bytes in ${frames} neighbour frames: ${JSON.stringify(d)}`,
  );
}

/**
 * One phase's deltas of a pod: every byte it counted, in each direction, is
 * in class `cls` (no other class moved), and its eth0 carried exactly that
 * plus 14 bytes a frame and the kernel's neighbour frames.
 */
export function assertPhase(what: string, d: Record<string, number>, cls: string): void {
  for (const dir of ['egress', 'ingress']) {
    const moved = Object.entries(d).filter(([k, v]) => k.startsWith(`${dir} `) && v !== 0);
    const total = d[`${dir}Bytes`] ?? 0;
    assert.deepEqual(moved, total === 0 ? [] : [[`${dir} ${cls}`, total]], `${what}: ${dir} by class`);
  }
  assertNeighbourFrames(
    `${what}: eth0 tx`,
    (d.txPackets ?? 0) - (d.egressPackets ?? 0),
    (d.txBytes ?? 0) - (d.egressBytes ?? 0) - 14 * (d.egressPackets ?? 0),
    d,
    NEIGHBOUR_FRAMES_MAX.tx,
  );
  assertNeighbourFrames(
    `${what}: eth0 rx`,
    (d.rxPackets ?? 0) - (d.ingressPackets ?? 0),
    (d.rxBytes ?? 0) - (d.ingressBytes ?? 0) - 14 * (d.ingressPackets ?? 0),
    d,
    NEIGHBOUR_FRAMES_MAX.rx,
  );
}
