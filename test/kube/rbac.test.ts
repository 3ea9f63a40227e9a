/**
 * The agent's RBAC (deploy/agent-rbac.yaml) is exactly enough, also under
 * the chart's admission policy: run with a token of a ServiceAccount bound to
 * only those roles (and to its pod on the node), the agent watches its
 * pods, writes Pod and Node annotations, and follows the write budget the
 * operator publishes in ConfigMap podmeter-budget, without a restart; the
 * token can do nothing else (no secrets, no other ConfigMaps, no pods on
 * other verbs, no other resources).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpExchange } from '../helpers/traffic.ts';
import { permissionErrors, startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import { agentToken, installAdmissionPolicy } from '../helpers/admission.ts';
import { annotations, clusterWithNode, makePod, must, tokenKubeconfig } from '../helpers/kubeCluster.ts';

const RBAC = new URL('../../deploy/agent-rbac.yaml', import.meta.url).pathname;

test('the agent does its whole job with exactly its RBAC, and nothing more', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await must(cluster.kubectl(['create', 'namespace', 'podmeter']));
  await must(cluster.kubectl(['create', 'serviceaccount', 'podmeter-agent', '-n', 'podmeter']));
  await must(cluster.kubectl(['apply', '-f', '-'], { input: readFileSync(RBAC, 'utf8') }));
  await must(
    cluster.kubectl([
      'create',
      'clusterrolebinding',
      'podmeter-agent',
      '--clusterrole=podmeter-agent',
      '--serviceaccount=podmeter:podmeter-agent',
    ]),
  );
  await must(
    cluster.kubectl([
      'create',
      'rolebinding',
      'podmeter-agent',
      '-n',
      'podmeter',
      '--role=podmeter-agent',
      '--serviceaccount=podmeter:podmeter-agent',
    ]),
  );
  // With the chart's admission policy, and a token bound to the agent's pod on the node, as the kubelet projects it.
  await installAdmissionPolicy(cluster);
  const token = await agentToken(cluster, node);

  const can = async (...args: string[]) => (await cluster.kubectl(['auth', 'can-i', ...args], { token })).stdout.trim();
  assert.equal(await can('watch', 'pods', '--all-namespaces'), 'yes');
  assert.equal(await can('patch', 'pods', '-n', 'default'), 'yes');
  assert.equal(await can('patch', 'nodes'), 'yes');
  assert.equal(await can('watch', 'configmaps/podmeter-budget', '-n', 'podmeter'), 'yes');
  for (const denied of [
    ['get', 'configmaps/other', '-n', 'podmeter'],
    ['list', 'configmaps', '-n', 'podmeter'],
    ['update', 'configmaps/podmeter-budget', '-n', 'podmeter'],
    ['get', 'secrets', '-n', 'podmeter'],
    ['list', 'secrets', '--all-namespaces'],
    ['delete', 'pods', '-n', 'default'],
    ['create', 'pods', '-n', 'default'],
    ['update', 'pods', '-n', 'default'],
    ['delete', 'nodes'],
    ['get', 'configmaps', '-n', 'default'],
    ['create', 'pods/exec', '-n', 'default'],
  ]) {
    assert.equal(await can(...denied), 'no', `must not: ${denied.join(' ')}`);
  }

  const root = makeTestCgroup(t);
  const a = await makePod(cluster, root, { name: 'a', namespace: 'default', node });
  const b = await makePod(cluster, root, { name: 'b', namespace: 'default', node });
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--kubeconfig',
      tokenKubeconfig(cluster, token, dir),
      '--node-name',
      node,
      '--namespace',
      'podmeter',
      '--annotate-interval',
      '1',
      '--annotate-budget',
      '20',
      '--interval',
      '1',
    ],
  });
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  await udpExchange({
    senderCgroup: a.container.path,
    receiverCgroup: b.container.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 10,
    payload: 72,
  });
  await waitFor(
    'pod annotation',
    async () =>
      (await annotations(cluster, 'pod', 'a', 'default'))['podmeter.io/egress-bytes'] === '1000' ? true : undefined,
    15_000,
  );
  await waitFor(
    'node annotation',
    async () => (await annotations(cluster, 'node', node))['podmeter.io/bpf-map-bytes'],
    15_000,
  );
  const views = await agent.cgroups();
  assert.equal(views.find((v) => v.uid === b.uid)?.pod, 'b', 'pod identity from the watch');

  // The operator's budget, followed without a restart: 0 stops the writes
  // (the new traffic is counted and skipped for budget), 20 resumes them.
  const budgetIs = (rate: number) =>
    waitFor(
      `write budget ${rate}`,
      async () => (sample(await agent.metrics(), 'podmeter_annotation_write_budget', {}) === rate ? true : undefined),
      15_000,
    );
  const publish = (rate: string) =>
    must(
      cluster.kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: 'podmeter-budget', namespace: 'podmeter' },
          data: { writesPerSecondPerNode: rate },
        }),
      }),
    );
  await budgetIs(20);
  await publish('0');
  await budgetIs(0);
  const skipped = () =>
    agent.metrics().then((text) => sample(text, 'podmeter_annotation_writes_total', { result: 'skipped_budget' }) ?? 0);
  const skippedBefore = await skipped();
  await udpExchange({
    senderCgroup: a.container.path,
    receiverCgroup: b.container.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 10,
    payload: 72,
  });
  await waitFor(
    'writes skipped for budget',
    async () => ((await skipped()) > skippedBefore ? true : undefined),
    15_000,
  );
  assert.equal(
    (await annotations(cluster, 'pod', 'a', 'default'))['podmeter.io/egress-bytes'],
    '1000',
    'no write while the budget is 0',
  );
  await publish('20');
  await budgetIs(20);
  await waitFor(
    'pod annotation after the budget returns',
    async () =>
      (await annotations(cluster, 'pod', 'a', 'default'))['podmeter.io/egress-bytes'] === '2000' ? true : undefined,
    15_000,
  );
  assert.deepEqual(permissionErrors(agent.logs), [], 'no permission errors');
});
