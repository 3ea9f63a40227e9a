// Cgroup hierarchy: sockets of descendant cgroups count into the storage of
// the attachment's cgroup (the pod), and sibling attachments never mix.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';

const ZERO = { bytes: 0n, packets: 0n };

function counters(count: number, bytesEach: number): { bytes: bigint; packets: bigint } {
  return { bytes: BigInt(count * bytesEach), packets: BigInt(count) };
}

test('container scopes count into the pod cgroup the programs are attached to', async (t) => {
  // A kubelet-shaped tree (systemd driver, burstable QoS, containerd).
  const uid = randomUUID();
  const podRel = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll('-', '_')}.slice`;
  const pod = makeTestCgroup(t, podRel);
  const ctrA = pod.child(`${podRel}/cri-containerd-${randomBytes(32).toString('hex')}.scope`);
  const ctrB = pod.child(`${podRel}/cri-containerd-${randomBytes(32).toString('hex')}.scope`);
  const peer = makeTestCgroup(t);
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const pm = loadPodmeter(t);
  pm.attach(pod);
  pm.attach(peer);

  // Both containers send to a peer outside the pod, over both families.
  await udpExchange({
    senderCgroup: ctrA,
    receiverCgroup: peer,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 100,
    payload: 200,
  });
  await udpExchange({
    senderCgroup: ctrB,
    receiverCgroup: peer,
    ...topo.toPeer('external', 6),
    family: 6,
    count: 50,
    payload: 1000,
  });
  const out = {
    bytes: BigInt(100 * udpDatagramBytes(4, 200) + 50 * udpDatagramBytes(6, 1000)),
    packets: 150n,
  };
  assert.deepEqual(pm.counters(pod), { egress: out, ingress: ZERO });
  assert.deepEqual(pm.counters(peer), { egress: ZERO, ingress: out });
  // The containers have no storage of their own: nothing is attached there.
  assert.deepEqual(pm.counters(ctrA), { egress: undefined, ingress: undefined });
  assert.deepEqual(pm.counters(ctrB), { egress: undefined, ingress: undefined });

  // Inside the pod (container A -> container B): the pod sends and receives it.
  await udpExchange({
    senderCgroup: ctrA,
    receiverCgroup: ctrB,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 20,
    payload: 50,
  });
  const inside = counters(20, udpDatagramBytes(4, 50));
  assert.deepEqual(pm.counters(pod), {
    egress: { bytes: out.bytes + inside.bytes, packets: out.packets + inside.packets },
    ingress: inside,
  });
  // Storage keys: the pod and the peer only, one entry per direction.
  const keys = pm
    .stats!.keys()
    .map((k) => `${k.cgroupId}/${k.direction}`)
    .sort();
  assert.deepEqual(keys, [`${pod.id}/egress`, `${pod.id}/ingress`, `${peer.id}/egress`, `${peer.id}/ingress`].sort());
});

test('two sibling cgroups with their own attachments never mix', async (t) => {
  const parent = makeTestCgroup(t);
  const one = parent.child('sibling-one');
  const two = parent.child('sibling-two');
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const pm = loadPodmeter(t);
  pm.attach(one.path);
  pm.attach(two.path);

  await udpExchange({
    senderCgroup: one,
    receiverCgroup: two,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 64,
    payload: 512,
  });
  await udpExchange({
    senderCgroup: two,
    receiverCgroup: one,
    ...topo.toPeer('external', 6),
    family: 6,
    count: 33,
    payload: 77,
  });
  const oneToTwo = counters(64, udpDatagramBytes(4, 512));
  const twoToOne = counters(33, udpDatagramBytes(6, 77));
  assert.deepEqual(pm.counters(one.id), { egress: oneToTwo, ingress: twoToOne });
  assert.deepEqual(pm.counters(two.id), { egress: twoToOne, ingress: oneToTwo });
  // The unattached parent has no entry even though both children are below it.
  assert.deepEqual(pm.counters(parent), { egress: undefined, ingress: undefined });
});

test('attachments at two levels: each counts what its subtree sends', async (t) => {
  // podmeter attached at the pod and (by another podmeter object) at one of its
  // containers: a container's packet runs both programs, each into its own map.
  const pod = makeTestCgroup(t, 'pod');
  const ctr = pod.child('pod/ctr');
  const peer = makeTestCgroup(t);
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const atPod = loadPodmeter(t);
  const atCtr = loadPodmeter(t);
  atPod.attach(pod);
  atPod.attach(peer);
  atCtr.attach(ctr, ['egress']);
  await udpExchange({
    senderCgroup: ctr,
    receiverCgroup: peer,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 10,
    payload: 10,
  });
  await udpExchange({
    senderCgroup: pod,
    receiverCgroup: peer,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 5,
    payload: 10,
  });
  assert.deepEqual(atPod.counters(pod).egress, counters(15, udpDatagramBytes(4, 10)));
  assert.deepEqual(atCtr.counters(ctr).egress, counters(10, udpDatagramBytes(4, 10)));
});
