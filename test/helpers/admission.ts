/**
 * The chart's admission policy (helm/podmeter/templates/admission.yaml) in a
 * test control plane, and the agent's identity as the policy knows it.
 *
 *   installAdmissionPolicy(cluster)   applies the policy and its binding as the
 *                                     chart renders them; resolves once enforced
 *   agentToken(cluster, node, account?) -> token of the agent's ServiceAccount
 *                                     (podmeter/podmeter-agent) bound to a Pod on
 *                                     `node` (it names the node, as the kubelet's
 *                                     projected token does)
 */
import assert from 'node:assert/strict';
import type { TestCluster } from '../cluster/cluster.ts';
import { render, toolsDir } from '../helm/chart.ts';
import { must } from './kubeCluster.ts';

/** The chart's policy and binding, rendered as `helm install podmeter -n podmeter` would. */
async function admissionPolicy(): Promise<string> {
  const objects = await render(await toolsDir());
  const policy = objects.filter(
    (o) => o.kind === 'ValidatingAdmissionPolicy' || o.kind === 'ValidatingAdmissionPolicyBinding',
  );
  assert.equal(policy.length, 2, 'the chart renders the policy and its binding by default');
  return policy.map((o) => JSON.stringify(o)).join('\n');
}

/** Installs the policy and waits until the API server enforces it (policies are loaded asynchronously). */
export async function installAdmissionPolicy(cluster: TestCluster): Promise<void> {
  await must(cluster.kubectl(['apply', '-f', '-'], { input: await admissionPolicy() }));
  const probe = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'podmeter-test-admission-probe', annotations: { 'podmeter.io/updated': 'x' } },
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await cluster.kubectl(['create', '--dry-run=server', '-f', '-'], { input: JSON.stringify(probe) });
    if (r.code !== 0 && r.stderr.includes('podmeter.io/ annotations are written only by the podmeter agent')) return;
    if (Date.now() > deadline) throw new Error(`the admission policy is not enforced after 60 s: ${r.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/**
 * A Pod of the agent's ServiceAccount bound to `node` (namespace and account
 * made when missing), and a token bound to that Pod: it names the node
 * (authentication.kubernetes.io/node-name), as the agent's projected token does.
 */
export async function agentToken(
  cluster: TestCluster,
  node: string,
  account = { namespace: 'podmeter', name: 'podmeter-agent' },
): Promise<string> {
  const { namespace, name } = account;
  await cluster.kubectl(['create', 'namespace', namespace]); // may exist
  await cluster.kubectl(['create', 'serviceaccount', name, '-n', namespace]); // may exist
  const pod = `${name}-${node}`.slice(0, 63).replace(/-+$/, '');
  const manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod, namespace },
    spec: {
      nodeName: node,
      serviceAccountName: name,
      containers: [{ name: 'agent', image: 'example.invalid/podmeter' }],
    },
  };
  await must(cluster.kubectl(['create', '-f', '-'], { input: JSON.stringify(manifest) }));
  return (
    await must(
      cluster.kubectl([
        'create',
        'token',
        name,
        '-n',
        namespace,
        '--bound-object-kind',
        'Pod',
        '--bound-object-name',
        pod,
        '--duration',
        '2h',
      ]),
    )
  ).trim();
}
