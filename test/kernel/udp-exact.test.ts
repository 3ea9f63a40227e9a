// Exactness: every UDP datagram counts skb->len (IP + UDP headers + payload)
// once, in the sending cgroup's egress and the receiving cgroup's ingress.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange, type Family } from '../helpers/traffic.ts';

const ZERO = { bytes: 0n, packets: 0n };

// Payload sizes from empty to near the largest unfragmented datagram on lo (MTU 65536).
const ROUNDS = [
  { count: 300, payload: 0 },
  { count: 500, payload: 1 },
  { count: 500, payload: 1400 },
  { count: 100, payload: 9000 },
  { count: 40, payload: 65_000 },
];

for (const family of [4, 6] as const satisfies readonly Family[]) {
  test(`IPv${family} UDP: sender egress and receiver ingress are exactly N x (${family === 4 ? 28 : 48} + P) bytes and N packets`, async (t) => {
    const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
    const sender = makeTestCgroup(t);
    const receiver = makeTestCgroup(t);
    const pm = loadPodmeter(t);
    pm.attach(sender);
    pm.attach(receiver);
    // Attached, not yet used: entries exist and are zero.
    assert.deepEqual(pm.counters(sender), { ingress: ZERO, egress: ZERO });
    assert.deepEqual(pm.counters(receiver), { ingress: ZERO, egress: ZERO });

    let bytes = 0;
    let packets = 0;
    for (const { count, payload } of ROUNDS) {
      const got = await udpExchange({
        senderCgroup: sender,
        receiverCgroup: receiver,
        ...topo.toPeer('external', family),
        family,
        count,
        payload,
      });
      assert.equal(got.count, count);
      bytes += count * udpDatagramBytes(family, payload);
      packets += count;
      const expected = { bytes: BigInt(bytes), packets: BigInt(packets) };
      const what = `after ${count} x ${payload} B`;
      assert.deepEqual(pm.counters(sender), { ingress: ZERO, egress: expected }, `sender ${what}`);
      assert.deepEqual(pm.counters(receiver), { ingress: expected, egress: ZERO }, `receiver ${what}`);
    }
  });
}

test('UDP both ways between two cgroups: each direction counts only its own datagrams', async (t) => {
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const a = makeTestCgroup(t);
  const b = makeTestCgroup(t);
  const pm = loadPodmeter(t);
  pm.attach(a);
  pm.attach(b);
  await udpExchange({
    senderCgroup: a,
    receiverCgroup: b,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 70,
    payload: 100,
  });
  await udpExchange({
    senderCgroup: b,
    receiverCgroup: a,
    ...topo.toPeer('external', 6),
    family: 6,
    count: 30,
    payload: 333,
  });
  const aToB = { bytes: BigInt(70 * udpDatagramBytes(4, 100)), packets: 70n };
  const bToA = { bytes: BigInt(30 * udpDatagramBytes(6, 333)), packets: 30n };
  assert.deepEqual(pm.counters(a), { egress: aToB, ingress: bToA });
  assert.deepEqual(pm.counters(b), { egress: bToA, ingress: aToB });
});
