/**
 * A small network for peer-class tests: traffic over a veth pair and routes,
 * never loopback (loopback is its own class).
 *
 *   makeTopology(t?): Topology
 *     Two network namespaces joined by a veth pair:
 *       pod    a pod on this node: eth0 has POD.v4 / POD.v6, default route via eth0
 *       world  everyone else: its veth end carries every PEER address, and a
 *              route back to the pod's addresses
 *     Processes in `world` stand for pods on this node, on other nodes of the
 *     same zone / another zone / another region, a ClusterIP (no kube-proxy
 *     here, so the Service address answers itself) and the internet.
 *     Removed after the test (t) and on SIGINT/SIGTERM.
 *
 *   Topology: { pod, world, address(peer, family), toPeer(peer, family), fromPeer(peer, family) }
 *     toPeer/fromPeer: udpExchange/tcpTransfer options (Endpoints) for traffic from the pod
 *     netns to `peer`'s address in world, or from `peer`'s address (bound) to the pod.
 *   CIDRS: the prefixes a node agent would know for each class.
 *   dnatService(topo, backend, families?): kube-proxy's DNAT in world from the Service address to `backend`'s.
 *
 *   benchNetwork(network, podmeter, peers): where a benchmark's iperf3 client and server run:
 *     'lo' one netns (the loopback class); 'veth' pod -> world over the veth pair, with
 *     `peers` prefixes in podmeter's peer trie (a /24 and a /64 per simulated node) and the
 *     server's address in one of them; 'service' the same, the client sending to a Service
 *     address that a DNAT in world turns into the server's (podmeter's flow table active).
 *   Both veth ends have MTU 65535, so datagrams up to 65,000 bytes go unfragmented, as on lo.
 *
 * Addresses (IPv4 / IPv6):
 *   pod          10.244.1.2      fd00:10:244:1::2     (this node's pod CIDR 10.244.1.0/24)
 *   node         10.244.1.3      fd00:10:244:1::3     another pod on this node
 *   zone         10.244.2.2      fd00:10:244:2::2     a pod on node B (same zone)
 *   crossZone    10.244.3.2      fd00:10:244:3::2     a pod on node C (other zone)
 *   crossRegion  10.244.4.2      fd00:10:244:4::2     a pod on node D (other region)
 *   service      10.96.0.10      fd00:10:96::a        a ClusterIP
 *   storage      192.0.2.10      2001:db8:5::10       a configured named class (192.0.2.0/24, 2001:db8:5::/48)
 *   external     203.0.113.5     2001:db8:ff::5       the internet
 */
import { execFileSync } from 'node:child_process';
import type { AfterHook } from './cleanup.ts';
import { addDnat, makeNetns, vethPair, type TestNetns } from './netns.ts';
import type { Loaded } from './bpf.ts';
import type { Endpoints, Family } from './traffic.ts';

export type Peer = 'pod' | 'node' | 'zone' | 'crossZone' | 'crossRegion' | 'service' | 'storage' | 'external';

export const ADDRESSES: Readonly<Record<Peer, Record<Family, string>>> = {
  pod: { 4: '10.244.1.2', 6: 'fd00:10:244:1::2' },
  node: { 4: '10.244.1.3', 6: 'fd00:10:244:1::3' },
  zone: { 4: '10.244.2.2', 6: 'fd00:10:244:2::2' },
  crossZone: { 4: '10.244.3.2', 6: 'fd00:10:244:3::2' },
  crossRegion: { 4: '10.244.4.2', 6: 'fd00:10:244:4::2' },
  service: { 4: '10.96.0.10', 6: 'fd00:10:96::a' },
  storage: { 4: '192.0.2.10', 6: '2001:db8:5::10' },
  external: { 4: '203.0.113.5', 6: '2001:db8:ff::5' },
};

/** The prefixes behind each class, as Node objects, ServiceCIDRs and configuration would give them. */
export const CIDRS = {
  node: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
  zone: ['10.244.2.0/24', 'fd00:10:244:2::/64'],
  crossZone: ['10.244.3.0/24', 'fd00:10:244:3::/64'],
  crossRegion: ['10.244.4.0/24', 'fd00:10:244:4::/64'],
  service: ['10.96.0.0/16', 'fd00:10:96::/112'],
  storage: ['192.0.2.0/24', '2001:db8:5::/48'],
} as const;

