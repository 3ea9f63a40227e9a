/**
 * A node with kube-proxy's Service DNAT, in three network namespaces:
 *
 *     pod --veth-- node --veth-- backend
 *
 *   pod      10.244.1.2/24   fd00:10:244:1::2/64   default route via the node
 *   node     10.244.1.1 and 10.244.2.1, fd00:10:244:1::1 and fd00:10:244:2::1; forwards
 *   backend  10.244.2.2/24   fd00:10:244:2::2/64   default route via the node
 *   ClusterIP 10.96.0.10, fd00:10:96::a (no interface has it: only the node's DNAT)
 *
 *   makeServiceNode(t?): ServiceNode
 *     Removed after the test (t) and on SIGINT/SIGTERM, with every process started here.
 *     Static neighbours: no ARP or neighbour discovery delays or drops a first packet.
 *
 *   ServiceNode:
 *     dnat(protocol, family, servicePort, backendPort)
 *       a rule in the node's nat PREROUTING chain (iptables / ip6tables, as
 *       kube-proxy's iptables mode): ClusterIP:servicePort -> backend:backendPort
 *     startBackend(ports): Promise<void>  TCP and UDP echo servers on the backend (both families)
 *     connect(protocol, family, servicePort): Promise<number>
 *       a client in the pod that connects (TCP) or sends (UDP) to ClusterIP:servicePort,
 *       and stays until the node is removed, once its echo came back; its local port
 *     udpBurst(family, firstPort, servicePorts, count): Promise<void>
 *       one datagram from each pod port firstPort + i to ClusterIP:servicePorts[i % n]
 *       (a conntrack entry each on the node), no answer awaited
 *     conntrackCount(): entries in the node's conntrack table
 *
 * As a CLI (what the processes in the namespaces run):
 *   node test/helpers/serviceNode.ts backend PORTS_JSON
 *   node test/helpers/serviceNode.ts connect tcp|udp ADDRESS PORT
 *   node test/helpers/serviceNode.ts burst ADDRESS FIRST_PORT SERVICE_PORTS_JSON COUNT
 * Each prints one line ("ready", {"localPort":P}, "done") when it is there.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterOrSignal, type AfterHook } from './cleanup.ts';
import { addDnat, inNetns, makeNetns, vethPair, type TestNetns } from './netns.ts';
import type { Family } from './traffic.ts';

export const SERVICE_ADDRESSES = {
  pod: { 4: '10.244.1.2', 6: 'fd00:10:244:1::2' },
  podGateway: { 4: '10.244.1.1', 6: 'fd00:10:244:1::1' },
  backend: { 4: '10.244.2.2', 6: 'fd00:10:244:2::2' },
  backendGateway: { 4: '10.244.2.1', 6: 'fd00:10:244:2::1' },
  clusterIP: { 4: '10.96.0.10', 6: 'fd00:10:96::a' },
} as const satisfies Record<string, Record<Family, string>>;

export type Protocol = 'tcp' | 'udp';

export interface ServiceNode {
  pod: TestNetns;
  node: TestNetns;
  backend: TestNetns;
  dnat(protocol: Protocol, family: Family, servicePort: number, backendPort: number): void;
  startBackend(ports: readonly number[]): Promise<void>;
  connect(protocol: Protocol, family: Family, servicePort: number): Promise<number>;
  udpBurst(family: Family, firstPort: number, servicePorts: readonly number[], count: number): Promise<void>;
  conntrackCount(): number;
}

const SELF = fileURLToPath(import.meta.url);

function ip(netns: TestNetns, args: string[]): void {
  execFileSync('ip', ['-n', netns.name, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

const MAC = {
  pod: '02:00:0a:f4:01:02',
  podGateway: '02:00:0a:f4:01:01',
  backend: '02:00:0a:f4:02:02',
  backendGateway: '02:00:0a:f4:02:01',
};

export function makeServiceNode(t?: AfterHook): ServiceNode {
  const pod = makeNetns(t);
  const node = makeNetns(t);
  const backend = makeNetns(t);
  vethPair(pod, node, 'pod0', { innerMac: MAC.pod, outerMac: MAC.podGateway });
  vethPair(backend, node, 'backend0', { innerMac: MAC.backend, outerMac: MAC.backendGateway });
  inNetns(node, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  const A = SERVICE_ADDRESSES;
  for (const family of [4, 6] as const) {
    const len = family === 4 ? 24 : 64;
    const nodad = family === 6 ? ['nodad'] : [];
    const f = `-${family}`;
    ip(pod, [f, 'addr', 'add', `${A.pod[family]}/${len}`, 'dev', 'eth0', ...nodad]);
    ip(pod, [f, 'route', 'add', 'default', 'via', A.podGateway[family], 'dev', 'eth0']);
    ip(pod, ['neigh', 'replace', A.podGateway[family], 'lladdr', MAC.podGateway, 'nud', 'permanent', 'dev', 'eth0']);
    ip(backend, [f, 'addr', 'add', `${A.backend[family]}/${len}`, 'dev', 'eth0', ...nodad]);
    ip(backend, [f, 'route', 'add', 'default', 'via', A.backendGateway[family], 'dev', 'eth0']);
    ip(backend, [
      'neigh',
      'replace',
      A.backendGateway[family],
      'lladdr',
      MAC.backendGateway,
      'nud',
      'permanent',
      'dev',
      'eth0',
    ]);
    ip(node, [f, 'addr', 'add', `${A.podGateway[family]}/${len}`, 'dev', 'pod0', ...nodad]);
    ip(node, [f, 'addr', 'add', `${A.backendGateway[family]}/${len}`, 'dev', 'backend0', ...nodad]);
    ip(node, ['neigh', 'replace', A.pod[family], 'lladdr', MAC.pod, 'nud', 'permanent', 'dev', 'pod0']);
    ip(node, ['neigh', 'replace', A.backend[family], 'lladdr', MAC.backend, 'nud', 'permanent', 'dev', 'backend0']);
  }

  const children: ChildProcess[] = [];
  afterOrSignal(t, async () => {
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    }
  });
  /** Runs this file's CLI in `netns`; resolves its first stdout line (rejects when it exits first). */
  const run = (netns: TestNetns, args: string[]): Promise<string> => {
    const child = spawn('ip', ['netns', 'exec', netns.name, process.execPath, SELF, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code, signal) =>
        reject(new Error(`serviceNode ${args.join(' ')} exited (${code ?? signal}) early: ${stderr.trim()}`)),
      );
    });
  };

  return {
    pod,
    node,
    backend,
    dnat(protocol, family, servicePort, backendPort) {
      const to = family === 4 ? `${A.backend[4]}:${backendPort}` : `[${A.backend[6]}]:${backendPort}`;
      addDnat(node, family, A.clusterIP[family], to, { protocol, port: servicePort });
    },
    async startBackend(ports) {
      await run(backend, ['backend', JSON.stringify(ports)]);
    },
    async connect(protocol, family, servicePort) {
      const line = await run(pod, ['connect', protocol, A.clusterIP[family], String(servicePort)]);
      return (JSON.parse(line) as { localPort: number }).localPort;
    },
    async udpBurst(family, firstPort, servicePorts, count) {
      await run(pod, ['burst', A.clusterIP[family], String(firstPort), JSON.stringify(servicePorts), String(count)]);
    },
    conntrackCount() {
      return Number(inNetns(node, ['cat', '/proc/sys/net/netfilter/nf_conntrack_count']).trim());
    },
  };
}

