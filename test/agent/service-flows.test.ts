/**
 * Service traffic counted in its backend's class, standalone, on a real
 * datapath: a DNAT rule in the "node" netns (world: what kube-proxy's
 * iptables rules do) turns the Service address into a backend address, and
 * the agent, reading that netns's conntrack table (--conntrack-netns),
 * moves each flow's bytes from `service` to the backend's class. Exact for
 * UDP (IPv4 and IPv6, both directions' bytes known), nothing left in
 * `service`, totals unchanged; an agent killed in the middle of a flow
 * loses and doubles nothing; a flood of flows (a full table) drains while
 * the HTTP API keeps answering. Needs root, cgroup v2, bpffs, iptables.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { PODMETER_MAX_FLOWS } from '../../agent/kernel/contract.generated.ts';
import { startAgentProcess, type AgentProcess } from '../helpers/agent.ts';
import { makeTestCgroup, type CgroupDir } from '../helpers/cgroups.ts';
import { FLOOD_FLOW_BYTES, flowTablesEmpty, writeFlowFlood } from '../helpers/flowFlood.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { ADDRESSES, CIDRS, dnatService, makeTopology, type Topology } from '../helpers/topology.ts';
import {
  tcpTransfer,
  udpDatagramBytes,
  udpExchange,
  type Family,
  type TcpTransferOptions,
} from '../helpers/traffic.ts';

/** The backend behind the Service address: a pod in another zone (a configured class stands for it standalone). */
const BACKEND = 'crossZone';
const BACKEND_CLASS = 'remote-zone';

async function start(
  t: TestContext,
): Promise<{ agent: AgentProcess; app: CgroupDir; other: CgroupDir; topo: Topology }> {
  const root = makeTestCgroup(t);
  const app = root.child('app.service');
  const other = root.child('other.service');
  const topo = makeTopology(t);
  dnatService(topo, BACKEND);
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--service-cidr',
      CIDRS.service.join(','),
      '--peer-class',
      `${BACKEND_CLASS}=${CIDRS.crossZone.join(',')}`,
      '--conntrack-netns',
      `/run/netns/${topo.world.name}`,
      '--interval',
      '1',
    ],
  });
  await waitFor('2 cgroups attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  return { agent, app, other, topo };
}

/** The app talking to the Service address, served by the backend (the DNAT's target) in the other cgroup. */
function toService(
  app: CgroupDir,
  other: CgroupDir,
  topo: Topology,
  family: Family,
): Omit<TcpTransferOptions, 'bytes'> {
  return {
    senderCgroup: app,
    receiverCgroup: other,
    netns: topo.pod,
    receiverNetns: topo.world,
    address: ADDRESSES[BACKEND][family],
    target: ADDRESSES.service[family],
    family,
  };
}

/** UDP datagrams from the app to the Service address. */
function sendToService(app: CgroupDir, other: CgroupDir, topo: Topology, family: Family, count: number) {
  return udpExchange({ ...toService(app, other, topo, family), count, payload: 200 });
}

function peerBytes(metrics: string, direction: 'ingress' | 'egress', peer: string): number {
  return sample(metrics, 'podmeter_cgroup_network_peer_bytes_total', { cgroup: 'app.service', direction, peer }) ?? 0;
}

test('UDP to a Service address: every byte in the backend class, none in service, IPv4 and IPv6', async (t) => {
  const { agent, app, other, topo } = await start(t);
  await sendToService(app, other, topo, 4, 30);
  await sendToService(app, other, topo, 6, 20);
  const expected = 30 * udpDatagramBytes(4, 200) + 20 * udpDatagramBytes(6, 200);
  const metrics = await waitFor('the flows drained into the backend class', async () => {
    const m = await agent.metrics();
    return peerBytes(m, 'egress', BACKEND_CLASS) === expected ? m : undefined;
  });
  assert.equal(peerBytes(metrics, 'egress', 'service'), 0, 'nothing left in service');
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'app.service', direction: 'egress' }),
    expected,
    'the total is the backend class',
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_peer_packets_total', {
      cgroup: 'app.service',
      direction: 'egress',
      peer: BACKEND_CLASS,
    }),
    50,
  );
  assert.ok(sample(metrics, 'podmeter_service_flow_entries_total', {})! >= 2, "each family's flow drained");
  for (const reason of ['not-a-flow', 'no-unit', 'table-full', 'no-conntrack-entry', 'conntrack-unavailable'])
    assert.equal(sample(metrics, 'podmeter_service_unresolved_bytes_total', { reason }), 0, reason);
  // The HTTP API and the state file carry the same counts.
  const view = (await agent.cgroups()).find((c) => c.cgroup === 'app.service')!;
  assert.deepEqual(view.peers?.egress[BACKEND_CLASS], { bytes: String(expected), packets: '50' });
});

