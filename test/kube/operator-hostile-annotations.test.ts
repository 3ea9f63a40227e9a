/**
 * The operator against annotations a tenant (or a forged agent) writes,
 * on a real kube-apiserver with no admission policy: kubectl stands for
 * the tenant who may edit its pods and for whoever may write a Node's
 * annotations; simulated agents write what real agents write.
 *
 * - Values that are not unsigned 64-bit decimals (31 digits, 21 digits,
 *   "12abc", "-5", "1e9") on one pod are ignored and reported: every
 *   other pod of the node rolls up exactly, and the node's checkpoints and
 *   retirements keep being written.
 * - Finals on a Node for uids never seen on that node, in another
 *   namespace, or past the cap are ignored and counted; a legitimate final
 *   still counts once.
 * - Owner names at and past the CRD's 253 characters roll up into
 *   distinct, valid WorkloadUsage objects.
 *
 * Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { sample } from '../helpers/samples.ts';
import {
  add,
  apply,
  counters,
  createPod,
  deletePod,
  must,
  operatorCluster,
  staysEqual,
  startOperator,
  totals,
  totalsBecome,
  usage,
  writeCounts,
  writeNodeFinals,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { waitFor } from '../helpers/poll.ts';
import { ANNOTATIONS } from '../../common/contract/annotations.ts';
import { fromStrings, toStrings } from '../../common/contract/counts.ts';
import { MAX_FINALS } from '../../common/contract/finals.ts';
import { NAMESPACE_LABEL, usagePath, type UsageObject } from '../../common/contract/usage.ts';
import { workloadUsageName } from '../../common/contract/workloads.ts';

const NODE = 'podmeter-test-hostile-node';
const OTHER = 'podmeter-test-hostile-other';
const NS = 'tenant';

test('operator: hostile pod annotations, forged node finals, long owner names', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
    { apiVersion: 'v1', kind: 'Node', metadata: { name: OTHER } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'victim' } },
  ]);
  const op = await startOperator(oc, { identity: 'podmeter-test-op-hostile' });
  await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);
  const errors = async (kind: string) =>
    sample(await op.metrics(), 'podmeter_operator_errors_total', { op: kind }) ?? 0;
  /** What the tenant writes on its own pod with kubectl (no agent would). */
  const tenantWrites = (pod: TestPod, values: Record<string, string>) =>
    must(
      oc.cluster.kubectl([
        'annotate',
        '--overwrite',
        '-n',
        pod.namespace,
        'pod',
        pod.name,
        ...Object.entries(values).map(([k, v]) => `${k}=${v}`),
      ]),
    );

  const good1 = await createPod(oc, { namespace: NS, name: 'good-1', node: NODE });
  const good2 = await createPod(oc, { namespace: NS, name: 'good-2', node: NODE });
  const bad = await createPod(oc, { namespace: NS, name: 'bad', node: NODE });
  await writeCounts(oc, good1, counters(1));
  await writeCounts(oc, good2, counters(2));
  await writeCounts(oc, bad, counters(3));
  await totalsBecome(oc, 'NodeUsage', NODE, add(counters(1), counters(2), counters(3)));

  await t.test('values that are not unsigned 64-bit decimals are ignored and reported; the node goes on', async () => {
    const annotationErrors = await errors('annotation');
    await tenantWrites(bad, {
      [ANNOTATIONS.ingressBytes]: '1'.repeat(31),
      [ANNOTATIONS.egressBytes]: '12abc',
      [ANNOTATIONS.ingressPackets]: '-5',
      [ANNOTATIONS.egressPackets]: '1e9',
      [ANNOTATIONS.egressExternalBytes]: '1'.repeat(21),
    });
    // A pod whose only counts ever seen are bad: nothing of it is counted.
    const fresh = await createPod(oc, { namespace: NS, name: 'bad-from-birth', node: NODE });
    await tenantWrites(fresh, { [ANNOTATIONS.ingressBytes]: '18446744073709551616', [ANNOTATIONS.egressBytes]: '+5' });
    const reported = (pod: string, problem: string) =>
      op.logs.filter((l) => l.pod === pod && l.problem === problem).length;
    // Each pod's values are read in its own watch event: wait for both pods' reports.
    await waitFor(
      'the bad values reported',
      () => (reported('bad', 'not-decimal') > 0 && reported('bad-from-birth', 'above-u64') > 0 ? true : undefined),
      60_000,
    );
    assert.ok((await errors('annotation')) >= annotationErrors + 2, 'and counted');
    assert.equal(reported('bad', 'above-u64'), 1, 'logged once per pod and reason');
    assert.equal(reported('bad', 'not-decimal'), 1);
    assert.equal(reported('bad-from-birth', 'above-u64'), 1);

    // Checkpoints go on: the good pods' new counts are written; bad keeps what it had.
    await writeCounts(oc, good1, counters(11));
    const expected = add(counters(11), counters(2), counters(3));
    await totalsBecome(oc, 'NodeUsage', NODE, expected);
    await totalsBecome(oc, 'NamespaceUsage', NS, expected);
    // Retirements go on.
    await deletePod(oc, good2);
    await waitFor(
      'good-2 retired',
      async () => ((await usage(oc, 'NodeUsage', NODE))?.status?.retiredPods === 1 ? true : undefined),
      60_000,
    );
    const good3 = await createPod(oc, { namespace: NS, name: 'good-3', node: NODE });
    await writeCounts(oc, good3, counters(4));
    const after = add(expected, counters(4));
    await totalsBecome(oc, 'NodeUsage', NODE, after);
    await totalsBecome(oc, 'NamespaceUsage', NS, after);
    const status = (await usage(oc, 'NodeUsage', NODE))!.status!;
    assert.deepEqual(status.checkpoint!.map((c) => c.uid).sort(), [good1.uid, good3.uid, bad.uid].sort());
    assert.deepEqual(
      status.retiring!.map((r) => r.uid),
      [good2.uid],
    );
    assert.equal(
      sample(await op.metrics(), 'podmeter_operator_quarantined_pods', {}),
      0,
      'nothing past a CRD limit reached a write',
    );
    assert.ok(!op.logs.some((l) => l.msg === 'status write rejected; retrying'), 'no status write was refused');
  });

  await t.test('forged finals are ignored and counted; a legitimate final counts once', async () => {
    const before = fromStrings(await totals(oc, 'NamespaceUsage', NS))!;
    const legit = await createPod(oc, { namespace: NS, name: 'legit', node: NODE });
    await writeCounts(oc, legit, counters(5));
    await totalsBecome(oc, 'NodeUsage', NODE, add(before, counters(5)));
    await deletePod(oc, legit);
    await waitFor(
      'legit retired',
      async () => ((await usage(oc, 'NodeUsage', NODE))?.status?.retiredPods === 2 ? true : undefined),
      60_000,
    );
    const elsewhere = await createPod(oc, { namespace: NS, name: 'elsewhere', node: OTHER });
    const finalsErrors = await errors('finals');
    const legitFinal = add(counters(5), counters(6));
    const huge = counters(9, 10n ** 9n);
    const at = new Date().toISOString();
    const entry = (uid: string, namespace: string, c = huge) => ({
      uid,
      namespace,
      name: 'x',
      terminated: at,
      ...toStrings(c),
    });
    // Newest first, as an agent writes them: the legitimate one, then forgeries, past the cap.
    const value = [
      entry(legit.uid, NS, legitFinal),
      entry(randomUUID(), NS), // never a pod
      entry(randomUUID(), 'victim'), // never a pod, another namespace
      entry(elsewhere.uid, NS), // a pod of another node
      entry(good1.uid, 'victim'), // a pod of this node, another namespace
      ...Array.from({ length: MAX_FINALS + 5 }, () => entry(randomUUID(), NS)),
    ];
    await must(
      oc.cluster.kubectl(['annotate', '--overwrite', 'node', NODE, `${ANNOTATIONS.finals}=${JSON.stringify(value)}`]),
    );
    const expected = add(before, legitFinal);
    await totalsBecome(oc, 'NamespaceUsage', NS, expected);
    await totalsBecome(oc, 'NodeUsage', NODE, expected);
    // Ignored and counted: the cap once, each forged entry within it once.
    await waitFor(
      'forged finals counted',
      async () => ((await errors('finals')) >= finalsErrors + 1 + (MAX_FINALS - 1) ? true : undefined),
      60_000,
    );
    assert.ok(op.logs.some((l) => l.reason === 'unknown pod' && l.node === NODE));
    assert.ok(op.logs.some((l) => l.reason === 'namespace mismatch' && l.uid === good1.uid));
    assert.ok(op.logs.some((l) => String(l.msg).startsWith('Node annotation has more finals than an agent writes')));
    assert.equal(await usage(oc, 'NamespaceUsage', 'victim'), undefined, 'no namespace billed by a forged final');
    // The same legitimate final again (a republish): counted once.
    await writeNodeFinals(oc, NODE, [{ pod: legit, counts: legitFinal }]);
    await staysEqual(
      'totals after the final was published again',
      () => totals(oc, 'NamespaceUsage', NS),
      await totals(oc, 'NamespaceUsage', NS),
    );
    assert.deepEqual(await totals(oc, 'NamespaceUsage', NS), await totals(oc, 'NodeUsage', NODE));
    assert.equal((await usage(oc, 'NamespaceUsage', NS))?.status?.retiredPods, 2);
  });

  await t.test('owner kinds that differ only in case: one WorkloadUsage each, with its own pod exactly', async () => {
    const kinds = [
      { apiVersion: 'apps/v1', kind: 'Deployment' },
      { apiVersion: 'example.com/v1', kind: 'DEPLOYMENT' },
      { apiVersion: 'example.com/v1', kind: 'deployment' },
    ];
    for (const [i, k] of kinds.entries()) {
      const p = await createPod(oc, { namespace: NS, name: `cased-${i}`, node: NODE, owner: { ...k, name: 'cased' } });
      await writeCounts(oc, p, counters(30 + i));
    }
    for (const [i, k] of kinds.entries())
      await totalsBecome(
        oc,
        'WorkloadUsage',
        workloadUsageName({ namespace: NS, kind: k.kind, name: 'cased', key: '' }),
        counters(30 + i),
      );
    assert.equal(
      workloadUsageName({ namespace: NS, kind: 'Deployment', name: 'cased', key: '' }),
      `${NS}.deployment.cased`,
    );
  });

  await t.test('owner names at and past the CRD limit: distinct, valid WorkloadUsage objects', async () => {
    const owner = (name: string) => ({ apiVersion: 'apps/v1', kind: 'StatefulSet', name });
    const names = ['m'.repeat(253), `${'l'.repeat(299)}a`, `${'l'.repeat(299)}b`];
    const pods: TestPod[] = [];
    for (const [i, name] of names.entries()) {
      const p = await createPod(oc, { namespace: NS, name: `long-${i}`, node: NODE, owner: owner(name) });
      await writeCounts(oc, p, counters(20 + i));
      pods.push(p);
    }
    const list = async () =>
      (
        await oc.api.request<{ items: UsageObject[] }>(
          'GET',
          `${usagePath('WorkloadUsage')}?labelSelector=${encodeURIComponent(`${NAMESPACE_LABEL}=${NS}`)}`,
        )
      ).items;
    const mine = async () => (await list()).filter((o) => o.spec?.kind === 'StatefulSet');
    await waitFor('three WorkloadUsage objects', async () => ((await mine()).length === 3 ? true : undefined), 60_000);
    const objects = await mine();
    assert.equal(new Set(objects.map((o) => o.metadata.name)).size, 3);
    for (const o of objects) {
      assert.ok(
        o.metadata.name.length <= 253 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.metadata.name),
        o.metadata.name,
      );
      assert.ok(o.spec!.name!.length <= 253, `spec.name of ${o.spec!.name!.length}`);
    }
    const atMax = objects.find((o) => o.spec!.name === names[0]);
    assert.ok(atMax, 'a name of exactly 253 characters is kept whole');
    assert.equal(
      atMax.metadata.name,
      workloadUsageName({ namespace: NS, kind: 'StatefulSet', name: names[0]!, key: '' }),
    );
    for (const [i] of names.entries()) {
      // Each object exists before its status has the pod's counts: wait for them.
      const o = await waitFor(
        `the workload of long-${i} has exactly its pod's counts`,
        async () => (await mine()).find((x) => x.status?.ingressBytes === String(counters(20 + i).ingressBytes)),
        60_000,
      );
      await totalsBecome(oc, 'WorkloadUsage', o.metadata.name, counters(20 + i));
    }
    // Their checkpoint entries were written too (the NodeUsage accepted them).
    const checkpoint = (await usage(oc, 'NodeUsage', NODE))!.status!.checkpoint!;
    for (const p of pods) assert.ok(checkpoint.some((c) => c.uid === p.uid && c.workload.length <= 253));
    assert.ok(!op.logs.some((l) => l.msg === 'status write rejected; retrying'), 'no status write was refused');
  });
});
