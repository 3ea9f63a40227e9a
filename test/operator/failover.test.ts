/**
 * Two operator replicas against a real kube-apiserver: only the Lease
 * holder writes and exports rollups; when it is SIGKILLed the standby takes
 * over once the 15 s lease has run out (not before), and what happened
 * during the handover (a counter change, a pod's final counts and its
 * deletion) is counted exactly once. A SIGTERMed leader releases the lease
 * and the standby takes it free (how fast: bench/failover.bench.ts). The
 * write budget ConfigMap is max / nodes and agents' watchBudget follows it
 * without a restart.
 * Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { sample } from '../helpers/samples.ts';
import { watchBudget } from '../../agent/kube/budgetWatch.ts';
import { perNodeRate } from '../../operator/budget.ts';
import {
  add,
  apply,
  counters,
  createPod,
  deletePod,
  OPERATOR_NS,
  operatorCluster,
  startOperator,
  totals,
  totalsBecome,
  usage,
  writeCounts,
  type Counts,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { waitFor } from '../helpers/poll.ts';

test('two replicas: takeover once the lease runs out, no double counting; the write budget', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    ...[1, 2, 3].map((i) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: `podmeter-test-node-${i}` } })),
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
  ]);
  const a = await startOperator(oc, { identity: 'podmeter-test-op-a' });
  await waitFor('a leads', async () => ((await a.leader()) ? true : undefined), 60_000);
  const b = await startOperator(oc, { identity: 'podmeter-test-op-b' });
  const lease = () =>
    oc.api.find<{ spec?: { holderIdentity?: string; renewTime?: string; acquireTime?: string } }>(
      `/apis/coordination.k8s.io/v1/namespaces/${OPERATOR_NS}/leases/podmeter-operator`,
    );

  const pods: TestPod[] = [];
  const counts = new Map<string, Counts>();
  for (let i = 0; i < 4; i++) {
    const p = await createPod(oc, { namespace: 'shop', name: `api-${i}`, node: `podmeter-test-node-${(i % 2) + 1}` });
    pods.push(p);
    counts.set(p.name, counters(i + 1));
    await writeCounts(oc, p, counts.get(p.name)!);
  }
  const retired: Counts[] = [];
  const expected = () => add(...counts.values(), ...retired);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());

  await t.test('only the leader writes and exports rollups', async () => {
    assert.equal(await b.leader(), false);
    const standby = await b.metrics();
    assert.equal(
      sample(standby, 'podmeter_namespace_network_bytes_total', { namespace: 'shop', direction: 'ingress' }),
      undefined,
      'a standby exports no rollups (sums over replicas stay right)',
    );
    assert.equal(
      sample(await a.metrics(), 'podmeter_namespace_network_bytes_total', { namespace: 'shop', direction: 'ingress' }),
      Number(expected().ingressBytes),
    );
    assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.writer, 'podmeter-test-op-a');
  });

  await t.test('the write budget is max / nodes, and agents follow it', async () => {
    const cm = async () =>
      (
        await oc.core
          .readNamespacedConfigMap({ name: 'podmeter-budget', namespace: OPERATOR_NS })
          .catch(() => undefined)
      )?.data;
    await waitFor(
      'budget for 3 nodes',
      async () => ((await cm())?.writesPerSecondPerNode === String(perNodeRate(50, 3)) ? true : undefined),
      60_000,
    );
    assert.ok(perNodeRate(50, 3) * 3 <= 50);
    const rates: number[] = [];
    const watch = watchBudget(oc.api, OPERATOR_NS, (rate) => rates.push(rate), pino({ level: 'silent' }));
    t.after(() => watch.stop());
    await waitFor('agent sees 50/3', () => (rates.at(-1) === perNodeRate(50, 3) ? true : undefined), 60_000);
    await apply(oc, [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'podmeter-test-node-4' } }]);
    await waitFor('agent sees 50/4 without a restart', () => (rates.at(-1) === 12.5 ? true : undefined), 60_000);
    assert.equal((await cm())?.nodes, '4');
  });

  await t.test(
    'SIGKILL the leader: the standby takes over once the lease has run out; the handover loses and doubles nothing',
    async () => {
      // a's last renewal is at or after this one: no takeover may come within the lease of it.
      const renewedBefore = Date.parse((await lease())!.spec!.renewTime!);
      const killedAt = Date.now();
      await a.kill('SIGKILL');
      // During the handover: a counter grows, a pod writes its final counts and is deleted.
      const grown = add(counts.get('api-0')!, counters(40));
      counts.set('api-0', grown);
      await writeCounts(oc, pods[0]!, grown);
      const final = add(counts.get('api-1')!, counters(30));
      await writeCounts(oc, pods[1]!, final);
      await deletePod(oc, pods[1]!);
      counts.delete('api-1');
      retired.push(final);

      await waitFor('b leads', async () => ((await b.leader()) ? true : undefined), 120_000);
      t.diagnostic(
        `standby took over ${Date.now() - killedAt} ms after the leader was killed (not asserted: bench/failover.bench.ts)`,
      );
      const taken = (await lease())!.spec!;
      assert.equal(taken.holderIdentity, 'podmeter-test-op-b');
      assert.ok(
        Date.parse(taken.acquireTime!) >= renewedBefore + 15_000,
        `taken at ${taken.acquireTime}, within the lease of a's renewal at ${new Date(renewedBefore).toISOString()}`,
      );
      await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
      const shop = await usage(oc, 'NamespaceUsage', 'shop');
      assert.equal(shop?.status?.retiredPods, 1);
      assert.equal(shop?.status?.writer, 'podmeter-test-op-b');
      await totalsBecome(oc, 'NodeUsage', 'podmeter-test-node-2', add(counts.get('api-3')!, final));
      assert.ok(b.logs.some((l) => l.msg === 'leading: took over from podmeter-test-op-a'));
    },
  );

  await t.test(
    'the old leader comes back as standby; a SIGTERMed leader releases the lease and the standby takes it',
    async () => {
      await a.restart();
      assert.equal((await lease())?.spec?.holderIdentity, 'podmeter-test-op-b', 'b holds the lease');
      assert.equal(await a.leader(), false);
      const before = JSON.stringify(await totals(oc, 'NamespaceUsage', 'shop'));
      const stoppedAt = Date.now();
      const exit = await b.kill('SIGTERM');
      assert.equal(
        exit,
        0,
        `b stopped cleanly (a stop stuck past its grace exits 1): ${JSON.stringify(b.logs.slice(-3))}`,
      );
      await waitFor(
        'b released the lease on its way out',
        () => (b.logs.some((l) => l.msg === 'lease released') ? true : undefined),
        60_000,
      );
      await waitFor('a leads again', async () => ((await a.leader()) ? true : undefined), 120_000);
      t.diagnostic(`graceful handover in ${Date.now() - stoppedAt} ms (not asserted: bench/failover.bench.ts)`);
      // Taken because it was free, not because it ran out.
      assert.ok(
        a.logs.some((l) => l.msg === 'leading: took the free lease'),
        'a took the released lease',
      );
      assert.ok(
        !a.logs.some((l) => String(l.msg).startsWith('leading: took over from')),
        'not after the lease expired',
      );
      const more = add(counts.get('api-2')!, counters(5));
      counts.set('api-2', more);
      await writeCounts(oc, pods[2]!, more);
      await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
      assert.notEqual(JSON.stringify(await totals(oc, 'NamespaceUsage', 'shop')), before);
      assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods, 1, 'still counted once');
    },
  );
});
