/**
 * The chart in a real kube-apiserver (test/cluster), with the real helm and
 * kubectl: install creates every object (the monitors against the real
 * prometheus-operator CRD schemas), the API admits the agent's pod only in a
 * `privileged` Pod Security namespace, the CRDs are served and validate,
 * the chart's ServiceAccounts can do their job and no more (kubectl auth
 * can-i, then the real agent and, once it exists, the real operator running
 * with their tokens), upgrade and uninstall work.
 * Needs root (the agent loads BPF programs), cgroup v2, bpffs, and the test
 * control plane.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { TestCluster } from '../cluster/cluster.ts';
import { permissionErrors, startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { afterOrSignal, randomSuffix, sleep, TEST_PREFIX } from '../helpers/cleanup.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpExchange } from '../helpers/traffic.ts';
import { agentToken as boundAgentToken } from '../helpers/admission.ts';
import { annotations, clusterWithNode, makePod, must, tokenKubeconfig } from '../helpers/kubeCluster.ts';
import {
  agentDaemonSet,
  CHART,
  exportedNames,
  findObject,
  helm,
  isOperatorMetric,
  missingMetrics,
  monitoringObjects,
  findObjects,
  parseDocs,
  render,
  ROOT,
  type K8sObject,
} from './chart.ts';
import type { JsonSchema, List, PodSpec, Workload } from './manifests.ts';

const FIXTURES = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures/prometheus-operator-crds');
const PODMETER = path.join(ROOT, 'bin/podmeter');

/** kubectl's TYPE.GROUP/NAME for an object, e.g. daemonset.apps/x, configmap/y. */
function ref(o: K8sObject): string {
  const [group] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : [''];
  return `${o.kind.toLowerCase()}${group ? `.${group}` : ''}/${o.metadata.name}`;
}

/** kubectl get ... -o json, as the caller knows it to be shaped. */
async function kubectlJson<T extends K8sObject>(cluster: TestCluster, args: string[]): Promise<T> {
  return JSON.parse(await must(cluster.kubectl([...args, '-o', 'json']))) as T;
}

/** What `kubectl auth can-i` answers for a token. */
async function canI(cluster: TestCluster, token: string, args: string[]): Promise<string> {
  return (await cluster.kubectl(['auth', 'can-i', ...args], { token })).stdout.trim();
}

/** A value valid for a (structural, simple) schema: required fields only, plus ingress/egress strings. */
function sample(schema: JsonSchema): unknown {
  switch (schema.type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const key of schema.required ?? []) out[key] = sample(schema.properties![key]!);
      for (const key of ['ingress', 'egress']) if (schema.properties?.[key]?.type === 'string') out[key] = '1.5 kB';
      return out;
    }
    case 'string':
      if (schema.format === 'date-time') return new Date().toISOString();
      if (schema.pattern?.includes('[0-9]')) return '1500';
      return 'x';
    case 'integer':
    case 'number':
      return Math.max(2, schema.minimum ?? 0);
    case 'boolean':
      return false;
    case 'array':
      return [];
    default:
      return 'x';
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

