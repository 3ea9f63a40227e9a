/**
 * The operator's leader losing the apiserver for 60 s while the standby
 * keeps it: each replica reaches the real kube-apiserver through its own
 * fault proxy (test/helpers/faultProxy.ts), and the leader's is blocked
 * (open connections stall, new ones are closed). The leader steps down when
 * it cannot renew, the standby takes over, counts written meanwhile reach
 * the rollups exactly once, the cut-off replica's /metrics and /healthz keep
 * answering and it logs the failing lease rounds once, and when the
 * apiserver is back it stays a standby. Needs the test control plane; no root.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { sleep, TEST_PREFIX } from '../helpers/cleanup.ts';
import { proxiedKubeconfig, startFaultProxy } from '../helpers/faultProxy.ts';
import {
  add,
  apply,
  counters,
  createPod,
  operatorCluster,
  startOperator,
  totalsBecome,
  usage,
  writeCounts,
  type Counts,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { waitFor } from '../helpers/poll.ts';

test('the leader loses the apiserver for 60 s while the standby has it: the standby takes over, nothing lost or doubled, logged once', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    { apiVersion: 'v1', kind: 'Node', metadata: { name: 'podmeter-test-node-1' } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
  ]);
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pa = await startFaultProxy(t, oc.cluster.server);
  const pb = await startFaultProxy(t, oc.cluster.server);
  const kubeconfig = (name: string, proxy: typeof pa) => {
    const sub = join(dir, name);
    mkdirSync(sub);
    return proxiedKubeconfig(oc.cluster, proxy, sub);
  };
  const a = await startOperator(oc, { identity: 'podmeter-test-op-a', kubeconfig: kubeconfig('a', pa) });
  await waitFor('a leads', async () => ((await a.leader()) ? true : undefined), 60_000);
  const b = await startOperator(oc, { identity: 'podmeter-test-op-b', kubeconfig: kubeconfig('b', pb) });

  const pods: TestPod[] = [];
  const counts = new Map<string, Counts>();
  for (let i = 0; i < 3; i++) {
    const p = await createPod(oc, { namespace: 'shop', name: `api-${i}`, node: 'podmeter-test-node-1' });
    pods.push(p);
    counts.set(p.name, counters(i + 1));
    await writeCounts(oc, p, counts.get(p.name)!);
  }
  const expected = () => add(...counts.values());
  await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());

  const cutAt = Date.now();
  pa.block(true);
  const grown = add(counts.get('api-0')!, counters(40));
  counts.set('api-0', grown);
  await writeCounts(oc, pods[0]!, grown);
  await waitFor('b leads', async () => ((await b.leader()) ? true : undefined), 120_000);
  await waitFor('a no longer leads', async () => ((await a.leader()) ? undefined : true), 60_000);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
  assert.equal((await usage(oc, 'NamespaceUsage', 'shop'))?.status?.writer, 'podmeter-test-op-b');
  assert.equal((await fetch(`${a.url}/healthz`)).status, 200, "the cut-off replica's /healthz answers");
  await a.metrics();
  await sleep(Math.max(0, 60_000 - (Date.now() - cutAt)));
  const failedRounds = a.logs.filter((l) => l.msg === 'lease round failed' && l.level === 40).length;
  assert.equal(failedRounds, 1, 'the failing lease rounds are logged once, not every second');

  pa.block(false);
  await waitFor(
    'a works again',
    () => (a.logs.some((l) => l.msg === 'lease rounds work again') ? true : undefined),
    60_000,
  );
  const more = add(counts.get('api-2')!, counters(7));
  counts.set('api-2', more);
  await writeCounts(oc, pods[2]!, more);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', expected());
  assert.equal(await a.leader(), false, 'the old leader stays a standby');
  assert.equal(await b.leader(), true);
});
