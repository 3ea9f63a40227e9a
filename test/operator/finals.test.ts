/**
 * The agents' finals on the Node (`podmeter.io/finals`) close the gaps the
 * Pod annotations leave, against a real kube-apiserver with simulated
 * agents writing exactly what real agents write: pods that died while no
 * operator ran with traffic after their last checkpoint are counted exactly
 * when an operator comes back (one never checkpointed is not: its final
 * cannot be told from a forged one, operator/ledger/finals.ts); a
 * final that arrives after its pod was retired with less adds the
 * difference once; restarts count nothing twice; a malformed annotation is
 * reported and ignored. Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sample } from '../helpers/samples.ts';
import { workloadUsageName } from '../../common/contract/workloads.ts';
import {
  add,
  apply,
  asStrings,
  counters,
  createPod,
  deletePod,
  ledgerLoaded,
  ledgerLoads,
  operatorCluster,
  staysEqual,
  startOperator,
  totals,
  totalsBecome,
  usage,
  writeCounts,
  writeNodeFinals,
  type Counts,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { waitFor } from '../helpers/poll.ts';

const NODE = 'podmeter-test-finals-node';
const WEB = workloadUsageName({ namespace: 'shop', kind: 'Deployment', name: 'web', key: 'shop/Deployment/web' });

test('node finals: pods that die while no operator runs, late finals, restarts, bad input', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
    {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: 'web-7f',
        namespace: 'shop',
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'Deployment',
            name: 'web',
            uid: '11111111-2222-4333-8444-555555555555',
            controller: true,
          },
        ],
      },
      spec: {
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
        },
      },
    },
  ]);
  const op = await startOperator(oc, { identity: 'podmeter-test-op-finals' });
  await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);
  const rs = { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7f' };

  /** What the node's agent has published, newest first (it republishes all of them on each write). */
  const published: { pod: TestPod; counts: Counts }[] = [];
  const publish = async (pod: TestPod, counts: Counts) => {
    published.unshift({ pod, counts });
    await writeNodeFinals(oc, NODE, published);
  };

  const a = await createPod(oc, { namespace: 'shop', name: 'web-7f-a', node: NODE, owner: rs });
  const b = await createPod(oc, { namespace: 'shop', name: 'bare', node: NODE });
  await writeCounts(oc, a, counters(1));
  await writeCounts(oc, b, counters(2));
  await totalsBecome(oc, 'NamespaceUsage', 'shop', add(counters(1), counters(2)));
  await totalsBecome(oc, 'WorkloadUsage', WEB, counters(1));

  const finalA = add(counters(1), counters(20));
  await t.test(
    "pods that die while no operator runs are counted with their agents' finals (when a NodeUsage had them)",
    async () => {
      await op.kill('SIGKILL');
      // a: more traffic than its last checkpoint, then more still after its last annotation.
      await writeCounts(oc, a, add(counters(1), counters(10)));
      await publish(a, finalA);
      await deletePod(oc, a);
      // c: born, annotated and gone while no operator ran: no checkpoint ever had it.
      const c = await createPod(oc, { namespace: 'shop', name: 'web-7f-c', node: NODE, owner: rs });
      await writeCounts(oc, c, counters(3));
      await publish(c, add(counters(3), counters(4)));
      await deletePod(oc, c);

      await op.restart();
      await totalsBecome(oc, 'NamespaceUsage', 'shop', add(finalA, counters(2)));
      await totalsBecome(oc, 'WorkloadUsage', WEB, finalA);
      await totalsBecome(oc, 'NodeUsage', NODE, add(finalA, counters(2)));
      assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods, 1);
      assert.ok(
        op.logs.some(
          (l) => String(l.msg).startsWith('a final on the Node names no pod the operator saw') && l.uid === c.uid,
        ),
        "c's final is refused",
      );
      assert.ok((sample(await op.metrics(), 'podmeter_operator_errors_total', { op: 'finals' }) ?? 0) >= 1);
    },
  );

  const finalD = add(counters(5), counters(6));
  await t.test('a final that comes after its pod was retired with less adds the difference, once', async () => {
    const d = await createPod(oc, { namespace: 'shop', name: 'bare-d', node: NODE });
    await writeCounts(oc, d, counters(5));
    await totalsBecome(oc, 'NamespaceUsage', 'shop', add(finalA, counters(2), counters(5)));
    await deletePod(oc, d); // the Pod went before the agent's last write: retired with counters(5)
    await waitFor(
      'd retired',
      async () => ((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods === 2 ? true : undefined),
      60_000,
    );
    await publish(d, finalD);
    const expected = add(finalA, counters(2), finalD);
    await totalsBecome(oc, 'NamespaceUsage', 'shop', expected);
    await totalsBecome(oc, 'NodeUsage', NODE, expected);
    assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods, 2, 'a top-up is not another pod');

    // The agent writes its finals again (a later pod's, here a republish); the operator restarts: nothing twice.
    // The restarted leader applies every Node's finals when it loads its ledger; after that, nothing may change.
    await writeNodeFinals(oc, NODE, published);
    const loads = ledgerLoads(op);
    await op.kill('SIGTERM');
    await op.restart();
    await ledgerLoaded(op, loads);
    const all = async () => [
      await totals(oc, 'NamespaceUsage', 'shop'),
      await totals(oc, 'WorkloadUsage', WEB),
      await totals(oc, 'NodeUsage', NODE),
      (await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods,
    ];
    await staysEqual('totals after a restart that read the same finals again', all, [
      asStrings(expected),
      asStrings(finalA),
      asStrings(expected),
      2,
    ]);
  });

  await t.test('a malformed finals annotation is reported and ignored', async () => {
    const before = await totals(oc, 'NamespaceUsage', 'shop');
    const errors = () =>
      op.metrics().then((m) => sample(m, 'podmeter_operator_errors_total', { op: 'annotation' }) ?? 0);
    const errorsBefore = await errors();
    await apply(oc, [
      {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: NODE, annotations: { 'podmeter.io/finals': '[{"uid":"x","ingressBytes":"-1"}' } },
      },
    ]);
    await waitFor('reported', async () => ((await errors()) > errorsBefore ? true : undefined), 60_000);
    await apply(oc, [
      {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: NODE, annotations: { 'podmeter.io/finals': '[{"uid":"x","ingressBytes":"-1"}]' } },
      },
    ]);
    await waitFor('reported again', async () => ((await errors()) > errorsBefore + 1 ? true : undefined), 60_000);
    await staysEqual('totals after malformed finals', () => totals(oc, 'NamespaceUsage', 'shop'), before);
    assert.equal(op.child.exitCode, null, 'still running');
    assert.ok(op.logs.some((l) => String(l.msg).startsWith('Node annotation has entries that do not parse')));
  });
});
