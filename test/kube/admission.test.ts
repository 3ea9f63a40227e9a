/**
 * The chart's admission policy (helm/podmeter/templates/admission.yaml) on a
 * real API server: a tenant with `edit` in its namespace cannot create a pod
 * carrying, nor add, change or remove, `podmeter.io/` annotations; the agent,
 * with a token bound to its pod on node A (as the kubelet projects it),
 * annotates only node A and the pods bound to it, and changes nothing else;
 * only a node's kubelet makes mirror pods (whose config hash names a static
 * pod's cgroup).
 * Each denial is shown beside an allowed request of the same caller (the
 * control), so a test passes only because of the policy. The operator reports
 * whether the policy is in place, and then counts a pod it never saw from its
 * own agent's Node final.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startCluster } from '../cluster/cluster.ts';
import { render, toolsDir } from '../helm/chart.ts';
import { agentToken, installAdmissionPolicy } from '../helpers/admission.ts';
import { annotations, must } from '../helpers/kubeCluster.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { counters, operatorCluster, startOperator, totalsBecome } from '../helpers/operatorCluster.ts';
import { ANNOTATIONS, podAnnotations } from '../../common/contract/annotations.ts';
import { toStrings } from '../../common/contract/counts.ts';

test('podmeter.io/ annotations: written only by the agent, only on its own node, and nothing else by it', async (t) => {
  const cluster = await startCluster();
  t.after(() => cluster.down());
  for (const node of ['node-a', 'node-b'])
    await must(
      cluster.kubectl(['create', '-f', '-'], {
        input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }),
      }),
    );
  await must(cluster.kubectl(['create', 'namespace', 'shop']));
  const pod = (name: string, node: string, notes: Record<string, string> = {}) =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'shop', annotations: notes },
      spec: { nodeName: node, containers: [{ name: 'app', image: 'example.invalid/app' }] },
    });
  await must(cluster.kubectl(['create', '-f', '-'], { input: pod('web', 'node-a') }));
  await must(cluster.kubectl(['create', '-f', '-'], { input: pod('db', 'node-b') }));
  // The agent's RBAC as the chart grants it, so a denial below is the policy's, never RBAC's.
  const rbac = (await render(await toolsDir())).filter(
    (o) => o.metadata.name === 'podmeter-agent' && ['ClusterRole', 'ClusterRoleBinding'].includes(o.kind),
  );
  assert.equal(rbac.length, 2);
  await must(cluster.kubectl(['apply', '-f', '-'], { input: rbac.map((o) => JSON.stringify(o)).join('\n') }));
  const agent = await agentToken(cluster, 'node-a');
  const unbound = (await must(cluster.kubectl(['create', 'token', 'podmeter-agent', '-n', 'podmeter']))).trim();
  await must(cluster.kubectl(['create', 'serviceaccount', 'tenant', '-n', 'shop']));
  // `edit`'s rules come from system:aggregate-to-{edit,view} through the aggregation
  // controller, which this control plane (no controller manager) lacks: bind all three.
  for (const role of ['edit', 'system:aggregate-to-edit', 'system:aggregate-to-view']) {
    await must(
      cluster.kubectl([
        'create',
        'rolebinding',
        `tenant-${role.replace(':', '-')}`,
        '-n',
        'shop',
        `--clusterrole=${role}`,
        '--serviceaccount=shop:tenant',
      ]),
    );
  }
  const tenant = (await must(cluster.kubectl(['create', 'token', 'tenant', '-n', 'shop']))).trim();
  await installAdmissionPolicy(cluster);

  const TENANT_DENIED =
    /podmeter\.io\/ annotations are written only by the podmeter agent \(system:serviceaccount:podmeter:podmeter-agent\)/;
  const OTHER_NODE = /the podmeter agent of node node-a may annotate only its own Node and the pods bound to it/;
  const ONLY_OURS = /the podmeter agent may change only podmeter\.io\/ annotations/;
  const patch = (token: string, kind: string, name: string, body: unknown, ns = 'shop') =>
    cluster.kubectl(
      ['patch', kind, name, ...(kind === 'pod' ? ['-n', ns] : []), '--type', 'merge', '-p', JSON.stringify(body)],
      { token },
    );
  const notes = (values: Record<string, string | null>) => ({ metadata: { annotations: values } });
  const allowed = async (what: string, r: Promise<{ code: number; stderr: string }>) => {
    const { code, stderr } = await r;
    assert.equal(code, 0, `${what}: allowed, got ${stderr}`);
  };
  const denied = async (what: string, r: Promise<{ code: number; stderr: string }>, reason: RegExp) => {
    const { code, stderr } = await r;
    assert.notEqual(code, 0, `${what}: must be denied`);
    assert.match(stderr, reason, what);
  };

  // A tenant: pods without our annotations, other annotations, yes; ours, never.
  await allowed(
    'tenant creates a pod',
    cluster.kubectl(['create', '-f', '-'], { input: pod('plain', 'node-a', { team: 'shop' }), token: tenant }),
  );
  await denied(
    'tenant creates a pod with counts',
    cluster.kubectl(['create', '-f', '-'], {
      input: pod('forged', 'node-a', { 'podmeter.io/egress-bytes': '1' }),
      token: tenant,
    }),
    TENANT_DENIED,
  );
  await denied(
    'tenant adds counts',
    patch(tenant, 'pod', 'web', notes({ 'podmeter.io/egress-bytes': '1' })),
    TENANT_DENIED,
  );

  // The agent of node A: its own pods' and Node's podmeter.io/ annotations.
  await allowed(
    'agent annotates a pod of its node',
    patch(agent, 'pod', 'web', notes({ 'podmeter.io/egress-bytes': '1000', 'podmeter.io/updated': 'now' })),
  );
  await allowed(
    'agent annotates its Node',
    patch(agent, 'node', 'node-a', notes({ 'podmeter.io/bpf-map-bytes': '4096' })),
  );
  assert.equal((await annotations(cluster, 'pod', 'web', 'shop'))['podmeter.io/egress-bytes'], '1000');

  await denied(
    'tenant changes counts',
    patch(tenant, 'pod', 'web', notes({ 'podmeter.io/egress-bytes': '1' })),
    TENANT_DENIED,
  );
  await denied(
    'tenant removes counts',
    patch(tenant, 'pod', 'web', notes({ 'podmeter.io/egress-bytes': null })),
    TENANT_DENIED,
  );
  await allowed(
    'tenant changes another annotation of an annotated pod',
    patch(tenant, 'pod', 'web', notes({ team: 'shop' })),
  );
  await denied(
    'admin adds counts (only the agent writes them)',
    cluster.kubectl(['annotate', 'pod', 'web', '-n', 'shop', 'podmeter.io/ingress-bytes=5']),
    TENANT_DENIED,
  );
  await denied(
    'tenant replaces the pod with changed counts',
    cluster.kubectl(['annotate', 'pod', 'web', '-n', 'shop', '--overwrite', 'podmeter.io/egress-bytes=7'], {
      token: tenant,
    }),
    TENANT_DENIED,
  );
  assert.equal(
    (await annotations(cluster, 'pod', 'web', 'shop'))['podmeter.io/egress-bytes'],
    '1000',
    "the agent's value stands",
  );

  // The agent of node A: nothing of node B, nothing but its annotations.
  await denied(
    'agent annotates a pod of another node',
    patch(agent, 'pod', 'db', notes({ 'podmeter.io/egress-bytes': '1' })),
    OTHER_NODE,
  );
  await denied(
    'agent annotates another Node',
    patch(agent, 'node', 'node-b', notes({ 'podmeter.io/bpf-map-bytes': '1' })),
    OTHER_NODE,
  );
  await denied(
    'agent labels a pod of its node',
    patch(agent, 'pod', 'web', { metadata: { labels: { app: 'x' } } }),
    ONLY_OURS,
  );
  await denied('agent writes another annotation', patch(agent, 'pod', 'web', notes({ team: 'other' })), ONLY_OURS);
  await denied(
    'agent changes a pod spec',
    patch(agent, 'pod', 'web', { spec: { activeDeadlineSeconds: 60 } }),
    ONLY_OURS,
  );
  await denied(
    'agent labels its Node',
    patch(agent, 'node', 'node-a', { metadata: { labels: { zone: 'x' } } }),
    ONLY_OURS,
  );
  await denied(
    'agent taints its Node',
    patch(agent, 'node', 'node-a', { spec: { taints: [{ key: 'k', effect: 'NoSchedule' }] } }),
    ONLY_OURS,
  );
  await denied(
    'agent token without a node',
    patch(unbound, 'pod', 'web', notes({ 'podmeter.io/egress-bytes': '2' })),
    /token names no node/,
  );
  await denied(
    'agent creates a pod',
    cluster.kubectl(['create', '-f', '-'], {
      input: pod('agents-own', 'node-a', { 'podmeter.io/egress-bytes': '1' }),
      token: agent,
    }),
    /forbidden/i, // RBAC already: the agent has no create on pods
  );

  // Mirror pods: the agent names a static pod's cgroup by config.hash; only the node's kubelet sets it.
  const nodeUid = (await must(cluster.kubectl(['get', 'node', 'node-a', '-o', 'jsonpath={.metadata.uid}']))).trim();
  const mirror = (name: string) => {
    const m = JSON.parse(
      pod(name, 'node-a', {
        'kubernetes.io/config.mirror': 'f'.repeat(32),
        'kubernetes.io/config.hash': 'f'.repeat(32),
        'kubernetes.io/config.source': 'file',
      }),
    ) as { metadata: { ownerReferences?: unknown[] } };
    m.metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: 'node-a', uid: nodeUid, controller: true }];
    return JSON.stringify(m);
  };
  const MIRROR_DENIED =
    /kubernetes\.io\/config\.mirror and kubernetes\.io\/config\.hash are set only by the kubelet of the pod's node/;
  await denied(
    'tenant forges a mirror pod',
    cluster.kubectl(['create', '-f', '-'], { input: mirror('forged-mirror'), token: tenant }),
    MIRROR_DENIED,
  );
  await denied(
    "another node's kubelet makes a mirror pod",
    cluster.kubectl(['create', '-f', '-', '--as=system:node:node-b', '--as-group=system:nodes'], {
      input: mirror('wrong-node'),
    }),
    MIRROR_DENIED,
  );
  await allowed(
    "the node's kubelet makes its mirror pod",
    cluster.kubectl(['create', '-f', '-', '--as=system:node:node-a', '--as-group=system:nodes'], {
      input: mirror('static-web-node-a'),
    }),
  );
  await denied(
    "tenant re-points a pod at a static pod's hash",
    patch(tenant, 'pod', 'plain', notes({ 'kubernetes.io/config.hash': 'f'.repeat(32) })),
    MIRROR_DENIED,
  );

  assert.deepEqual(
    Object.keys(await annotations(cluster, 'pod', 'db', 'shop')).filter((k) => k.startsWith('podmeter.io/')),
    [],
    "node B's pod untouched",
  );
});

test('the operator says whether the policy is enforced: a warning and 0 without it, 1 with it', async (t) => {
  const oc = await operatorCluster(t);
  const op = await startOperator(oc);
  const enforced = async () => sample(await op.metrics(), 'podmeter_admission_policy_enforced', {});
  await waitFor('podmeter_admission_policy_enforced 0', async () => ((await enforced()) === 0 ? true : undefined));
  const warning = op.logs.find((l) => l.module === 'admission' && l.level === 40);
  assert.match(
    String(warning?.msg),
    /admission policy not enforced \(no ValidatingAdmissionPolicy podmeter-annotations\): any tenant who may edit a pod can write the counts podmeter bills from/,
  );

  await installAdmissionPolicy(oc.cluster);
  await op.kill('SIGTERM');
  await op.restart();
  await waitFor('podmeter_admission_policy_enforced 1', async () => ((await enforced()) === 1 ? true : undefined));
});

test("with the policy enforced, a pod born and gone while no operator ran counts from its own agent's final", async (t) => {
  const oc = await operatorCluster(t);
  const node = 'podmeter-test-trusted-node';
  await must(
    oc.cluster.kubectl(['create', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }),
    }),
  );
  const rbac = (await render(await toolsDir())).filter(
    (o) => o.metadata.name === 'podmeter-agent' && ['ClusterRole', 'ClusterRoleBinding'].includes(o.kind),
  );
  await must(oc.cluster.kubectl(['apply', '-f', '-'], { input: rbac.map((o) => JSON.stringify(o)).join('\n') }));
  const agent = await agentToken(oc.cluster, node);
  await installAdmissionPolicy(oc.cluster);
  await must(oc.cluster.kubectl(['create', 'namespace', 'shop']));

  // While no operator runs: the pod is made, counted by its agent, and gone.
  const manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'brief', namespace: 'shop' },
    spec: { nodeName: node, containers: [{ name: 'app', image: 'example.invalid/app' }] },
  };
  const created = JSON.parse(
    await must(oc.cluster.kubectl(['create', '-o', 'json', '-f', '-'], { input: JSON.stringify(manifest) })),
  ) as { metadata: { uid: string } };
  const uid = created.metadata.uid;
  const c = counters(7);
  const asAgent = (args: string[]) => must(oc.cluster.kubectl(args, { token: agent }));
  await asAgent([
    'annotate',
    'pod',
    'brief',
    '-n',
    'shop',
    ...Object.entries(podAnnotations(counters(3), undefined)).map(([k, v]) => `${k}=${v}`),
  ]);
  const final = [{ uid, namespace: 'shop', name: 'brief', terminated: new Date().toISOString(), ...toStrings(c) }];
  await asAgent(['annotate', 'node', node, `${ANNOTATIONS.finals}=${JSON.stringify(final)}`]);
  await must(oc.cluster.kubectl(['delete', 'pod', 'brief', '-n', 'shop', '--grace-period=0', '--force'])); // no kubelet here to finish a graceful deletion

  const op = await startOperator(oc);
  await totalsBecome(oc, 'NamespaceUsage', 'shop', c);
  assert.ok(
    op.logs.some(
      (l) => l.msg === "a pod deleted while no operator watched: counted from its agent's final" && l.uid === uid,
    ),
  );
  assert.equal(sample(await op.metrics(), 'podmeter_admission_policy_enforced', {}), 1);
});
