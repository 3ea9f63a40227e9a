/**
 * Exact counts through the agent's /metrics and API: several pods at once,
 * pod-shaped trees of both cgroup drivers with the traffic coming from
 * container scopes below the pod; children mode on a plain tree.
 * Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { MAX_TCP_SEGMENT, retransSegs } from '../helpers/netns.ts';
import { makeTopology } from '../helpers/topology.ts';
import { tcpTransfer, udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';

const hex64 = () => randomUUID().replaceAll('-', '').repeat(2);

/** kubelet-shaped pod cgroups (relative to the agent's root) with one container scope each. */
function podTrees(uids: { systemd: string; cgroupfs: string; guaranteed: string }) {
  const u = uids.systemd.replaceAll('-', '_');
  return {
    systemd: {
      pod: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice`,
      container: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice/cri-containerd-${hex64()}.scope`,
    },
    cgroupfs: {
      pod: `kubepods/besteffort/pod${uids.cgroupfs}`,
      container: `kubepods/besteffort/pod${uids.cgroupfs}/${hex64()}`,
    },
    guaranteed: {
      pod: `kubepods.slice/kubepods-pod${uids.guaranteed.replaceAll('-', '_')}.slice`,
      container: `kubepods.slice/kubepods-pod${uids.guaranteed.replaceAll('-', '_')}.slice/cri-containerd-${hex64()}.scope`,
    },
  };
}

test('pods mode: exact UDP (IPv4, IPv6) and bounded TCP per pod, from container scopes', async (t) => {
  const root = makeTestCgroup(t);
  const uids = { systemd: randomUUID(), cgroupfs: randomUUID(), guaranteed: randomUUID() };
  const trees = podTrees(uids);
  // Both drivers' trees side by side is not what a kubelet makes, but the agent must parse each shape;
  // the systemd tree goes first so --discover auto sees kubepods either way.
  for (const tree of Object.values(trees)) root.child(tree.container);
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--discover', 'pods'] });
  await waitFor('3 pods attached', async () => ((await agent.cgroups()).length === 3 ? true : undefined));

  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const c = (rel: string) => `${root.path}/${rel}`;
  const N = 200;
  const P = 1000;
  await Promise.all([
    udpExchange({
      senderCgroup: c(trees.systemd.container),
      receiverCgroup: c(trees.cgroupfs.container),
      ...topo.toPeer('external', 4),
      family: 4,
      count: N,
      payload: P,
    }),
    udpExchange({
      senderCgroup: c(trees.cgroupfs.container),
      receiverCgroup: c(trees.systemd.container),
      ...topo.toPeer('external', 6),
      family: 6,
      count: N,
      payload: P,
    }),
  ]);
  const tcpBytes = 20 * 1024 * 1024;
  await tcpTransfer({
    senderCgroup: c(trees.guaranteed.container),
    receiverCgroup: c(trees.guaranteed.container),
    ...topo.toPeer('external', 4),
    family: 4,
    bytes: tcpBytes,
  });

  const metrics = await agent.metrics();
  const get = (uid: string, what: 'bytes' | 'packets', direction: string) =>
    sample(metrics, `podmeter_pod_network_${what}_total`, { uid, direction, namespace: '', pod: '' });
  const v4 = udpDatagramBytes(4, P) * N;
  const v6 = udpDatagramBytes(6, P) * N;
  assert.equal(get(uids.systemd, 'bytes', 'egress'), v4);
  assert.equal(get(uids.systemd, 'packets', 'egress'), N);
  assert.equal(get(uids.systemd, 'bytes', 'ingress'), v6);
  assert.equal(get(uids.cgroupfs, 'bytes', 'egress'), v6);
  assert.equal(get(uids.cgroupfs, 'bytes', 'ingress'), v4);
  assert.equal(get(uids.cgroupfs, 'packets', 'ingress'), N);

  // TCP both ends in one pod: egress carries the payload plus headers (at
  // most 60 IP + 60 TCP per skb) and ACKs, and again what was retransmitted.
  const tcpOut = get(uids.guaranteed, 'bytes', 'egress')!;
  const tcpPackets = get(uids.guaranteed, 'packets', 'egress')!;
  const slack = tcpPackets * 120 + (retransSegs(topo.pod) + retransSegs(topo.world)) * MAX_TCP_SEGMENT;
  assert.ok(tcpOut >= tcpBytes, `egress ${tcpOut} >= payload ${tcpBytes}`);
  assert.ok(
    tcpOut <= tcpBytes + slack,
    `egress ${tcpOut} <= payload + ${slack} (headers of ${tcpPackets} skbs, retransmissions)`,
  );

  // The JSON API agrees with the metrics, exactly.
  const view = (await agent.cgroups()).find((x) => x.uid === uids.systemd)!;
  assert.equal(view.egress.bytes, String(v4));
  assert.equal(view.kind, 'pod');
  assert.equal(view.state, 'live');
});

test('children mode: every direct child of the root is a unit; grandchildren count into it', async (t) => {
  const root = makeTestCgroup(t);
  const web = root.child('web.service/worker');
  const db = root.child('db.service');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  await waitFor('2 cgroups attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  await udpExchange({
    senderCgroup: web.path,
    receiverCgroup: db.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 50,
    payload: 200,
  });
  const metrics = await agent.metrics();
  const m = (cgroup: string, direction: string) =>
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup, direction });
  assert.equal(m('web.service', 'egress'), 50 * 228);
  assert.equal(m('db.service', 'ingress'), 50 * 228);
  assert.equal(m('web.service', 'ingress'), 0);
  assert.equal(sample(metrics, 'podmeter_attached_cgroups', {}), 2);
});
