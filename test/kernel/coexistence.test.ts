// Coexistence: another tool's program attached with BPF_F_ALLOW_MULTI on the
// same cgroup keeps running next to podmeter's link, and podmeter stays exact.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attachCgroupMulti, detachCgroupMulti, enableRunTimeStats, queryCgroup } from '../../agent/kernel/bpf.ts';
import { loadPassthrough, loadPodmeter } from '../helpers/bpf.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';

const N = 200;
const P = 700;

for (const order of ['other tool first', 'podmeter first'] as const) {
  test(`passthrough (BPF_F_ALLOW_MULTI) and podmeter (bpf_link) on one cgroup both run (${order})`, async (t) => {
    const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
    const sender = makeTestCgroup(t);
    const receiver = makeTestCgroup(t);
    const pm = loadPodmeter(t);
    const other = loadPassthrough(t);
    const otherEgress = other.programs.egress;
    const ids = { podmeter: pm.programs.egress.info().id, other: otherEgress.info().id };

    if (order === 'podmeter first') pm.attach(sender);
    attachCgroupMulti({ cgroupPath: sender.path, program: otherEgress });
    try {
      if (order === 'other tool first') pm.attach(sender);
      pm.attach(receiver);
      // The kernel lists both on the cgroup's egress hook, podmeter's only on ingress.
      assert.deepEqual(queryCgroup(sender.path, 'egress').sort(), [ids.podmeter, ids.other].sort());
      assert.deepEqual(queryCgroup(sender.path, 'ingress'), [pm.programs.ingress.info().id]);

      const stats = enableRunTimeStats();
      const before = { other: otherEgress.info(), podmeter: pm.programs.egress.info() };
      try {
        await udpExchange({
          senderCgroup: sender,
          receiverCgroup: receiver,
          ...topo.toPeer('external', 4),
          family: 4,
          count: N,
          payload: P,
        });
      } finally {
        stats.close();
      }
      const after = { other: otherEgress.info(), podmeter: pm.programs.egress.info() };

      // Each program ran once per datagram the sender's cgroup sent.
      assert.equal(after.other.runCnt - before.other.runCnt, BigInt(N), 'passthrough_egress run count');
      assert.equal(after.podmeter.runCnt - before.podmeter.runCnt, BigInt(N), 'podmeter_egress run count');
      assert.ok(after.other.runTimeNs > before.other.runTimeNs, 'passthrough_egress run time advanced');
      assert.ok(after.podmeter.runTimeNs > before.podmeter.runTimeNs, 'podmeter_egress run time advanced');

      const expected = { bytes: BigInt(N * udpDatagramBytes(4, P)), packets: BigInt(N) };
      assert.deepEqual(pm.counters(sender), { egress: expected, ingress: { bytes: 0n, packets: 0n } });
      assert.deepEqual(pm.counters(receiver).ingress, expected);
    } finally {
      // Detach ours (the other tool's attachment, made by this test).
      detachCgroupMulti({ cgroupPath: sender.path, program: otherEgress });
    }
    assert.deepEqual(queryCgroup(sender.path, 'egress'), [ids.podmeter]);
  });
}
