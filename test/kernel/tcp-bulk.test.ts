// TCP bulk transfer: the sender's egress carries every payload byte plus one
// set of headers per counted skb; per-CPU slots sum to what read() returns.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cgroupId, possibleCpus, type Direction, type StatsMap } from '../../agent/kernel/bpf.ts';
import { addTraffic, NO_TRAFFIC, type Traffic } from '../../common/contract/counts.ts';
import { SLOT } from '../../agent/peers/classes.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { MAX_TCP_SEGMENT, retransSegs } from '../helpers/netns.ts';
import { makeTopology } from '../helpers/topology.ts';
import { tcpTransfer, type Family } from '../helpers/traffic.ts';

const PAYLOAD = 50_000_000;

/*
 * Header bytes per counted skb. skb->len at the hooks is the L3 length of the
 * skb: a GSO super-packet (on this lo the sender's egress skbs average ~115 KB,
 * two 65,483-byte segments) carries ONE IP header and ONE TCP header, a pure
 * ACK/SYN/FIN only headers. The stack may split a super-packet before the
 * receiver's ingress hook (seen here: ~2x the sender's skb count); each piece
 * then carries its own headers and counts as one packet, so the same per-packet
 * bounds hold on both sides. With P = payload bytes, N = counted packets:
 *   bytes >= P + N x (minimal IP header + minimal TCP header)
 *            IPv4: 20 + 20 = 40; IPv6: 40 + 20 = 60
 *   bytes <= P + N x (maximal IP header + maximal TCP header) + retransmitted payload
 *            IPv4: 60 + 60 = 120; IPv6: 40 + 60 = 100 (Linux adds no extension headers to TCP)
 * Retransmissions (rare on a veth) resend payload: the netns's own Tcp RetransSegs
 * bounds them, each segment at most 64 KiB.
 */
const MIN_HEADERS: Record<Family, number> = { 4: 40, 6: 60 };
const MAX_HEADERS: Record<Family, number> = { 4: 120, 6: 100 };

/**
 * lookup() and read() of one entry's `external` slot (the peer's class: the
 * trie is empty), taken when no packet moved in between (late ACKs/FINs may still arrive).
 */
function stableSnapshot(map: StatsMap, id: bigint, direction: Direction): { perCpu: Traffic[]; read: Traffic } {
  const slot = SLOT.external;
  for (let attempt = 0; ; attempt++) {
    const first = map.lookup(id, direction)?.map((cpu) => cpu[slot]!);
    const sums = map.read(id, direction);
    const read = sums && { bytes: sums[2 * slot]!, packets: sums[2 * slot + 1]! };
    const again = map.lookup(id, direction)?.map((cpu) => cpu[slot]!);
    assert.ok(first !== undefined && read !== undefined && again !== undefined, `entry ${id}/${direction} exists`);
    if (
      JSON.stringify(first.reduce(addTraffic, NO_TRAFFIC), big) ===
        JSON.stringify(again.reduce(addTraffic, NO_TRAFFIC), big) ||
      attempt >= 50
    ) {
      return { perCpu: again, read };
    }
  }
}

function big(_: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

for (const family of [4, 6] as const satisfies readonly Family[]) {
  test(`IPv${family} TCP ${PAYLOAD / 1e6} MB: egress bytes within payload + per-packet header bounds; per-CPU sums match`, async (t) => {
    const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
    const sender = makeTestCgroup(t);
    const receiver = makeTestCgroup(t);
    const pm = loadPodmeter(t);
    const map = pm.stats!;
    pm.attach(sender);
    pm.attach(receiver);

    await tcpTransfer({
      senderCgroup: sender,
      receiverCgroup: receiver,
      ...topo.toPeer('external', family),
      family,
      bytes: PAYLOAD,
    });
    const retrans = retransSegs(topo.pod) + retransSegs(topo.world);
    const slack = BigInt(retrans * MAX_TCP_SEGMENT);
    const P = BigInt(PAYLOAD);
    const min = BigInt(MIN_HEADERS[family]);
    const max = BigInt(MAX_HEADERS[family]);

    const senderId = cgroupId(sender.path);
    const receiverId = cgroupId(receiver.path);
    const out = stableSnapshot(map, senderId, 'egress').read;
    const inn = stableSnapshot(map, receiverId, 'ingress').read;
    t.diagnostic(
      `IPv${family}: sender egress ${out.bytes} B in ${out.packets} skbs; receiver ingress ${inn.bytes} B in ${inn.packets} skbs; RetransSegs ${retrans}`,
    );

    for (const [name, c] of [
      ['sender egress', out],
      ['receiver ingress', inn],
    ] as const) {
      assert.ok(c.packets > 0n, `${name}: packets counted`);
      assert.ok(c.bytes >= P + c.packets * min, `${name}: ${c.bytes} >= ${P} + ${c.packets} x ${min}`);
      assert.ok(
        c.bytes <= P + c.packets * max + slack,
        `${name}: ${c.bytes} <= ${P} + ${c.packets} x ${max} + ${slack}`,
      );
    }
    // The other directions carry only headers (ACKs, SYN, FIN): no payload.
    for (const [name, c] of [
      ['sender ingress', stableSnapshot(map, senderId, 'ingress').read],
      ['receiver egress', stableSnapshot(map, receiverId, 'egress').read],
    ] as const) {
      assert.ok(c.packets > 0n, `${name}: ACKs counted`);
      assert.ok(
        c.bytes >= c.packets * min && c.bytes <= c.packets * max,
        `${name}: ${c.bytes} B is headers only for ${c.packets} skbs`,
      );
    }

    // Per-CPU: one slot per possible CPU; their sum is what read() returns.
    for (const [id, direction] of [
      [senderId, 'egress'],
      [senderId, 'ingress'],
      [receiverId, 'egress'],
      [receiverId, 'ingress'],
    ] as const) {
      const { perCpu, read } = stableSnapshot(map, id, direction);
      assert.equal(perCpu.length, possibleCpus());
      assert.deepEqual(perCpu.reduce(addTraffic, NO_TRAFFIC), read, `per-CPU sum of ${id}/${direction}`);
      const busy = perCpu.filter((c) => c.packets > 0n).length;
      t.diagnostic(`${id}/${direction}: ${busy} of ${perCpu.length} CPU slots non-zero`);
    }
  });
}