/** Datagrams in flight at once in a burst (the veth backlog holds 1,000 per CPU). */
const BURST_WINDOW = 64;

async function main(args: string[]): Promise<void> {
  const [mode, ...rest] = args;
  if (mode === 'backend') {
    const ports = JSON.parse(rest[0]!) as number[];
    for (const port of ports) {
      const tcp = net.createServer((c) => c.on('data', (d) => c.write(d)).on('error', () => {}));
      tcp.listen(port, '::');
      await once(tcp, 'listening');
      const udp = dgram.createSocket('udp6'); // '::' takes IPv4 too (IPv4-mapped)
      udp.on('message', (m, r) => udp.send(m, r.port, r.address));
      udp.bind(port, '::');
      await once(udp, 'listening');
    }
    console.log('ready');
  } else if (mode === 'connect') {
    const [protocol, address, port] = rest as [Protocol, string, string];
    if (protocol === 'tcp') {
      const socket = net.connect({ host: address, port: Number(port) }, () => socket.write('x'));
      await once(socket, 'data');
      console.log(JSON.stringify({ localPort: socket.localPort }));
    } else {
      const socket = dgram.createSocket(net.isIPv4(address) ? 'udp4' : 'udp6');
      socket.send('x', Number(port), address);
      await once(socket, 'message');
      console.log(JSON.stringify({ localPort: socket.address().port }));
    }
  } else if (mode === 'burst') {
    const [address, first, servicePortsJson, countText] = rest as [string, string, string, string];
    const servicePorts = JSON.parse(servicePortsJson) as number[];
    const count = Number(countText);
    const sendOne = async (i: number): Promise<void> => {
      const socket = dgram.createSocket(net.isIPv4(address) ? 'udp4' : 'udp6');
      socket.bind(Number(first) + i);
      await once(socket, 'listening');
      await new Promise<void>((resolve, reject) =>
        socket.send('x', servicePorts[i % servicePorts.length], address, (err) => (err ? reject(err) : resolve())),
      );
      socket.close();
    };
    let next = 0;
    await Promise.all(
      Array.from({ length: BURST_WINDOW }, async () => {
        while (next < count) await sendOne(next++);
      }),
    );
    console.log('done');
  } else {
    throw new Error(`usage: node ${SELF} backend|connect|burst ... (see the file's header)`);
  }
}

if (import.meta.main) await main(process.argv.slice(2));
