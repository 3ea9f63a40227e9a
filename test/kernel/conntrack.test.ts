// Conntrack lookups (agent/kernel/conntrack.ts over agent/native/src/conntrack.cc)
// on a real Service DNAT: a pod, a node and a backend in network namespaces
// of their own (test/helpers/serviceNode.ts), iptables' DNAT from a ClusterIP
// to the backend in the node's, as kube-proxy's iptables mode; clients in the
// pod connect to the ClusterIP, and Conntrack opened in the node's namespace
// must name the backend for each flow as the pod's socket sees it, TCP and
// UDP, IPv4 and IPv6, thousands in one call. Needs root, iproute2 and
// iptables (iptables-nft or legacy).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Conntrack, type Backend, type FlowTuple } from '../../agent/kernel/conntrack.ts';
import { BpfError } from '../../agent/kernel/errors.ts';
import { parseAddress } from '../../agent/peers/cidr.ts';
import { installRoot } from '../../common/paths.ts';
import { afterOrSignal, randomSuffix, TEST_PREFIX } from '../helpers/cleanup.ts';
import { makeNetns } from '../helpers/netns.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeServiceNode, SERVICE_ADDRESSES as A, type Protocol, type ServiceNode } from '../helpers/serviceNode.ts';
import type { Family } from '../helpers/traffic.ts';

const PROTOCOL: Record<Protocol, number> = { tcp: 6, udp: 17 };
const SERVICE_PORT = 80;
const BACKEND_PORT = 8080;

const bytes = (address: string): Uint8Array => parseAddress(address).addr;

function toService(protocol: Protocol, family: Family, localPort: number, servicePort = SERVICE_PORT): FlowTuple {
  return {
    protocol: PROTOCOL[protocol],
    local: bytes(A.pod[family]),
    localPort,
    remote: bytes(A.clusterIP[family]),
    remotePort: servicePort,
  };
}

function openIn(t: test.TestContext, path: string): Conntrack {
  const ct = Conntrack.open({ netns: path });
  t.after(() => ct.close());
  return ct;
}

const netnsPath = (name: string): string => `/run/netns/${name}`;

function show(b: Backend | undefined): string {
  return b === undefined ? 'undefined' : `${Buffer.from(b.address).toString('hex')} port ${b.port} id ${b.id}`;
}

async function serviceNode(t: test.TestContext, protocols: readonly Protocol[], ports = 1): Promise<ServiceNode> {
  const sn = makeServiceNode(t);
  for (const protocol of protocols)
    for (const family of [4, 6] as const)
      for (let i = 0; i < ports; i++) sn.dnat(protocol, family, SERVICE_PORT + i, BACKEND_PORT + i);
  await sn.startBackend(Array.from({ length: ports }, (_, i) => BACKEND_PORT + i));
  return sn;
}

for (const protocol of ['tcp', 'udp'] as const) {
  test(`a ${protocol.toUpperCase()} flow to a ClusterIP: the node's conntrack names the backend, IPv4 and IPv6`, async (t) => {
    const sn = await serviceNode(t, [protocol]);
    const ct = openIn(t, netnsPath(sn.node.name));
    for (const family of [4, 6] as const) {
      const localPort = await sn.connect(protocol, family, SERVICE_PORT);
      const flow = toService(protocol, family, localPort);
      const [backend] = ct.backends([flow]);
      assert.ok(backend !== undefined, `IPv${family}: no entry for the pod's flow`);
      assert.deepEqual(backend.address, bytes(A.backend[family]), `IPv${family}: ${show(backend)}`);
      assert.equal(backend.port, BACKEND_PORT);
      assert.ok(Number.isInteger(backend.id) && backend.id! > 0, `an entry id: ${show(backend)}`);
      // The same entry asked from the other end (the backend's socket, the entry's reply
      // direction): the answer is the pod, which is whom the backend sees.
      const [client] = ct.backends([
        {
          protocol: PROTOCOL[protocol],
          local: bytes(A.backend[family]),
          localPort: BACKEND_PORT,
          remote: bytes(A.pod[family]),
          remotePort: localPort,
        },
      ]);
      assert.deepEqual(client, { address: bytes(A.pod[family]), port: localPort, id: backend.id });
      // No entry: another source port, or the right flow asked of another namespace's table.
      assert.deepEqual(ct.backends([toService(protocol, family, localPort === 1 ? 2 : 1)]), [undefined]);
      const [inPod] = openIn(t, netnsPath(sn.pod.name)).backends([flow]);
      assert.ok(
        inPod === undefined || Buffer.from(inPod.address).equals(bytes(A.clusterIP[family])),
        `the pod's netns has no DNAT: ${show(inPod)}`,
      );
    }
  });
}