export interface Topology {
  pod: TestNetns;
  world: TestNetns;
  address(peer: Peer, family: Family): string;
  /** Sender in the pod netns, receiver in world at `peer`'s address. */
  toPeer(peer: Exclude<Peer, 'pod'>, family: Family): Endpoints;
  /** Sender in world from `peer`'s address, receiver in the pod netns at the pod's address. */
  fromPeer(peer: Exclude<Peer, 'pod'>, family: Family): Endpoints;
}

function ip(netns: TestNetns, args: string[]): void {
  execFileSync('ip', ['-n', netns.name, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeTopology(t?: AfterHook): Topology {
  const pod = makeNetns(t);
  const world = makeNetns(t);
  vethPair(pod, world, 'world0', { mtu: 65535 });
  for (const family of [4, 6] as const) {
    const flags = family === 6 ? ['nodad'] : [];
    ip(pod, [
      `-${family}`,
      'addr',
      'add',
      `${ADDRESSES.pod[family]}/${family === 4 ? 32 : 128}`,
      'dev',
      'eth0',
      ...flags,
    ]);
    ip(pod, [`-${family}`, 'route', 'add', 'default', 'dev', 'eth0']);
    for (const peer of Object.keys(ADDRESSES) as Peer[]) {
      if (peer === 'pod') continue;
      ip(world, [
        `-${family}`,
        'addr',
        'add',
        `${ADDRESSES[peer][family]}/${family === 4 ? 32 : 128}`,
        'dev',
        'world0',
        ...flags,
      ]);
    }
    ip(world, [`-${family}`, 'route', 'add', ADDRESSES.pod[family], 'dev', 'world0']);
  }
  // Static neighbours: no ARP or neighbour discovery delays or drops a first packet.
  const mac = (ns: TestNetns, dev: string) =>
    (
      JSON.parse(execFileSync('ip', ['-n', ns.name, '-j', 'link', 'show', dev], { encoding: 'utf8' })) as {
        address: string;
      }[]
    )[0]!.address;
  const podMac = mac(pod, 'eth0');
  const worldMac = mac(world, 'world0');
  for (const family of [4, 6] as const) {
    for (const peer of Object.keys(ADDRESSES) as Peer[]) {
      if (peer !== 'pod')
        ip(pod, ['neigh', 'replace', ADDRESSES[peer][family], 'lladdr', worldMac, 'nud', 'permanent', 'dev', 'eth0']);
    }
    ip(world, ['neigh', 'replace', ADDRESSES.pod[family], 'lladdr', podMac, 'nud', 'permanent', 'dev', 'world0']);
  }
  return {
    pod,
    world,
    address: (peer, family) => ADDRESSES[peer][family],
    toPeer: (peer, family) => ({ netns: pod, receiverNetns: world, address: ADDRESSES[peer][family] }),
    fromPeer: (peer, family) => ({
      netns: world,
      receiverNetns: pod,
      address: ADDRESSES.pod[family],
      bind: ADDRESSES[peer][family],
    }),
  };
}

/** kube-proxy's rule for a Service, in world (the node): packets to the `service` address go to `backend`'s (ports kept). */
export function dnatService(
  topo: Topology,
  backend: Exclude<Peer, 'service'>,
  families: readonly Family[] = [4, 6],
): void {
  for (const family of families) addDnat(topo.world, family, ADDRESSES.service[family], ADDRESSES[backend][family]);
}

export function benchNetwork(
  network: string,
  podmeter: Loaded,
  peers: number,
): { clientNetns: TestNetns; serverNetns: TestNetns; address: string | undefined } {
  if (network === 'lo') {
    const netns = makeNetns();
    return { clientNetns: netns, serverNetns: netns, address: undefined };
  }
  if (network !== 'veth' && network !== 'service')
    throw new Error(`NETWORK must be veth, service or lo, not ${network}`);
  const topo = makeTopology();
  for (let i = 0; i < peers / 2; i++) {
    podmeter.setPeer(`10.${100 + (i >> 8)}.${i & 255}.0/24`, 'zone');
    podmeter.setPeer(`fd00:${(100 + i).toString(16)}::/64`, 'zone');
  }
  podmeter.setPeer(CIDRS.zone[0], 'zone');
  if (network === 'veth') return { clientNetns: topo.pod, serverNetns: topo.world, address: ADDRESSES.zone[4] };
  // 'service': the client talks to a Service address, which a DNAT in world (kube-proxy's rule) turns
  // into the server's; its packets count per flow in the active flow table.
  dnatService(topo, 'zone', [4]);
  podmeter.setPeer(CIDRS.service[0], 'service');
  podmeter.flows?.activate(0, 1n);
  return { clientNetns: topo.pod, serverNetns: topo.world, address: ADDRESSES.service[4] };
}
