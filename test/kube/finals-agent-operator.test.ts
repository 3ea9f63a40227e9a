/**
 * The real agent and the real operator: a pod that sends more traffic and
 * dies while no operator runs is counted exactly when the operator comes
 * back, from the final counts the agent publishes on its Node
 * (`podmeter.io/finals`), its egress to the billed class (external) too, and
 * restarts of the agent and the operator do not count it twice. Needs root, cgroup v2, bpffs, and the test
 * control plane (test/cluster).
 */
import assert from 'node:assert/strict';
import { rmdirSync } from 'node:fs';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import {
  apply,
  asStrings,
  totalsOnly,
  ledgerLoaded,
  ledgerLoads,
  must,
  operatorCluster,
  staysEqual,
  startOperator,
  totals,
  totalsBecome,
  usage,
} from '../helpers/operatorCluster.ts';
import { annotations, makePod } from '../helpers/kubeCluster.ts';
import type { NodeFinal } from '../../common/contract/finals.ts';

const NODE = 'podmeter-test-finals-agent-node';

test("a pod that dies while no operator runs: counted exactly from the agent's Node finals", async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
  ]);
  const root = makeTestCgroup(t);
  const web = await makePod(oc.cluster, root, { name: 'web', namespace: 'shop', node: NODE });
  const db = await makePod(oc.cluster, root, { name: 'db', namespace: 'shop', node: NODE });
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--kubeconfig',
      oc.cluster.kubeconfig,
      '--node-name',
      NODE,
      '--annotate-interval',
      '1',
      '--annotate-budget',
      '20',
      '--interval',
      '1',
    ],
  });
  const op = await startOperator(oc);
  await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const one = udpDatagramBytes(4, 200);
  // db sends to an address outside the cluster (the 'external' class); web receives.
  const exchange = (count: number) =>
    udpExchange({
      senderCgroup: db.container.path,
      receiverCgroup: web.container.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count,
      payload: 200,
    });
  const total = (n: number) => ({
    ...totalsOnly({
      ingressBytes: BigInt(n * one),
      egressBytes: BigInt(n * one),
      ingressPackets: BigInt(n),
      egressPackets: BigInt(n),
    }),
    egressExternalBytes: BigInt(n * one),
  });

  await exchange(100);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', total(100)); // db is checkpointed with 100 datagrams out
  const dbNotes = await annotations(oc.cluster, 'pod', 'db', 'shop');
  assert.equal(dbNotes['podmeter.io/egress-external-bytes'], String(100 * one), 'the billed class on the Pod');
  assert.equal(dbNotes['podmeter.io/egress-cross-zone-bytes'], undefined, 'a class with no bytes is not written');

  await op.kill('SIGKILL');
  await exchange(40); // after db's last checkpoint
  // db is empty now. The agent reads a pod when it empties; the kernel frees
  // its counters soon after its cgroup is removed, so a removal before that
  // read loses what came after the last one (README: Exact; lifecycle.test.ts
  // shows the read on emptying). As a kubelet, which removes a pod's cgroup
  // after its sandbox is gone, the test removes db once the agent has read it.
  await waitFor('db read after its last datagram', async () =>
    (await agent.cgroups()).find((c) => c.uid === db.uid)?.egress.packets === '140' ? true : undefined,
  );
  rmdirSync(db.container.path); // the kubelet stops db
  rmdirSync(db.podCgroup);
  /** db's entry in the Node's `podmeter.io/finals`, as the agent last wrote it. */
  const dbFinal = async () => {
    const text = (await annotations(oc.cluster, 'node', NODE))['podmeter.io/finals'];
    return (JSON.parse(text ?? '[]') as NodeFinal[]).find((f) => f.uid === db.uid);
  };
  const final = await waitFor('db in the Node finals', dbFinal, 60_000);
  assert.equal(final.egressBytes, String(140 * one));
  assert.equal(final.egressPackets, '140');
  assert.equal(final.egressExternalBytes, String(140 * one), 'the final carries the billed class');
  assert.equal(final.namespace, 'shop');
  assert.equal(final.name, 'db');
  await must(oc.cluster.kubectl(['delete', 'pod', 'db', '-n', 'shop', '--grace-period=0', '--force']));

  await op.restart();
  await totalsBecome(oc, 'NamespaceUsage', 'shop', total(140));
  await totalsBecome(oc, 'NodeUsage', NODE, total(140));

  // An agent restart republishes the final (without the Pod's name: it went before the restart),
  // and an operator restart reads it again: nothing counted twice.
  await agent.kill('SIGKILL');
  await agent.restart();
  await waitFor(
    "the restarted agent republishes db's final",
    async () => {
      const again = await dbFinal();
      return again !== undefined && again.namespace === undefined ? again : undefined;
    },
    60_000,
  );
  // The restarted leader applies the republished final when it loads its ledger; after that, nothing may change.
  const loads = ledgerLoads(op);
  await op.kill('SIGTERM');
  await op.restart();
  await ledgerLoaded(op, loads);
  const all = async () => [
    await totals(oc, 'NamespaceUsage', 'shop'),
    await totals(oc, 'NodeUsage', NODE),
    (await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods,
  ];
  await staysEqual('totals after the agent and the operator restarted', all, [
    asStrings(total(140)),
    asStrings(total(140)),
    1,
  ]);
});