test('2,000 flows and 200 unknown tuples, IPv4 and IPv6 mixed, in one call: each gets its own answer', async (t) => {
  const PORTS = 10; // ClusterIP:80+k -> backend:8080+k: the answers differ, so a mix-up shows
  const PER_FAMILY = 1000;
  const FIRST = 20_000;
  const sn = await serviceNode(t, ['udp'], PORTS);
  const servicePorts = Array.from({ length: PORTS }, (_, k) => SERVICE_PORT + k);
  const before = sn.conntrackCount();
  for (const family of [4, 6] as const) await sn.udpBurst(family, FIRST, servicePorts, PER_FAMILY);
  await waitFor(
    `${2 * PER_FAMILY} new conntrack entries on the node`,
    () => (sn.conntrackCount() >= before + 2 * PER_FAMILY ? true : undefined),
    30_000,
    () => sn.conntrackCount(),
  );
  const tuples: FlowTuple[] = [];
  const expected: (Backend | undefined)[] = [];
  for (let i = 0; i < PER_FAMILY; i++) {
    for (const family of [4, 6] as const) {
      const k = i % PORTS;
      tuples.push(toService('udp', family, FIRST + i, SERVICE_PORT + k));
      expected.push({ address: bytes(A.backend[family]), port: BACKEND_PORT + k });
      if (i % 10 === 0) {
        tuples.push(toService('udp', family, FIRST + PER_FAMILY + i, SERVICE_PORT + k)); // never sent
        expected.push(undefined);
      }
    }
  }
  const ct = openIn(t, netnsPath(sn.node.name));
  const answers = ct.backends(tuples);
  assert.equal(answers.length, tuples.length);
  answers.forEach((answer, i) => {
    const want = expected[i];
    if (want === undefined) return assert.equal(answer, undefined, `tuple ${i}: ${show(answer)}`);
    assert.ok(answer !== undefined, `tuple ${i} (local port ${tuples[i]!.localPort}): no entry`);
    assert.deepEqual({ address: answer.address, port: answer.port }, want, `tuple ${i}: ${show(answer)}`);
  });
  // Each entry asked from the backend's end: the answer is the pod's own port, a
  // different one for every tuple, with the entry's id: no answer went to another tuple.
  const found = tuples.flatMap((tuple, i) => (answers[i] === undefined ? [] : [{ tuple, answer: answers[i] }]));
  const reverse = ct.backends(
    found.map(({ tuple, answer }) => ({
      protocol: tuple.protocol,
      local: answer.address,
      localPort: answer.port,
      remote: tuple.local,
      remotePort: tuple.localPort,
    })),
  );
  reverse.forEach((client, i) => {
    const { tuple, answer } = found[i]!;
    assert.deepEqual(client, { address: tuple.local, port: tuple.localPort, id: answer.id }, `reverse of tuple ${i}`);
  });
  assert.deepEqual(ct.backends([]), []);
});

