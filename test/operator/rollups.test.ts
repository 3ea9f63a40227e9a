/**
 * The operator against a real kube-apiserver, with simulated agents writing
 * exactly what real agents write: namespace, workload (every owner shape)
 * and node totals equal the sums of the per-pod counts, stay after pods are
 * deleted, survive operator restarts (also with pods deleted and counts
 * changed while no operator ran) without counting anything twice, and match
 * `podmeter top -o json`. Bad input: hand-edited custom resources, missing
 * and cyclic owners, malformed annotations, a namespace deleted while its
 * pods die. Needs the test control plane (test/cluster); no root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sample, sampleText } from '../helpers/samples.ts';
import {
  add,
  apply,
  asStrings,
  counters,
  createPod,
  deletePod,
  ledgerLoaded,
  ledgerLoads,
  must,
  operatorCluster,
  podmeterTop,
  staysEqual,
  startOperator,
  totals,
  totalsBecome,
  usage,
  writeCounts,
  type Counts,
  type TestPod,
} from '../helpers/operatorCluster.ts';
import { waitFor } from '../helpers/poll.ts';
import type { UsageKind } from '../../common/contract/usage.ts';
import { copy, FIELDS, fromStrings, subFrom } from '../../common/contract/counts.ts';
import { bytes } from '../../common/format.ts';

const template = (app: string) => ({
  metadata: { labels: { app } },
  spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
});
const owner = (apiVersion: string, kind: string, name: string, uid?: string) => ({
  apiVersion,
  kind,
  name,
  ...(uid ? { uid } : {}),
});

test('operator rollups: exact sums, finals, restarts, top, bad input', async (t) => {
  const oc = await operatorCluster(t);
  await apply(oc, [
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'podmeter-test-n-a', annotations: { 'podmeter.io/bpf-map-bytes': '1000' } },
    },
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'podmeter-test-n-b', annotations: { 'podmeter.io/bpf-map-bytes': '2345' } },
    },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'batch' } },
  ]);
  const op = await startOperator(oc, { identity: 'podmeter-test-op-a' });
  await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);

  // Owners, created after the operator started (seen through its watches).
  const someUid = '11111111-2222-4333-8444-555555555555';
  await apply(oc, [
    {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: 'web-5d8f',
        namespace: 'shop',
        ownerReferences: [{ ...owner('apps/v1', 'Deployment', 'web', someUid), controller: true }],
      },
      spec: { selector: { matchLabels: { app: 'web' } }, template: template('web') },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: 'loop-a',
        namespace: 'shop',
        ownerReferences: [{ ...owner('apps/v1', 'ReplicaSet', 'loop-b', someUid), controller: true }],
      },
      spec: { selector: { matchLabels: { app: 'a' } }, template: template('a') },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: 'loop-b',
        namespace: 'shop',
        ownerReferences: [{ ...owner('apps/v1', 'ReplicaSet', 'loop-a', someUid), controller: true }],
      },
      spec: { selector: { matchLabels: { app: 'b' } }, template: template('b') },
    },
    {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: {
        name: 'nightly-29001',
        namespace: 'batch',
        ownerReferences: [{ ...owner('batch/v1', 'CronJob', 'nightly', someUid), controller: true }],
      },
      spec: {
        template: { spec: { restartPolicy: 'Never', containers: [{ name: 'job', image: 'example.invalid/job' }] } },
      },
    },
    {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'once', namespace: 'batch' },
      spec: {
        template: { spec: { restartPolicy: 'Never', containers: [{ name: 'job', image: 'example.invalid/job' }] } },
      },
    },
  ]);
  const A = 'podmeter-test-n-a';
  const B = 'podmeter-test-n-b';
  const specs = [
    { namespace: 'shop', name: 'web-5d8f-x1', node: A, owner: owner('apps/v1', 'ReplicaSet', 'web-5d8f') },
    { namespace: 'shop', name: 'web-5d8f-x2', node: B, owner: owner('apps/v1', 'ReplicaSet', 'web-5d8f') },
    { namespace: 'shop', name: 'db-0', node: A, owner: owner('apps/v1', 'StatefulSet', 'db') },
    { namespace: 'shop', name: 'logs-q7', node: B, owner: owner('apps/v1', 'DaemonSet', 'logs') },
    { namespace: 'shop', name: 'bare', node: A },
    { namespace: 'shop', name: 'orphan', node: B, owner: owner('apps/v1', 'ReplicaSet', 'gone-123') },
    { namespace: 'shop', name: 'cyc', node: A, owner: owner('apps/v1', 'ReplicaSet', 'loop-a') },
    { namespace: 'batch', name: 'nightly-29001-k2', node: B, owner: owner('batch/v1', 'Job', 'nightly-29001') },
    { namespace: 'batch', name: 'once-p9', node: A, owner: owner('batch/v1', 'Job', 'once') },
  ];
  const pods = new Map<string, TestPod>();
  for (const s of specs) pods.set(s.name, await createPod(oc, s));
  const pod = (name: string) => pods.get(name)!;
  const counts = new Map<string, Counts>();
  let seed = 1;
  for (const name of pods.keys()) counts.set(name, counters(seed++, name === 'web-5d8f-x1' ? 2n ** 50n : 1n)); // > 2^53: exact as bigints
  for (const [name, c] of counts) await writeCounts(oc, pod(name), c);

  const sumOf = (pred: (p: TestPod) => boolean) => add(...[...counts].filter(([n]) => pred(pod(n))).map(([, c]) => c));
  /** Every total the tests follow, with what it must be: the live pods' counts plus the retired pods' finals. */
  const expected = (): [UsageKind, string, Counts][] => {
    const live = (pred: (p: TestPod) => boolean) =>
      add(sumOf(pred), ...retiredPods.filter(([p]) => pred(p)).map(([, c]) => c));
    return [
      ['NamespaceUsage', 'shop', live((p) => p.namespace === 'shop')],
      ['NamespaceUsage', 'batch', live((p) => p.namespace === 'batch')],
      ['NodeUsage', A, live((p) => p.node === A)],
      ['NodeUsage', B, live((p) => p.node === B)],
      ['WorkloadUsage', 'shop.deployment.web', live((p) => p.name.startsWith('web-'))],
      ['WorkloadUsage', 'batch.cronjob.nightly', live((p) => p.name.startsWith('nightly-'))],
    ];
  };
  const expectAll = async (timeoutMs = 60_000) => {
    for (const [kind, name, want] of expected()) await totalsBecome(oc, kind, name, want, timeoutMs);
  };
  const retiredPods: [TestPod, Counts][] = [];

  await t.test('totals equal the sums of the pods, per namespace, workload (owner chains) and node', async () => {
    const started = Date.now();
    await expectAll();
    const one = (name: string) => asStrings(counts.get(name)!);
    assert.deepEqual(await totals(oc, 'WorkloadUsage', 'shop.statefulset.db'), one('db-0'));
    assert.deepEqual(await totals(oc, 'WorkloadUsage', 'shop.daemonset.logs'), one('logs-q7'));
    assert.deepEqual(await totals(oc, 'WorkloadUsage', 'shop.pod.bare'), one('bare'), 'a bare pod is its own workload');
    assert.deepEqual(await totals(oc, 'WorkloadUsage', 'batch.job.once'), one('once-p9'));
    assert.deepEqual(
      await totals(oc, 'WorkloadUsage', 'shop.replicaset.loop-a'),
      one('cyc'),
      "cyclic owners: the pod's own controller",
    );
    await waitFor(
      'the orphan under its missing ReplicaSet',
      async () =>
        (await totals(oc, 'WorkloadUsage', 'shop.replicaset.gone-123'))?.egressBytes === one('orphan').egressBytes
          ? true
          : undefined,
      20_000,
    );
    const web = await usage(oc, 'WorkloadUsage', 'shop.deployment.web');
    assert.deepEqual(web?.spec, { namespace: 'shop', kind: 'Deployment', name: 'web' });
    assert.equal(web?.status?.pods, 2);
    const shop = await usage(oc, 'NamespaceUsage', 'shop');
    assert.equal(shop?.status?.pods, 7);
    assert.match(shop?.status?.ingress ?? '', /^[\d.]+ (B|KiB|MiB|GiB|TiB|PiB)$/);
    const nodeA = await usage(oc, 'NodeUsage', A);
    assert.equal(nodeA?.status?.bpfMapBytes, '1000');
    assert.equal(nodeA?.status?.checkpoint?.length, 5, 'every pod with traffic on the node is checkpointed');
    t.diagnostic(`all totals exact ${Date.now() - started} ms after the annotations were written`);

    const metrics = await op.metrics();
    // Compared as bigints: shop's ingress is above 2^53, where a float would round both sides alike.
    const exact = (name: string, labels: Record<string, string>) => BigInt(sampleText(metrics, name, labels) ?? -1);
    const shopIn = sumOf((p) => p.namespace === 'shop').ingressBytes;
    assert.ok(shopIn > 2n ** 53n);
    assert.equal(exact('podmeter_namespace_network_bytes_total', { namespace: 'shop', direction: 'ingress' }), shopIn);
    assert.equal(
      exact('podmeter_workload_network_bytes_total', {
        namespace: 'batch',
        workload_kind: 'CronJob',
        workload: 'nightly',
        direction: 'egress',
      }),
      counts.get('nightly-29001-k2')!.egressBytes,
    );
    assert.equal(
      exact('podmeter_node_network_bytes_total', { node: B, direction: 'egress' }),
      sumOf((p) => p.node === B).egressBytes,
    );
    // Egress by billed class, beside the totals.
    assert.equal(
      exact('podmeter_namespace_network_peer_bytes_total', {
        namespace: 'shop',
        direction: 'egress',
        peer: 'cross-zone',
      }),
      sumOf((p) => p.namespace === 'shop').egressCrossZoneBytes,
    );
    assert.equal(
      exact('podmeter_workload_network_peer_bytes_total', {
        namespace: 'batch',
        workload_kind: 'CronJob',
        workload: 'nightly',
        direction: 'egress',
        peer: 'external',
      }),
      counts.get('nightly-29001-k2')!.egressExternalBytes,
    );
    assert.equal(
      exact('podmeter_node_network_peer_bytes_total', { node: A, direction: 'egress', peer: 'cross-region' }),
      sumOf((p) => p.node === A).egressCrossRegionBytes,
    );
    assert.equal(sample(metrics, 'podmeter_cluster_bpf_map_memory_bytes', {}), 3345);
    assert.equal(sample(metrics, 'podmeter_operator_leader', {}), 1);
    const warned = (text: string) => op.logs.filter((l) => String(l.msg).startsWith(text)).length;
    assert.equal(warned('owner references form a cycle'), 1, 'the cycle is logged once');
    assert.equal(warned('owner not found'), 1, 'the missing owner is logged once');

    const table = await must(oc.cluster.kubectl(['get', 'namespaceusages']));
    assert.match(table.split('\n')[0] ?? '', /^NAME\s+INGRESS\s+EGRESS\s+CROSS-ZONE\s+EXTERNAL\s+PODS\s+AGE$/);
    assert.match(table, /\nshop\s+\S+ \S+\s+\S+ \S+\s+\S+ \S+\s+\S+ \S+\s+7\s+\S+/);
    assert.equal(
      shop?.status?.egressCrossZone,
      bytes(sumOf((p) => p.namespace === 'shop').egressCrossZoneBytes),
      'the human CROSS-ZONE column',
    );
    const wide = await must(oc.cluster.kubectl(['get', 'namespaceusages', '-o', 'wide']));
    assert.match(wide.split('\n')[0] ?? '', /\sCROSS-REGION\s/);
  });

  // How fast is bench/operator.bench.ts's figure (annotation to NamespaceUsage p50/p99); here: every change arrives, exactly.
  await t.test('each annotation change reaches the totals', async () => {
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = add(counts.get('db-0')!, counters(100 + i));
      counts.set('db-0', c);
      const at = Date.now();
      await writeCounts(oc, pod('db-0'), c);
      await totalsBecome(
        oc,
        'NamespaceUsage',
        'shop',
        add(
          sumOf((p) => p.namespace === 'shop'),
          ...retiredPods.filter(([p]) => p.namespace === 'shop').map(([, r]) => r),
        ),
        60_000,
      );
      latencies.push(Date.now() - at);
    }
    t.diagnostic(`annotation -> NamespaceUsage ms (not asserted): ${latencies.join(' ')}`);
  });

  await t.test('deleted pods keep their final counts in the totals', async () => {
    // The agent writes the final counts when the pod's cgroup empties, then the pod goes.
    const final = add(counts.get('web-5d8f-x2')!, counters(50));
    await writeCounts(oc, pod('web-5d8f-x2'), final);
    await deletePod(oc, pod('web-5d8f-x2'));
    await deletePod(oc, pod('once-p9'));
    retiredPods.push([pod('web-5d8f-x2'), final], [pod('once-p9'), counts.get('once-p9')!]);
    counts.delete('web-5d8f-x2');
    counts.delete('once-p9');
    await expectAll();
    assert.deepEqual(
      await totals(oc, 'WorkloadUsage', 'batch.job.once'),
      asStrings(retiredPods[1]![1]),
      'a workload without pods keeps its total',
    );
    const web = await usage(oc, 'WorkloadUsage', 'shop.deployment.web');
    assert.equal(web?.status?.pods, 1);
    assert.equal(web?.status?.retiredPods, 1);
    await waitFor(
      'retirements rolled up',
      async () => ((await usage(oc, 'NodeUsage', B))?.status?.retiring?.every((r) => r.rolledUp) ? true : undefined),
      60_000,
    );
  });

  await t.test('operator restart: changes and deaths while it was down are counted once', async () => {
    await op.kill('SIGKILL');
    const grown = add(counts.get('web-5d8f-x1')!, counters(7));
    counts.set('web-5d8f-x1', grown);
    await writeCounts(oc, pod('web-5d8f-x1'), grown);
    // db-0 dies while no operator runs; its last counts are the checkpointed ones.
    await deletePod(oc, pod('db-0'));
    retiredPods.push([pod('db-0'), counts.get('db-0')!]);
    counts.delete('db-0');
    const late = await createPod(oc, {
      namespace: 'shop',
      name: 'web-5d8f-x3',
      node: B,
      owner: owner('apps/v1', 'ReplicaSet', 'web-5d8f'),
    });
    pods.set(late.name, late);
    counts.set(late.name, counters(77));
    await writeCounts(oc, late, counts.get(late.name)!);

    await op.restart();
    await expectAll();
    const shop = await usage(oc, 'NamespaceUsage', 'shop');
    assert.equal(shop?.status?.retiredPods, 2, 'web-5d8f-x2 and db-0, each once');
    assert.ok(
      op.logs.some((l) => l.msg === 'ledger loaded' && l.diedWhileAway === 1),
      'db-0 found dead on start',
    );

    // Once more, with nothing changed: once the restarted leader has loaded its
    // ledger, the totals stay exactly the same through its next write rounds.
    const all = async () => [
      await totals(oc, 'NamespaceUsage', 'shop'),
      await totals(oc, 'NamespaceUsage', 'batch'),
      await totals(oc, 'NodeUsage', A),
      await totals(oc, 'NodeUsage', B),
      (await usage(oc, 'NamespaceUsage', 'shop'))?.status?.retiredPods,
    ];
    const before = await all();
    const loads = ledgerLoads(op);
    await op.kill('SIGKILL');
    await op.restart();
    await ledgerLoaded(op, loads);
    await staysEqual('totals after a restart with nothing changed', all, before);
    assert.equal(before[4], 2);
  });

  await t.test('podmeter top (cluster mode) shows the same numbers', async () => {
    const ns = JSON.parse((await podmeterTop(oc, ['namespaces', '-o', 'json'])).stdout) as {
      items: Record<string, string>[];
    };
    for (const name of ['shop', 'batch']) {
      const row = ns.items.find((i) => i.name === name);
      const want = await totals(oc, 'NamespaceUsage', name);
      assert.deepEqual(row && Object.fromEntries(FIELDS.map((f) => [f, row[f]])), want, 'totals and billed classes');
    }
    assert.equal(ns.items[0]?.name, 'shop', 'sorted by total, largest first');
    const wl = JSON.parse((await podmeterTop(oc, ['workloads', '--namespace', 'batch', '-o', 'json'])).stdout) as {
      items: Record<string, string>[];
    };
    assert.deepEqual(wl.items.map((i) => `${i.kind}/${i.name}`).sort(), ['CronJob/nightly', 'Job/once']);
    const podsJson = JSON.parse((await podmeterTop(oc, ['pods', '-A', '-o', 'json', '--sort', 'name'])).stdout) as {
      items: Record<string, string>[];
    };
    const x1 = podsJson.items.find((i) => i.name === 'web-5d8f-x1');
    assert.equal(x1?.ingressBytes, String(counts.get('web-5d8f-x1')!.ingressBytes));
    assert.equal(podsJson.items.length, counts.size);
    const nodes = await podmeterTop(oc, ['nodes']);
    assert.match(nodes.stdout, /^NAME\s+INGRESS\s+EGRESS\s+CROSS-ZONE\s+EXTERNAL\s+PODS\s+BPF MAPS\n/);
    assert.match(nodes.stdout, new RegExp(`${A}\\s.*1000 B\\n`));
    const limited = await podmeterTop(oc, ['workloads', '-A', '-n', '2']);
    assert.equal(limited.stdout.trim().split('\n').length, 3, 'header and 2 rows');
    const wrong = await podmeterTop(oc, ['pods', '-n', 'shop']);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /--namespace/);
  });

  await t.test(
    'bad input: schema rejects, hand edits and deletions do not lose counts, malformed annotations',
    async () => {
      const bad = await oc.cluster.kubectl([
        'patch',
        'namespaceusage',
        'shop',
        '--subresource=status',
        '--type=merge',
        '-p',
        '{"status":{"ingressBytes":"lots"}}',
      ]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /ingressBytes/);
      const noRetired = await oc.cluster.kubectl([
        'patch',
        'namespaceusage',
        'shop',
        '--subresource=status',
        '--type=merge',
        '-p',
        '{"status":{"retired":null}}',
      ]);
      assert.notEqual(noRetired.code, 0, 'retired is required');
      const respec = await oc.cluster.kubectl([
        'patch',
        'workloadusage',
        'shop.deployment.web',
        '--type=merge',
        '-p',
        '{"spec":{"name":"other"}}',
      ]);
      assert.notEqual(respec.code, 0, 'spec is immutable');
      assert.match(respec.stderr, /immutable/);

      // A WorkloadUsage made by hand whose spec does not match its name: logged, ignored, no crash.
      await apply(oc, [
        {
          apiVersion: 'podmeter.io/v1alpha1',
          kind: 'WorkloadUsage',
          metadata: { name: 'shop.deployment.fake' },
          spec: { namespace: 'shop', kind: 'Deployment', name: 'other' },
        },
      ]);
      // A NamespaceUsage deleted by hand comes back with the same totals at the next change.
      const batchBefore = await totals(oc, 'NamespaceUsage', 'batch');
      await must(oc.cluster.kubectl(['delete', 'namespaceusage', 'batch']));
      const grown = add(counts.get('nightly-29001-k2')!, counters(3));
      const delta = copy(grown);
      subFrom(delta, counts.get('nightly-29001-k2')!);
      counts.set('nightly-29001-k2', grown);
      await writeCounts(oc, pod('nightly-29001-k2'), grown);
      const batchWant = add(fromStrings(batchBefore)!, delta);
      await totalsBecome(oc, 'NamespaceUsage', 'batch', batchWant);

      // A malformed annotation (a hand edit): the previous value is kept.
      const annotationErrors = async () =>
        sample(await op.metrics(), 'podmeter_operator_errors_total', { op: 'annotation' }) ?? 0;
      const errorsBefore = await annotationErrors();
      await must(
        oc.cluster.kubectl(['annotate', 'pod', 'bare', '-n', 'shop', '--overwrite', 'podmeter.io/ingress-bytes=lots']),
      );
      await waitFor(
        'the malformed annotation reported',
        async () => ((await annotationErrors()) > errorsBefore ? true : undefined),
        60_000,
      );
      assert.ok(
        op.logs.some(
          (l) =>
            String(l.msg).startsWith('pod annotation is not an unsigned decimal integer') &&
            l.problem === 'not-decimal',
        ),
      );
      await staysEqual(
        "bare's totals after a malformed annotation",
        () => totals(oc, 'WorkloadUsage', 'shop.pod.bare'),
        asStrings(counts.get('bare')!),
      );

      // A namespace deleted while its pods die: the namespace's totals stay.
      await must(oc.cluster.kubectl(['delete', 'namespace', 'batch', '--wait=false']));
      await deletePod(oc, pod('nightly-29001-k2'));
      retiredPods.push([pod('nightly-29001-k2'), grown]);
      counts.delete('nightly-29001-k2');
      await totalsBecome(oc, 'NamespaceUsage', 'batch', batchWant);
      await waitFor(
        'batch pods 0',
        async () => ((await usage(oc, 'NamespaceUsage', 'batch'))?.status?.pods === 0 ? true : undefined),
        60_000,
      );

      assert.equal(op.child.exitCode, null, 'the operator is still running');
      // The hand-made WorkloadUsage is read when a leader loads the ledger.
      const loads = ledgerLoads(op);
      await op.kill('SIGKILL');
      await op.restart();
      await ledgerLoaded(op, loads);
      assert.ok(
        op.logs.some((l) => l.kind === 'WorkloadUsage' && l.name === 'shop.deployment.fake'),
        'the bad WorkloadUsage reported',
      );
      // bare's ingress annotation is still malformed: the restarted leader, which never
      // saw a good value, counts bare once (from its checkpoint) through its write rounds.
      await expectAll();
      const want = expected();
      await staysEqual(
        "totals after a restart with bare's annotation still malformed",
        () => Promise.all(want.map(([kind, name]) => totals(oc, kind, name))),
        want.map(([, , c]) => asStrings(c)),
      );
    },
  );
});