test('traffic that already has the backend address (a socket load balancer): counted in its class, no flow table used', async (t) => {
  const { agent, app, other, topo } = await start(t);
  await udpExchange({
    senderCgroup: app,
    receiverCgroup: other,
    ...topo.toPeer(BACKEND, 4),
    family: 4,
    count: 10,
    payload: 200,
  });
  const metrics = await waitFor('counted', async () => {
    const m = await agent.metrics();
    return peerBytes(m, 'egress', BACKEND_CLASS) === 10 * udpDatagramBytes(4, 200) ? m : undefined;
  });
  await new Promise((r) => setTimeout(r, 2500)); // two drains
  assert.equal(sample(await agent.metrics(), 'podmeter_service_flow_entries_total', {}), 0);
  assert.equal(peerBytes(metrics, 'egress', 'service'), 0);
});

test('TCP both ways through the DNAT: requests and the backend answers in the backend class; no service bytes', async (t) => {
  const { agent, app, other, topo } = await start(t);
  for (const family of [4, 6] as const) await tcpTransfer({ ...toService(app, other, topo, family), bytes: 1_000_000 });
  const metrics = await waitFor('both directions drained', async () => {
    const m = await agent.metrics();
    return peerBytes(m, 'egress', BACKEND_CLASS) > 2_000_000 && peerBytes(m, 'ingress', BACKEND_CLASS) > 0
      ? m
      : undefined;
  });
  for (const direction of ['ingress', 'egress'] as const) {
    assert.equal(peerBytes(metrics, direction, 'service'), 0, `${direction}: nothing left in service`);
    assert.equal(
      sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'app.service', direction }),
      peerBytes(metrics, direction, BACKEND_CLASS),
      `${direction}: the total is the backend class`,
    );
  }
});

test('an agent killed between drains, traffic while it is down: every byte counted once', async (t) => {
  const { agent, app, other, topo } = await start(t);
  const datagram = udpDatagramBytes(4, 200);
  await sendToService(app, other, topo, 4, 10);
  await waitFor('first drain', async () =>
    peerBytes(await agent.metrics(), 'egress', BACKEND_CLASS) === 10 * datagram ? true : undefined,
  );
  // Killed right after traffic: its flow entry is in a table no drain has read.
  await sendToService(app, other, topo, 4, 7);
  await agent.kill('SIGKILL');
  await sendToService(app, other, topo, 4, 5); // counted by the pinned programs while no agent runs
  await agent.restart();
  const metrics = await waitFor('drained after the restart', async () => {
    const m = await agent.metrics();
    return peerBytes(m, 'egress', BACKEND_CLASS) >= 22 * datagram ? m : undefined;
  });
  assert.equal(peerBytes(metrics, 'egress', BACKEND_CLASS), 22 * datagram, 'neither lost nor counted twice');
  assert.equal(peerBytes(metrics, 'egress', 'service'), 0);
  // And again after a clean stop, with nothing new: the same counts.
  await agent.kill('SIGTERM');
  await agent.restart();
  await new Promise((r) => setTimeout(r, 2500)); // two drain periods
  assert.equal(peerBytes(await agent.metrics(), 'egress', BACKEND_CLASS), 22 * datagram);
});

test('a full flow table of flows conntrack does not know drains while the HTTP API answers; every byte in service once', async (t) => {
  const { agent, app } = await start(t);
  await agent.kill('SIGTERM');
  // A tenant's flood, written while no agent runs: as many flows as the table holds, each new to conntrack.
  const FLOOD = PODMETER_MAX_FLOWS;
  writeFlowFlood(agent.bpffs, app.path, FLOOD);
  await agent.restart();
  // Scrapes and /healthz while the restarted agent drains the flood (its first drain, about a second on).
  const entriesSeen: number[] = [];
  let healthz = 0;
  let metrics: string;
  for (const deadline = Date.now() + 120_000; ;) {
    assert.ok(
      Date.now() < deadline,
      `the flood did not drain (entries drained at each scrape: ${entriesSeen.join(', ')})`,
    );
    const res = await fetch(`${agent.url}/healthz`);
    assert.equal(`${res.status} ${await res.text()}`, '200 ok\n');
    healthz++;
    metrics = await agent.metrics();
    const entries = sample(metrics, 'podmeter_service_flow_entries_total', {}) ?? 0;
    entriesSeen.push(entries);
    if (entries >= FLOOD && peerBytes(metrics, 'egress', 'service') === FLOOD * FLOOD_FLOW_BYTES) break;
  }
  const during = entriesSeen.filter((n) => n > 0 && n < FLOOD);
  assert.ok(
    during.length > 0,
    `the API answered in the middle of the drain (entries drained at each scrape: ${entriesSeen.join(', ')}; ${healthz} /healthz answers)`,
  );
  assert.equal(sample(metrics, 'podmeter_service_flow_entries_total', {}), FLOOD, 'each flow drained once');
  assert.equal(
    sample(metrics, 'podmeter_service_unresolved_bytes_total', { reason: 'no-conntrack-entry' }),
    FLOOD * FLOOD_FLOW_BYTES,
  );
  assert.equal(peerBytes(metrics, 'egress', BACKEND_CLASS), 0);
  // Emptied once the state file holding the flood's bytes is written (after the counts above).
  await waitFor('both tables emptied', () => (flowTablesEmpty(agent.bpffs) ? true : undefined));
});
