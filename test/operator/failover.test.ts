/**
 * Two operator replicas against a real kube-apiserver: only the Lease
 * holder writes and exports rollups; when it is SIGKILLed the standby takes
 * over within the 15 s lease, and what happened during the handover (a
 * counter change, a pod's final counts and its deletion) is counted exactly
 * once. A SIGTERMed leader hands over at once. The write budget ConfigMap is
 * max / nodes and agents' watchBudget follows it without a restart.
 * Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { sample } from '../helpers/agent.ts';
import { sleep } from '../helpers/cleanup.ts';
import { watchBudget } from '../../agent/kube/budgetWatch.ts';
import { perNodeRate } from '../../operator/budget.ts';
import { add, apply, counters, createPod, deletePod, eventually, OPERATOR_NS, operatorCluster, startOperator, totals, totalsBecome, usage, writeCounts, type Counters, type TestPod } from './harness.ts';

test('two replicas: takeover within the lease, no double counting; the write budget', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    ...[1, 2, 3].map((i) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: `podmeter-test-node-${i}` } })),
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
  ]);
  const a = await startOperator(oc, { identity: 'podmeter-test-op-a' });
  await eventually('a leads', async () => ((await a.leader()) ? true : undefined), 10_000);
  const b = await startOperator(oc, { identity: 'podmeter-test-op-b' });

  const pods: TestPod[] = [];
  const counts = new Map<string, Counters>();
  for (let i = 0; i < 4; i++) {
    const p = await createPod(oc, { namespace: 'shop', name: `api-${i}`, node: `podmeter-test-node-${(i % 2) + 1}` });
    pods.push(p);
    counts.set(p.name, counters(i + 1));
    await writeCounts(oc, p, counts.get(p.name)!);
  }
  const retired: Counters[] = [];
  const expected = () => add(...counts.values(), ...retired);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());

  await t.test('only the leader writes and exports rollups', async () => {
    assert.equal(await b.leader(), false);
    const standby = await b.metrics();
    assert.equal(sample(standby, 'podmeter_namespace_network_bytes_total', { namespace: 'shop', direction: 'ingress' }), undefined, 'a standby exports no rollups (sums over replicas stay right)');
    assert.equal(sample(await a.metrics(), 'podmeter_namespace_network_bytes_total', { namespace: 'shop', direction: 'ingress' }), Number(expected().ingressBytes));
    assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.writer, 'podmeter-test-op-a');
  });

  await t.test('the write budget is max / nodes, and agents follow it', async () => {
    const cm = async () => (await oc.core.readNamespacedConfigMap({ name: 'podmeter-budget', namespace: OPERATOR_NS }).catch(() => undefined))?.data;
    await eventually('budget for 3 nodes', async () => ((await cm())?.writesPerSecondPerNode === String(perNodeRate(50, 3)) ? true : undefined), 10_000);
    assert.ok(perNodeRate(50, 3) * 3 <= 50);
    const rates: number[] = [];
    const watch = watchBudget(oc.kc, OPERATOR_NS, (rate) => rates.push(rate), pino({ level: 'silent' }));
    t.after(() => watch.stop());
    await eventually('agent sees 50/3', async () => (rates.at(-1) === perNodeRate(50, 3) ? true : undefined), 10_000);
    await apply(oc, [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'podmeter-test-node-4' } }]);
    await eventually('agent sees 50/4 without a restart', async () => (rates.at(-1) === 12.5 ? true : undefined), 10_000);
    assert.equal((await cm())?.nodes, '4');
  });

  await t.test('SIGKILL the leader: the standby takes over within 15 s; the handover loses and doubles nothing', async () => {
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

    await eventually('b leads', async () => ((await b.leader()) ? true : undefined), 20_000);
    const takeoverMs = Date.now() - killedAt;
    t.diagnostic(`standby took over ${takeoverMs} ms after the leader was killed`);
    assert.ok(takeoverMs <= 16_000, `takeover after ${takeoverMs} ms (lease 15 s)`);
    await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
    const shop = await usage(oc, 'NamespaceUsage', 'shop');
    assert.equal(shop?.status?.retiredPods, 1);
    assert.equal(shop?.status?.writer, 'podmeter-test-op-b');
    await totalsBecome(oc, 'NodeUsage', 'podmeter-test-node-2', add(counts.get('api-3')!, final));
    assert.ok(b.logs.some((l) => String(l.msg).startsWith('leading: took over from podmeter-test-op-a')));
  });

  await t.test('the old leader comes back as standby; a SIGTERMed leader hands over at once', async () => {
    await a.restart();
    await sleep(2000);
    assert.equal(await a.leader(), false, 'b holds the lease');
    const before = JSON.stringify(await totals(oc, 'NamespaceUsage', 'shop'));
    const stoppedAt = Date.now();
    await b.kill('SIGTERM');
    await eventually('a leads again', async () => ((await a.leader()) ? true : undefined), 10_000);
    const handoverMs = Date.now() - stoppedAt;
    t.diagnostic(`graceful handover in ${handoverMs} ms`);
    assert.ok(handoverMs < 5000, `graceful handover took ${handoverMs} ms`);
    const more = add(counts.get('api-2')!, counters(5));
    counts.set('api-2', more);
    await writeCounts(oc, pods[2]!, more);
    await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
    assert.notEqual(JSON.stringify(await totals(oc, 'NamespaceUsage', 'shop')), before);
    assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods, 1, 'still counted once');
  });
});