test('helm install, the API view, RBAC at work, upgrade and uninstall', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  const bin = cluster.binDir;
  const kc = ['--kubeconfig', cluster.kubeconfig];
  const release = `${TEST_PREFIX}${randomSuffix()}`;
  const ns = release;
  const monitoringOn = path.join(CHART, 'ci/monitoring-on-values.yaml');
  const dir = mkdtempSync(path.join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  await must(cluster.kubectl(['create', 'namespace', ns]));
  await must(cluster.kubectl(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=privileged']));
  // The real prometheus-operator CRDs, so the monitors are checked against their schemas.
  await must(cluster.kubectl(['create', '-f', FIXTURES]));
  await must(
    cluster.kubectl([
      'wait',
      '--for=condition=Established',
      '--timeout=30s',
      ...readdirSync(FIXTURES).map(
        (f) => `crd/${f.replace(/^monitoring\.coreos\.com_(\w+)\.yaml$/, '$1.monitoring.coreos.com')}`,
      ),
    ]),
  );

  const expected = await render(bin, { release, namespace: ns, values: [monitoringOn] });
  const crds = readdirSync(path.join(CHART, 'crds')).flatMap((f) =>
    findObjects(parseDocs(readFileSync(path.join(CHART, 'crds', f), 'utf8')), 'CustomResourceDefinition'),
  );

  await t.test('helm install creates every object the chart renders, and its CRDs', async () => {
    const r = await helm(bin, ['install', release, CHART, '--namespace', ns, '--values', monitoringOn, ...kc]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /STATUS: deployed/);
    assert.match(r.stdout, /kubectl get pods -A -o custom-columns=/, 'NOTES: how to see the annotations');
    assert.match(r.stdout, /kubectl get namespaceusages/, 'NOTES: the operator totals');
    assert.doesNotMatch(r.stdout, /WARNING: namespace/, 'the namespace is labelled privileged');

    const list = await kubectlJson<List>(cluster, ['get', '-n', ns, ...[...expected, ...crds].map(ref)]);
    const got = list.items.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    const want = [...expected, ...crds].map((o) => `${o.kind}/${o.metadata.name}`).sort();
    assert.deepEqual(got, want);
    t.diagnostic(`created: ${got.join(', ')}`);
    assert.equal(got.length, 35); // four CRDs (NodeRetirements the fourth); with the OpenCost PrometheusRule; with metricsAuth kubernetes: the token-reviewer, reader and scraper RBAC, the scraper ServiceAccount and its token Secret; the two NetworkPolicies; the admission policy and its binding
  });

  await t.test(
    'the API keeps the agent DaemonSet as rendered, and admits its pods only where Pod Security is privileged',
    async () => {
      const server = await kubectlJson<Workload>(cluster, ['get', 'daemonset', `${release}-agent`, '-n', ns]);
      const rendered = agentDaemonSet(expected).spec.template.spec;
      const kept = server.spec.template.spec;
      assert.deepEqual(kept.containers[0]?.securityContext, rendered.containers[0]?.securityContext);
      assert.deepEqual(kept.containers[0]?.volumeMounts, rendered.containers[0]?.volumeMounts);
      assert.equal(kept.hostPID, true);

      const podOf = (spec: PodSpec, namespace: string, name: string) =>
        JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, spec });
      const dryRun = (manifest: string) =>
        cluster.kubectl(['create', '--dry-run=server', '-f', '-'], { input: manifest });
      // Admitted in the release namespace (privileged).
      const ok = await dryRun(podOf(rendered, ns, `${TEST_PREFIX}agent`));
      assert.equal(ok.code, 0, ok.stderr);
      // Refused under baseline, for its host PID, host paths and capabilities.
      for (const level of ['baseline', 'restricted']) {
        const other = `${ns}-${level}`.slice(0, 63);
        await must(cluster.kubectl(['create', 'namespace', other]));
        await must(cluster.kubectl(['label', 'namespace', other, `pod-security.kubernetes.io/enforce=${level}`]));
        const refused = await dryRun(podOf(rendered, other, `${TEST_PREFIX}agent`));
        assert.notEqual(refused.code, 0);
        assert.match(refused.stderr, new RegExp(`violates PodSecurity "${level}:latest"`));
        for (const why of [
          /host namespaces \(hostPID=true\)/,
          /hostPath/,
          /capabilities \(container "agent" must not include "BPF", "DAC_READ_SEARCH", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"/,
          /AppArmor profile/,
        ])
          assert.match(refused.stderr, why);
        // The operator meets even "restricted".
        const operator = findObject(expected, 'Deployment', '-operator').spec.template.spec;
        const admitted = await dryRun(podOf(operator, other, `${TEST_PREFIX}operator`));
        assert.equal(admitted.code, 0, `${level}: ${admitted.stderr}`);
      }
    },
  );

  await t.test('the CRDs are served, cluster-scoped, print their columns, and validate their status', async () => {
    const resources = (
      await must(cluster.kubectl(['api-resources', '--api-group=podmeter.io', '--namespaced=false', '-o', 'name']))
    )
      .trim()
      .split('\n')
      .sort();
    assert.deepEqual(resources, [
      'namespaceusages.podmeter.io',
      'noderetirements.podmeter.io',
      'nodeusages.podmeter.io',
      'workloadusages.podmeter.io',
    ]);
    // The schemas belong to the operator: the objects here are built from them.
    for (const crd of crds) {
      const version = crd.spec.versions.find((v) => v.served && v.storage)!;
      const schema = version.schema.openAPIV3Schema;
      const { kind, plural } = crd.spec.names;
      const name = `${TEST_PREFIX}${plural}`;
      const object: K8sObject & { spec?: unknown } = {
        apiVersion: `${crd.spec.group}/${version.name}`,
        kind,
        metadata: { name },
      };
      if (schema.properties?.spec) object.spec = sample(schema.properties.spec);
      await must(cluster.kubectl(['create', '-f', '-'], { input: JSON.stringify(object) }));
      const columnsOf = async () => {
        const table = await must(cluster.kubectl(['get', plural]));
        const header = table
          .split('\n')[0]!
          .split(/\s{2,}/)
          .map((h) => h.trim());
        const columns = version.additionalPrinterColumns.filter((c) => !c.priority).map((c) => c.name.toUpperCase());
        assert.deepEqual(header, ['NAME', ...columns], `${kind} columns`);
        await must(cluster.kubectl(['delete', plural, name]));
      };
      if (schema.properties?.status === undefined) {
        await columnsOf(); // (NodeRetirements: spec only, written once)
        continue;
      }
      const patch = (status: unknown) =>
        cluster.kubectl([
          'patch',
          plural,
          name,
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify({ status }),
        ]);
      const statusSchema = schema.properties.status;
      const good = sample(statusSchema) as Record<string, unknown>;
      const ok = await patch(good);
      assert.equal(ok.code, 0, `${kind} status built from its schema: ${ok.stderr}`);
      // A decimal counter that is not one is refused, naming the field.
      const counter = Object.entries(statusSchema.properties ?? {}).find(
        ([, p]) => p.type === 'string' && p.pattern?.includes('[0-9]'),
      )?.[0];
      assert.ok(counter !== undefined, `${kind} has decimal counters`);
      const bad = await patch({ ...good, [counter]: '12e3' });
      assert.notEqual(bad.code, 0, `${kind} status.${counter}=12e3 must be refused`);
      assert.match(bad.stderr, new RegExp(`status\\.${counter}.*should match`));
      await columnsOf();
    }
  });

  const agentSa = `${release}-agent`;
  const operatorSa = `${release}-operator`;
  // Bound to a pod of the agent on the node, as the kubelet projects it: the chart's admission policy reads the node from it.
  const agentToken = await boundAgentToken(cluster, node, { namespace: ns, name: agentSa });
  const operatorToken = (await must(cluster.kubectl(['create', 'token', operatorSa, '-n', ns]))).trim();

  await t.test(
    'kubectl auth can-i: the chart ServiceAccounts can do their job and cannot read secrets or write elsewhere',
    async () => {
      const cases: [string, string, string[], 'yes' | 'no'][] = [
        ['agent', agentToken, ['watch', 'pods', '--all-namespaces'], 'yes'],
        ['agent', agentToken, ['patch', 'pods', '-n', 'default'], 'yes'],
        ['agent', agentToken, ['get', 'nodes'], 'yes'],
        ['agent', agentToken, ['patch', 'nodes'], 'yes'],
        ['agent', agentToken, ['get', 'secrets', '-n', ns], 'no'],
        ['agent', agentToken, ['list', 'secrets', '--all-namespaces'], 'no'],
        ['agent', agentToken, ['create', 'pods', '-n', 'default'], 'no'],
        ['agent', agentToken, ['delete', 'pods', '-n', 'default'], 'no'],
        ['agent', agentToken, ['update', 'pods', '-n', 'default'], 'no'],
        ['agent', agentToken, ['create', 'pods/exec', '-n', 'default'], 'no'],
        ['agent', agentToken, ['list', 'nodes'], 'yes'], // peer classes: every node's zone, region and pod CIDRs
        ['agent', agentToken, ['watch', 'servicecidrs.networking.k8s.io'], 'yes'],
        ['agent', agentToken, ['delete', 'nodes'], 'no'],
        ['agent', agentToken, ['get', 'configmaps', '-n', 'default'], 'no'],
        ['agent', agentToken, ['patch', 'daemonsets.apps', '-n', ns], 'no'],
        ['agent', agentToken, ['create', 'namespaceusages.podmeter.io'], 'no'],
        ['operator', operatorToken, ['watch', 'pods', '--all-namespaces'], 'yes'],
        ['operator', operatorToken, ['watch', 'nodes'], 'yes'],
        ['operator', operatorToken, ['watch', 'replicasets.apps', '--all-namespaces'], 'yes'],
        ['operator', operatorToken, ['watch', 'jobs.batch', '--all-namespaces'], 'yes'],
        ['operator', operatorToken, ['create', 'leases.coordination.k8s.io', '-n', ns], 'yes'],
        ['operator', operatorToken, ['update', 'leases.coordination.k8s.io/podmeter-operator', '-n', ns], 'yes'],
        ['operator', operatorToken, ['update', 'leases.coordination.k8s.io/other', '-n', ns], 'no'],
        ['operator', operatorToken, ['create', 'configmaps', '-n', ns], 'yes'],
        ['operator', operatorToken, ['update', 'configmaps/podmeter-budget', '-n', ns], 'yes'],
        ['operator', operatorToken, ['create', 'namespaceusages.podmeter.io'], 'yes'],
        ['operator', operatorToken, ['update', 'nodeusages.podmeter.io', '--subresource=status'], 'yes'],
        ['operator', operatorToken, ['create', 'events', '-n', 'default'], 'yes'],
        ['operator', operatorToken, ['get', 'secrets', '-n', ns], 'no'],
        ['operator', operatorToken, ['list', 'secrets', '--all-namespaces'], 'no'],
        ['operator', operatorToken, ['get', 'pods/log', '-n', 'default'], 'no'],
        ['operator', operatorToken, ['patch', 'pods', '-n', 'default'], 'no'],
        ['operator', operatorToken, ['patch', 'nodes'], 'no'],
        ['operator', operatorToken, ['update', 'configmaps/other', '-n', ns], 'no'],
        ['operator', operatorToken, ['get', 'configmaps', '-n', 'default'], 'no'],
        ['operator', operatorToken, ['create', 'leases.coordination.k8s.io', '-n', 'default'], 'no'],
        ['operator', operatorToken, ['delete', 'namespaceusages.podmeter.io'], 'no'],
        ['operator', operatorToken, ['delete', 'workloadusages.podmeter.io'], 'yes'],
        ['operator', operatorToken, ['update', 'deployments.apps', '-n', ns], 'no'],
        [
          'operator',
          operatorToken,
          ['get', 'customresourcedefinitions.apiextensions.k8s.io/nodeusages.podmeter.io'],
          'yes',
        ],
        ['operator', operatorToken, ['get', 'customresourcedefinitions.apiextensions.k8s.io/other.example.com'], 'no'],
        [
          'operator',
          operatorToken,
          ['update', 'customresourcedefinitions.apiextensions.k8s.io/nodeusages.podmeter.io'],
          'no',
        ],
      ];
      const wrong: string[] = [];
      await Promise.all(
        cases.map(async ([who, token, args, want]) => {
          const got = await canI(cluster, token, args);
          if (got !== want) wrong.push(`${who} ${args.join(' ')}: ${got || '(error)'}, want ${want}`);
        }),
      );
      assert.deepEqual(wrong.sort(), []);
    },
  );

  await t.test('the real agent with the chart agent token does its whole job', async (st) => {
    const root = makeTestCgroup(st);
    const a = await makePod(cluster, root, { name: `${TEST_PREFIX}a`, namespace: ns, node });
    const b = await makePod(cluster, root, { name: `${TEST_PREFIX}b`, namespace: ns, node });
    const agent = await startAgentProcess(st, {
      cgroupRoot: root.path,
      args: [
        '--kubeconfig',
        tokenKubeconfig(cluster, agentToken, dir),
        '--node-name',
        node,
        '--namespace',
        ns,
        '--annotate-interval',
        '1',
        '--annotate-budget',
        '20',
        '--interval',
        '1',
      ],
    });
    const topo = makeTopology(st); // over a veth pair: loopback is not network traffic
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
        (await annotations(cluster, 'pod', `${TEST_PREFIX}a`, ns))['podmeter.io/egress-bytes'] === '1000'
          ? true
          : undefined,
      15_000,
    );
    await waitFor(
      'node annotation',
      async () => (await annotations(cluster, 'node', node))['podmeter.io/bpf-map-bytes'],
      15_000,
    );
    assert.equal(
      (await agent.cgroups()).find((v) => v.uid === b.uid)?.pod,
      `${TEST_PREFIX}b`,
      'pod identity from the watch',
    );
    assert.deepEqual(permissionErrors(agent.logs), [], 'no permission errors');
  });

  await t.test('the real operator with the chart operator token, and its dashboard metrics', async (st) => {
    const port = await freePort();
    const child = spawn(
      PODMETER,
      [
        'operator',
        '--kubeconfig',
        tokenKubeconfig(cluster, operatorToken, dir),
        '--listen',
        `127.0.0.1:${port}`,
        '--log-format',
        'json',
        `--admission-policy=${release}-annotations`,
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, POD_NAMESPACE: ns, POD_NAME: `${TEST_PREFIX}operator-0` },
      },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    afterOrSignal(st, async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const metrics = await waitFor(
      'operator /metrics',
      async () => {
        if (child.exitCode !== null) throw new Error(`operator exited ${child.exitCode}:\n${stderr}`);
        try {
          const res = await fetch(`http://127.0.0.1:${port}/metrics`);
          return res.ok ? await res.text() : undefined;
        } catch {
          return undefined;
        }
      },
      20_000,
    );
    const { queries } = await monitoringObjects(bin);
    assert.deepEqual(
      missingMetrics(queries, exportedNames(metrics), isOperatorMetric),
      [],
      'dashboard metrics the operator does not export',
    );
    // Its job with only the chart's RBAC: the Lease, the budget ConfigMap, a NodeUsage for the node.
    await waitFor(
      'leader election Lease',
      async () => (await cluster.kubectl(['get', 'leases', '-n', ns, '-o', 'name'])).stdout.trim() || undefined,
      30_000,
    );
    await waitFor(
      'budget ConfigMap',
      async () =>
        (await cluster.kubectl(['get', 'configmap', 'podmeter-budget', '-n', ns])).code === 0 ? true : undefined,
      30_000,
    );
    await waitFor(
      'NodeUsage',
      async () => ((await cluster.kubectl(['get', 'nodeusage', node])).code === 0 ? true : undefined),
      30_000,
    );
    // The CRD check at start (operator/crds.ts) read the chart's CRDs with the chart's RBAC.
    assert.doesNotMatch(stderr, /cannot read the usage CRDs/, 'the operator may read its CRDs');
    // The chart's admission policy, read with the chart's RBAC.
    await waitFor(
      'podmeter_admission_policy_enforced 1',
      async () =>
        /^podmeter_admission_policy_enforced 1$/m.test(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())
          ? true
          : undefined,
      20_000,
    );
    assert.doesNotMatch(stderr, /forbidden|\b403\b/i, 'no permission errors');
  });

  await t.test(
    'helm upgrade with changed values: operator and monitors go, the agent follows; NOTES warns about Pod Security',
    async () => {
      await must(cluster.kubectl(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce-']));
      const r = await helm(bin, [
        'upgrade',
        release,
        CHART,
        '--namespace',
        ns,
        '--values',
        path.join(CHART, 'ci/operator-off-values.yaml'),
        '--set',
        'agent.interval=20',
        ...kc,
      ]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /REVISION: 2/);
      assert.match(r.stdout, new RegExp(`WARNING: namespace "${ns}" does not enforce the "privileged" Pod Security`));
      await must(cluster.kubectl(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=privileged']));

      const ds = await kubectlJson<Workload>(cluster, ['get', 'daemonset', `${release}-agent`, '-n', ns]);
      assert.ok(ds.spec.template.spec.containers[0]?.args.includes('--interval=20'));
      const left = await cluster.kubectl([
        'get',
        'deployment,service,poddisruptionbudget,servicemonitor,podmonitor,prometheusrule,configmap',
        '-n',
        ns,
        '-l',
        `app.kubernetes.io/instance=${release}`,
        '-o',
        'name',
      ]);
      assert.equal(left.code, 0, left.stderr);
      assert.deepEqual(left.stdout.trim().split('\n').sort(), [`service/${release}-agent`]);
      const history = await helm(bin, ['history', release, '--namespace', ns, '-o', 'json', ...kc]);
      assert.deepEqual(
        (JSON.parse(history.stdout) as { revision: number; status: string }[]).map((h) => [h.revision, h.status]),
        [
          [1, 'superseded'],
          [2, 'deployed'],
        ],
      );
    },
  );

  await t.test('helm uninstall removes every object; the CRDs stay (Helm never deletes crds/)', async () => {
    const r = await helm(bin, ['uninstall', release, '--namespace', ns, ...kc]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const left = await cluster.kubectl([
      'get',
      'daemonsets,deployments,services,serviceaccounts,configmaps,roles,rolebindings,clusterroles,clusterrolebindings,poddisruptionbudgets,servicemonitors,podmonitors,prometheusrules',
      '--all-namespaces',
      '-l',
      `app.kubernetes.io/instance=${release}`,
      '-o',
      'name',
    ]);
    assert.equal(left.code, 0, left.stderr);
    assert.equal(left.stdout.trim(), '');
    for (const crd of crds) await must(cluster.kubectl(['get', 'crd', crd.metadata.name]));
  });
});