test('a bad netns path is a clear error, and the calling thread stays in its own netns', (t) => {
  const own = readlinkSync('/proc/thread-self/ns/net');
  const missing = `/run/netns/${TEST_PREFIX}${randomSuffix()}-missing`;
  assert.throws(
    () => Conntrack.open({ netns: missing }),
    (err: unknown) =>
      err instanceof BpfError &&
      err.code === 'ENOENT' &&
      err.path === missing &&
      err.message.startsWith(`open network namespace '${missing}'`),
  );
  const file = join(tmpdir(), `${TEST_PREFIX}${randomSuffix()}-not-a-netns`);
  writeFileSync(file, '');
  t.after(() => rmSync(file, { force: true }));
  assert.throws(
    () => Conntrack.open({ netns: file }),
    (err: unknown) =>
      err instanceof BpfError &&
      err.code === 'EINVAL' &&
      err.syscall === 'setns' &&
      /not a network namespace/.test(err.message),
  );
  assert.throws(() => Conntrack.open({ netns: '' }), TypeError);
  const netns = makeNetns(t);
  openIn(t, netnsPath(netns.name)).close();
  assert.equal(readlinkSync('/proc/thread-self/ns/net'), own, 'the thread never left its namespace');
});

/** Runs Conntrack.open(options) in a child process inside `netns` with `capability` dropped (setpriv), as an agent without it. */
async function openWithout(
  t: test.TestContext,
  netns: string,
  capability: string,
  options: string,
): Promise<{ code?: string; message?: string }> {
  const script = `
    const { Conntrack } = await import(${JSON.stringify(join(installRoot, 'agent/kernel/conntrack.ts'))});
    try { Conntrack.open(${options}).close(); console.log('{}'); }
    catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`;
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      netns,
      'setpriv',
      `--bounding-set=-${capability}`,
      `--inh-caps=-${capability}`,
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  afterOrSignal(t, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, `the child failed: ${err}`);
  return JSON.parse(out) as { code?: string; message?: string };
}

test('without CAP_NET_ADMIN open fails, saying the agent needs it; without CAP_SYS_ADMIN entering another netns does', async (t) => {
  const netns = makeNetns(t);
  const noNetAdmin = await openWithout(t, netns.name, 'net_admin', '');
  assert.equal(noNetAdmin.code, 'EPERM', JSON.stringify(noNetAdmin));
  assert.match(noNetAdmin.message!, /the agent needs CAP_NET_ADMIN to read the node's conntrack table/);
  const noSysAdmin = await openWithout(t, netns.name, 'sys_admin', JSON.stringify({ netns: netnsPath(netns.name) }));
  assert.equal(noSysAdmin.code, 'EPERM', JSON.stringify(noSysAdmin));
  assert.match(noSysAdmin.message!, /CAP_SYS_ADMIN to enter another network namespace/);
  // The control: without an unrelated capability, the same opens work.
  assert.deepEqual(await openWithout(t, netns.name, 'mknod', ''), {});
  assert.deepEqual(await openWithout(t, netns.name, 'mknod', JSON.stringify({ netns: netnsPath(netns.name) })), {});
});

test('bad tuples are refused before the addon, naming the tuple; a closed Conntrack throws EBADF', (t) => {
  const netns = makeNetns(t);
  const ct = openIn(t, netnsPath(netns.name));
  const good = toService('udp', 4, 1000);
  assert.deepEqual(ct.backends([good]), [undefined]);
  const cases: [Partial<FlowTuple>, RegExp][] = [
    [{ protocol: 1 }, /tuple 1: protocol 1 has no ports/],
    [{ local: new Uint8Array(4) }, /tuple 1: the local address must be a Uint8Array of 16 bytes .*not 4 bytes/],
    [{ remote: bytes('fd00::1') }, /tuple 1: one address is IPv4 \(IPv4-mapped\) and the other IPv6/],
    [{ localPort: 65_536 }, /tuple 1: the local port must be an integer from 0 to 65535, not 65536/],
    [{ remotePort: 1.5 }, /tuple 1: the remote port/],
  ];
  for (const [change, message] of cases) assert.throws(() => ct.backends([good, { ...good, ...change }]), { message });
  ct.close();
  assert.throws(() => ct.backends([good]), { name: 'BpfError', code: 'EBADF' });
});
