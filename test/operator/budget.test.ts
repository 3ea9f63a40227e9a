/**
 * The cluster-wide annotation write budget, end to end: 20 simulated nodes
 * with 100 pods each and traffic that never stops changing. Each simulated
 * agent spends the agent's own WriteBudget and follows the operator's
 * ConfigMap with the agent's watchBudget (a higher --annotate-budget as its
 * start value); the API server's own apiserver_request_total shows the
 * pod PATCHes staying within --max-annotation-writes-per-second, and the
 * operator's namespace total ends equal to the sum of what was written.
 * Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { WriteBudget } from '../../common/writeBudget.ts';
import { watchBudget } from '../../agent/kube/budgetWatch.ts';
import { perNodeRate } from '../../operator/budget.ts';
import { sleep } from '../helpers/cleanup.ts';
import {
  add,
  apply,
  counters,
  createPod,
  must,
  OPERATOR_NS,
  operatorCluster,
  startOperator,
  totalsBecome,
  writeCounts,
  type Counts,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { sumOf } from '../helpers/samples.ts';

const NODES = 20;
const PODS_PER_NODE = 100;
const MAX = 10; // writes per second, cluster-wide: 0.5 per node
const WINDOW_MS = 10_000;

/** Sum of apiserver_request_total samples for pod PATCHes. */
function podPatches(metrics: string): number {
  return sumOf(metrics, 'apiserver_request_total', { verb: 'PATCH', resource: 'pods', subresource: '' });
}

test('20 nodes x 100 pods of changing traffic stay within the cluster write budget', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    ...Array.from({ length: NODES }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: `podmeter-test-node-${i}` },
    })),
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'load' } },
  ]);
  const pods: TestPod[][] = Array.from({ length: NODES }, () => []);
  const specs = Array.from({ length: NODES * PODS_PER_NODE }, (_, i) => ({
    namespace: 'load',
    name: `p-${i}`,
    node: `podmeter-test-node-${i % NODES}`,
  }));
  for (let i = 0; i < specs.length; i += 50) {
    const batch = await Promise.all(specs.slice(i, i + 50).map((s) => createPod(oc, s)));
    for (const p of batch) pods[Number(p.node.split('-').at(-1))]!.push(p);
  }
  await startOperator(oc, { args: ['--max-annotation-writes-per-second', String(MAX)] });

  // The simulated agents: what annotator.ts does per tick, minus the kernel.
  const written = new Map<string, Counts>();
  const silent = pino({ level: 'silent' });
  let running = true;
  const rates: (number | undefined)[] = Array.from({ length: NODES }, () => undefined);
  // Times each node's agent wanted to write and its budget said no, while measuring.
  const refused: number[] = Array.from({ length: NODES }, () => 0);
  let measuring = false;
  /** When each node took the token of its write on its way (undefined: none on its way). */
  const inFlightSince: (number | undefined)[] = Array.from({ length: NODES }, () => undefined);
  const agents = pods.map(async (nodePods, n) => {
    const budget = new WriteBudget(5); // the agent's --annotate-budget, until the operator's ConfigMap arrives
    const watch = watchBudget(
      oc.api,
      OPERATOR_NS,
      (rate) => {
        budget.setRate(rate);
        rates[n] = rate;
      },
      silent,
    );
    let tick = 0;
    let next = 0;
    try {
      while (running) {
        tick++;
        // Every pod's traffic changed since its last write: round robin, the longest unwritten first.
        while (running) {
          if (!budget.take()) {
            if (measuring) refused[n]!++;
            break;
          }
          inFlightSince[n] = Date.now();
          const p = nodePods[next++ % nodePods.length]!;
          const c = add(written.get(p.uid) ?? counters(0), counters(tick));
          await writeCounts(oc, p, c);
          inFlightSince[n] = undefined;
          written.set(p.uid, c);
        }
        await sleep(50);
      }
    } finally {
      await watch.stop();
    }
  });

  const perNode = perNodeRate(MAX, NODES);
  const deadline = Date.now() + 120_000;
  while (rates.some((r) => r !== perNode)) {
    if (Date.now() > deadline) throw new Error(`agents did not all get the budget ${perNode}: ${rates.join(',')}`);
    await sleep(100);
  }
  // The window runs from before the first read of the API server's counter to
  // after the second, so it is never shorter than what the counters span: a
  // slow kubectl on a busy machine only loosens the bound. A write on its way
  // at the first read is counted by the second, so the window starts when its
  // token was taken (a PATCH takes seconds on a loaded API server).
  const readAt = Date.now();
  const startedAt = Math.min(readAt, ...inFlightSince.filter((at) => at !== undefined));
  measuring = true;
  const before = podPatches(await must(oc.cluster.kubectl(['get', '--raw', '/metrics'])));
  await sleep(WINDOW_MS);
  const after = podPatches(await must(oc.cluster.kubectl(['get', '--raw', '/metrics'])));
  measuring = false;
  const seconds = (Date.now() - startedAt) / 1000;
  running = false;
  await Promise.all(agents);

  const writes = after - before;
  t.diagnostic(
    `${writes} pod annotation writes in ${seconds.toFixed(1)} s = ${(writes / seconds).toFixed(1)}/s (budget ${MAX}/s over ${NODES} nodes; not asserted); the window began ${readAt - startedAt} ms before the first read (the oldest write on its way)`,
  );
  // Each node's bucket holds at most one token when its rate drops to the
  // published one (burst = max(1, rate)), and a node has at most one write in
  // flight, its bucket empty when it took that write's token (where the window
  // starts): at most one write per node beyond the rate.
  assert.ok(
    writes <= MAX * seconds + NODES,
    `${writes} writes > budget ${MAX}/s x ${seconds.toFixed(1)} s + ${NODES} burst`,
  );
  // The budget is what held them back: every node wanted to write more than it was allowed.
  assert.ok(writes > 0, 'pod annotations were written');
  assert.deepEqual(
    refused.map((r, n) => (r > 0 ? 'refused' : `node ${n} never refused`)),
    refused.map(() => 'refused'),
  );

  // And the operator kept up: the namespace total is the sum of what was written.
  const t1 = Date.now();
  await totalsBecome(oc, 'NamespaceUsage', 'load', add(...written.values()), 120_000);
  t.diagnostic(`operator caught up ${Date.now() - t1} ms after the agents stopped`);
});
