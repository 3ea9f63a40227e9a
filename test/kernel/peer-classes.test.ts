// Peer classes in the kernel: every packet counts in exactly one class slot,
// by the peer address (ingress: source, egress: destination) looked up in the
// peer trie, or loopback when it is on lo. Real traffic over a veth pair
// between network namespaces (test/helpers/topology.ts), both directions,
// IPv4 and IPv6. Needs root, cgroup v2.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PODMETER_FIRST_NAMED } from '../../agent/kernel/contract.generated.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { CIDRS, makeTopology, type Peer } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange, type Family } from '../helpers/traffic.ts';

const counts = (n: number, family: Family, payload: number) => ({
  bytes: BigInt(n * udpDatagramBytes(family, payload)),
  packets: BigInt(n),
});

// Which class each peer of the topology is in once the trie knows the cluster.
const CLASS_OF: Record<Exclude<Peer, 'pod'>, string> = {
  node: 'node',
  zone: 'zone',
  crossZone: 'cross-zone',
  crossRegion: 'cross-region',
  service: 'service',
  storage: 'storage', // a named class in the first named slot
  external: 'external',
};

for (const family of [4, 6] as const) {
  test(`IPv${family}: each peer's datagrams count exactly in its class, egress and ingress; loopback only as loopback`, async (t) => {
    const topo = makeTopology(t);
    const pod = makeTestCgroup(t);
    const peer = makeTestCgroup(t);
    const pm = loadPodmeter(t);
    pm.attach(pod);
    for (const [cls, cidrs] of [
      ['node', CIDRS.node],
      ['zone', CIDRS.zone],
      ['cross-zone', CIDRS.crossZone],
      ['cross-region', CIDRS.crossRegion],
      ['service', CIDRS.service],
    ] as const)
      for (const c of cidrs) pm.setPeer(c, cls);
    for (const c of CIDRS.storage) pm.setPeer(c, PODMETER_FIRST_NAMED);

    const expected: Record<'ingress' | 'egress', Record<string, { bytes: bigint; packets: bigint }>> = {
      ingress: {},
      egress: {},
    };
    const add = (d: 'ingress' | 'egress', cls: string, c: { bytes: bigint; packets: bigint }) => {
      const x = expected[d][cls] ?? { bytes: 0n, packets: 0n };
      expected[d][cls] = { bytes: x.bytes + c.bytes, packets: x.packets + c.packets };
    };
    const named = (classes: Record<string, unknown> | undefined) =>
      Object.fromEntries(
        Object.entries(classes ?? {}).map(([k, v]) => [k === `slot-${PODMETER_FIRST_NAMED}` ? 'storage' : k, v]),
      );

    let n = 11;
    for (const p of Object.keys(CLASS_OF) as (keyof typeof CLASS_OF)[]) {
      n += 3; // a different count per peer: a packet in the wrong class shows
      const payload = 100 + n;
      await udpExchange({
        senderCgroup: pod,
        receiverCgroup: peer,
        ...topo.toPeer(p, family),
        family,
        count: n,
        payload,
      });
      add('egress', CLASS_OF[p], counts(n, family, payload));
      await udpExchange({
        senderCgroup: peer,
        receiverCgroup: pod,
        ...topo.fromPeer(p, family),
        family,
        count: n + 1,
        payload,
      });
      add('ingress', CLASS_OF[p], counts(n + 1, family, payload));
      const got = pm.classes(pod);
      assert.deepEqual({ ingress: named(got.ingress), egress: named(got.egress) }, expected, `after the ${p} peer`);
    }

    // Loopback: to 127.0.0.1/::1 and to the pod's own eth0 address (the kernel routes that over lo too).
    const before = pm.counters(pod);
    await udpExchange({ senderCgroup: pod, receiverCgroup: pod, netns: topo.pod, family, count: 21, payload: 7 });
    await udpExchange({
      senderCgroup: pod,
      receiverCgroup: pod,
      netns: topo.pod,
      address: topo.address('pod', family),
      family,
      count: 9,
      payload: 7,
    });
    const lo = counts(30, family, 7);
    add('egress', 'loopback', lo);
    add('ingress', 'loopback', lo);
    const got = pm.classes(pod);
    assert.deepEqual({ ingress: named(got.ingress), egress: named(got.egress) }, expected, 'after loopback traffic');
    assert.deepEqual(pm.counters(pod), before, 'loopback is left out of the network totals');
  });
}

test('trie changes apply to later packets only; the per-flow cache follows the generation', async (t) => {
  const topo = makeTopology(t);
  const pod = makeTestCgroup(t);
  const peer = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  pm.attach(pod);
  const send = () =>
    udpExchange({
      senderCgroup: pod,
      receiverCgroup: peer,
      ...topo.toPeer('zone', 4),
      family: 4,
      count: 10,
      payload: 50,
    });
  pm.setPeer(CIDRS.zone[0], 'zone');
  await send();
  // The same flow, same CPU cache entry: a relabelled prefix moves the next packets.
  pm.setPeer(CIDRS.zone[0], 'cross-zone');
  await send();
  // A more specific prefix wins (longest match).
  pm.setPeer(`${topo.address('zone', 4)}/32`, 'node');
  await send();
  const ten = counts(10, 4, 50);
  assert.deepEqual(pm.classes(pod).egress, { zone: ten, 'cross-zone': ten, node: ten });
});
