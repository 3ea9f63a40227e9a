/**
 * The chart without a cluster, with the real helm (test/cluster/build-tools):
 * lint and template over every ci/*-values.yaml scenario, the values schema
 * and the values documentation, the agent's exact privileges (so a change
 * that widens them fails here), the agent RBAC equal to
 * deploy/agent-rbac.yaml, the operator's restricted pods, the rendered
 * deploy/manifests being current, and the Dockerfile against the repository.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { run } from '../cluster/cluster.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import { readPeerClassesFile } from '../../agent/peers/config.ts';
import {
  agentContainer,
  agentDaemonSet,
  CHART,
  ciValues,
  findObject,
  findObjects,
  helm,
  mustHelm,
  parseDocs,
  render,
  ROOT,
  toolsDir,
  type Dashboard,
  type K8sObject,
} from './chart.ts';
import {
  hasPodTemplate,
  PROBES,
  type Endpoint,
  type JsonSchema,
  type Monitor,
  type RecordingRuleGroup,
  type Workload,
} from './manifests.ts';

/** The first endpoint of a ServiceMonitor or a PodMonitor. */
function monitorEndpoint(monitor: Monitor): Endpoint {
  const endpoint = (monitor.spec.endpoints ?? monitor.spec.podMetricsEndpoints)?.[0];
  assert.ok(endpoint, `${monitor.kind} has an endpoint`);
  return endpoint;
}

test('helm lint --strict passes with the defaults and every ci scenario', async () => {
  const bin = await toolsDir();
  for (const values of [undefined, ...ciValues()]) {
    const r = await helm(bin, ['lint', '--strict', CHART, ...(values ? ['--values', values] : [])]);
    assert.equal(r.code, 0, `helm lint ${values ?? '(defaults)'}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

test('helm template renders every ci scenario, with what each scenario is about', async () => {
  const bin = await toolsDir();
  const scenarios = new Map<string, K8sObject[]>();
  for (const values of ciValues()) scenarios.set(path.basename(values), await render(bin, { values: [values] }));
  assert.deepEqual(
    [...scenarios.keys()],
    [
      'access-values.yaml',
      'custom-cgroup-root-values.yaml',
      'default-values.yaml',
      'metrics-auth-off-values.yaml',
      'monitoring-on-values.yaml',
      'network-policy-values.yaml',
      'operator-off-values.yaml',
    ],
  );

  const kinds = (objects: K8sObject[]) => objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  const core = [
    'ClusterRole/podmeter-agent',
    'ClusterRoleBinding/podmeter-agent',
    'DaemonSet/podmeter-agent',
    'Role/podmeter-agent',
    'RoleBinding/podmeter-agent',
    'Service/podmeter-agent',
    'ServiceAccount/podmeter-agent',
    // On by default (issue 24): only the agent writes podmeter.io/ annotations.
    'ValidatingAdmissionPolicy/podmeter-annotations',
    'ValidatingAdmissionPolicyBinding/podmeter-annotations',
  ];
  const operator = [
    'ClusterRole/podmeter-operator',
    'ClusterRoleBinding/podmeter-operator',
    'Deployment/podmeter-operator',
    'PodDisruptionBudget/podmeter-operator',
    'Role/podmeter-operator',
    'RoleBinding/podmeter-operator',
    'Service/podmeter-operator',
    'ServiceAccount/podmeter-operator',
  ];
  // On by default (issue 23): one policy per component.
  const policies = ['NetworkPolicy/podmeter-agent', 'NetworkPolicy/podmeter-operator'];
  const monitoring = [
    'ConfigMap/podmeter-dashboard',
    'PodMonitor/podmeter',
    'PrometheusRule/podmeter',
    'PrometheusRule/podmeter-opencost',
    'ServiceMonitor/podmeter',
  ];
  // metricsAuth kubernetes (the default): the token review role and the reader roles.
  const auth = [
    'ClusterRole/podmeter-api-reader',
    'ClusterRole/podmeter-metrics-reader',
    'ClusterRole/podmeter-token-reviewer',
    'ClusterRoleBinding/podmeter-token-reviewer',
  ];
  // ... and with a monitor on, the identity it scrapes with.
  const scraper = [
    'ClusterRoleBinding/podmeter-scraper',
    'Secret/podmeter-scraper-token',
    'ServiceAccount/podmeter-scraper',
  ];
  assert.deepEqual(kinds(scenarios.get('default-values.yaml')!), [...core, ...operator, ...auth, ...policies].sort());
  assert.deepEqual(
    kinds(scenarios.get('operator-off-values.yaml')!),
    [...core, ...auth, 'NetworkPolicy/podmeter-agent'].sort(),
  );
  assert.deepEqual(
    kinds(scenarios.get('monitoring-on-values.yaml')!),
    [...core, ...operator, ...monitoring, ...auth, ...scraper, ...policies].sort(),
  );
  assert.deepEqual(
    kinds(scenarios.get('metrics-auth-off-values.yaml')!),
    [...core, ...operator, 'ServiceMonitor/podmeter', ...policies].sort(),
  );
  assert.deepEqual(
    kinds(scenarios.get('network-policy-values.yaml')!),
    [...core, ...operator, ...auth, ...policies].sort(),
  );
  const readerBindings = ['ClusterRoleBinding/podmeter-api-reader', 'ClusterRoleBinding/podmeter-metrics-reader'];
  assert.deepEqual(
    kinds(scenarios.get('access-values.yaml')!),
    [...core, ...operator, ...auth, ...scraper, ...readerBindings, ...policies, 'PodMonitor/podmeter'].sort(),
  );

  const noAdmission = await render(bin, { set: ['admission.enabled=false'] });
  assert.deepEqual(
    kinds(noAdmission),
    kinds(scenarios.get('default-values.yaml')!).filter((k) => !k.startsWith('ValidatingAdmissionPolicy')),
    'admission.enabled=false: only the policy goes',
  );

  // Everything namespaced goes to the release namespace.
  for (const [name, objects] of scenarios) {
    for (const o of objects) {
      if (!/^(Cluster|ValidatingAdmissionPolicy)/.test(o.kind))
        assert.equal(o.metadata.namespace, 'podmeter', `${name}: ${o.kind}/${o.metadata.name}`);
    }
  }

  // A custom cgroup root: the host path changes, the container path and flag do not.
  const custom = scenarios.get('custom-cgroup-root-values.yaml')!;
  const volumes = Object.fromEntries(
    (agentDaemonSet(custom).spec.template.spec.volumes ?? []).map((v) => [v.name, v.hostPath?.path]),
  );
  assert.deepEqual(volumes, {
    cgroup: '/sys/fs/cgroup/unified',
    bpffs: '/run/bpffs',
    state: '/var/lib/podmeter-agent',
  });
  const args = agentContainer(custom).args;
  assert.ok(args.includes('--cgroup-root=/host/sys/fs/cgroup'));
  assert.ok(
    args.includes('--interval=15') &&
      args.includes('--annotate-interval=120') &&
      args.includes('--annotate-budget=0.5'),
  );
  assert.equal(args.at(-1), '--log-level=debug', 'extraArgs come last (a later flag wins)');
  assert.match(agentContainer(custom).image, /^ghcr\.io\/podmeter\/podmeter@sha256:[0-9a-f]{64}$/);

  // The monitoring scenario: the sidecar label, the user's labels, job/node relabelings, honorLabels.
  const mon = scenarios.get('monitoring-on-values.yaml')!;
  const dashboard = findObject(mon, 'ConfigMap', '-dashboard');
  assert.equal(dashboard.metadata.labels?.grafana_dashboard, '1');
  assert.equal(dashboard.metadata.annotations?.grafana_folder, 'Networking');
  assert.equal((JSON.parse(dashboard.data['podmeter.json'] ?? '{}') as Dashboard).uid, 'podmeter');
  for (const kind of ['ServiceMonitor', 'PodMonitor'] as const) {
    const monitor = findObject(mon, kind);
    assert.equal(monitor.metadata.labels?.release, 'kube-prometheus-stack');
    const endpoint = monitorEndpoint(monitor);
    assert.equal(endpoint.port, 'http-metrics');
    assert.equal(endpoint.honorLabels, true);
    assert.deepEqual(
      endpoint.relabelings.map((r) => [r.targetLabel, r.replacement ?? null]),
      [
        ['job', 'podmeter-$1'],
        ['node', null],
      ],
    );
  }
  const rule = findObject(mon, 'PrometheusRule', 'podmeter');
  assert.deepEqual(
    rule.spec.groups[0]?.rules.map((r) => [r.alert, r.labels.team]),
    [
      ['PodmeterAgentDown', 'platform'],
      ['PodmeterAttachErrors', 'platform'],
      ['PodmeterCountersStale', 'platform'],
      ['PodmeterBpfMapMemoryHigh', 'platform'],
      ['PodmeterAnnotationBudgetExhausted', 'platform'],
      ['PodmeterAnnotationWritesRejected', 'platform'],
    ],
  );
  // OpenCost's recording rules: their own PrometheusRule, with the labels the user's Prometheus selects.
  const opencost = findObject(mon, 'PrometheusRule', '-opencost');
  assert.equal(opencost.metadata.labels?.release, 'kube-prometheus-stack');
  assert.deepEqual(
    (opencost.spec.groups as unknown as RecordingRuleGroup[])[0]!.rules.map((r) => [
      r.record,
      r.labels?.internet,
      r.labels?.same_zone,
      r.labels?.same_region,
    ]),
    [
      ['kubecost_pod_network_egress_bytes_total', 'false', 'true', 'true'],
      ['kubecost_pod_network_egress_bytes_total', 'false', 'false', 'true'],
      ['kubecost_pod_network_egress_bytes_total', 'false', 'false', 'false'],
      ['kubecost_pod_network_egress_bytes_total', 'true', 'false', 'false'],
    ],
  );
});

test('pod templates carry neither helm.sh/chart nor a version (a chart bump restarts nothing)', async () => {
  const bin = await toolsDir();
  const objects = await render(bin, { values: [path.join(CHART, 'ci/monitoring-on-values.yaml')] });
  for (const o of objects.filter(hasPodTemplate)) {
    const labels = o.spec.template.metadata.labels;
    assert.ok(!('helm.sh/chart' in labels), `${o.kind}/${o.metadata.name}`);
    assert.ok(!('app.kubernetes.io/version' in labels), `${o.kind}/${o.metadata.name}`);
    // The selector is a subset of the template labels, and stable.
    for (const [k, v] of Object.entries(o.spec.selector.matchLabels ?? {})) assert.equal(labels[k], v);
  }
  for (const o of objects)
    assert.equal(
      o.metadata.labels?.['helm.sh/chart'],
      'podmeter-0.1.0',
      `${o.kind}/${o.metadata.name} has the chart label`,
    );
});

test('agent.peerClasses: a ConfigMap the agent reads as its --peer-classes-file, mounted; a change rolls the agents; bad classes rejected', async (t) => {
  const bin = await toolsDir();
  const dir = mkdtempSync(path.join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const valuesFile = (name: string, peerClasses: unknown) => {
    const file = path.join(dir, name);
    writeFileSync(file, JSON.stringify({ agent: { peerClasses } }));
    return file;
  };
  const classes = { onprem: ['10.200.0.0/16'], storage: ['52.216.0.0/15', '2600:1f00::/40'] };
  const objects = await render(bin, { values: [valuesFile('classes.json', classes)] });
  const configMap = findObject(objects, 'ConfigMap', '-peer-classes');
  // The agent's own parser reads what the chart renders.
  const file = path.join(dir, 'peer-classes');
  writeFileSync(file, configMap.data['peer-classes'] ?? '');
  const parsed = readPeerClassesFile(file);
  assert.deepEqual(
    parsed.map((c) => [c.name, c.prefixes.length]),
    [
      ['onprem', 1],
      ['storage', 2],
    ],
  );
  const container = agentContainer(objects);
  assert.ok(container.args.includes('--peer-classes-file=/etc/podmeter/classes/peer-classes'));
  assert.deepEqual(
    container.volumeMounts?.find((m) => m.name === 'peer-classes'),
    { name: 'peer-classes', mountPath: '/etc/podmeter/classes', readOnly: true },
  );
  const spec = agentDaemonSet(objects).spec.template;
  assert.deepEqual(
    spec.spec.volumes?.find((v) => v.name === 'peer-classes'),
    { name: 'peer-classes', configMap: { name: configMap.metadata.name } },
  );
  // The agent reads the file at start: another set of classes is another pod template.
  const checksum = (o: K8sObject[]) => agentDaemonSet(o).spec.template.metadata.annotations?.['checksum/peer-classes'];
  const changed = await render(bin, {
    values: [valuesFile('changed.json', { ...classes, onprem: ['10.201.0.0/16'] })],
  });
  assert.match(checksum(objects) ?? '', /^[0-9a-f]{64}$/);
  assert.notEqual(checksum(changed), checksum(objects));
  // Without classes: no ConfigMap, flag, mount or annotation.
  const plain = await render(bin);
  assert.equal(findObjects(plain, 'ConfigMap').filter((o) => o.metadata.name.endsWith('-peer-classes')).length, 0);
  assert.ok(!agentContainer(plain).args.some((a) => a.startsWith('--peer-classes-file')));
  assert.equal(checksum(plain), undefined);
  // The schema names the bad class.
  const bad: [unknown, RegExp][] = [
    [{ external: ['10.0.0.0/8'] }, /external/],
    [{ 'On Prem': ['10.0.0.0/8'] }, /On Prem/],
    [{ onprem: ['10.0.0.0'] }, /at '\/agent\/peerClasses\/onprem\/0'/],
    [{ onprem: [] }, /at '\/agent\/peerClasses\/onprem'/],
    [Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`c${i}`, ['10.0.0.0/8']])), /at '\/agent\/peerClasses'/],
  ];
  for (const [value, message] of bad) {
    const r = await helm(bin, ['template', 'podmeter', CHART, '--values', valuesFile('bad.json', value)]);
    assert.notEqual(r.code, 0, `${JSON.stringify(value)} must be rejected`);
    assert.match(r.stderr, message, `${JSON.stringify(value)}: ${r.stderr}`);
  }
});

test('values.schema.json rejects bad values with the key and the reason', async () => {
  const bin = await toolsDir();
  const cases: [string[], RegExp][] = [
    [['agent.interval=-1'], /at '\/agent\/interval': exclusiveMinimum: got -1, want 0/],
    [['agent.interval=0'], /at '\/agent\/interval': exclusiveMinimum: got 0, want 0/],
    [['agent.interval=soon'], /at '\/agent\/interval': 'soon' does not match pattern/],
    [['agent.retention=-5'], /at '\/agent\/retention': minimum: got -5, want 0/],
    [['agent.port=70000'], /at '\/agent\/port': maximum: got 70,000, want 65,535/],
    [['agent.port=0'], /at '\/agent\/port': minimum: got 0, want 1/],
    [['operator.port=abc'], /at '\/operator\/port': got string, want integer/],
    [['agent.discover=everything'], /at '\/agent\/discover': value must be one of 'pods', 'children', 'auto'/],
    [['agent.logLevel=verbose'], /at '\/agent\/logLevel': value must be one of/],
    [['agent.cgroupRoot=sys/fs/cgroup'], /at '\/agent\/cgroupRoot'/],
    [['agent.annotateBudget=-2'], /at '\/agent\/annotateBudget': minimum: got -2, want 0/],
    [['agent.intervall=5'], /at '\/agent': additional properties 'intervall' not allowed/],
    [['agent.extraArgs={interval=5}'], /at '\/agent\/extraArgs\/0'/],
    [['monitoring.serviceMonitor.interval=30'], /at '\/monitoring\/serviceMonitor\/interval'/],
    [['image.digest=latest'], /at '\/image\/digest'/],
    [['metricsAuth=basic'], /at '\/metricsAuth': value must be one of 'none', 'kubernetes'/],
    [['readers.metrics[0].namespace=monitoring'], /at '\/readers\/metrics\/0': missing property 'name'/],
    [['tls.secret=x'], /at '\/tls': additional properties 'secret' not allowed/],
  ];
  for (const [set, message] of cases) {
    const r = await helm(bin, ['template', 'podmeter', CHART, ...set.flatMap((s) => ['--set', s])]);
    assert.notEqual(r.code, 0, `--set ${set.join(' ')} must be rejected`);
    assert.match(r.stderr, /values don't meet the specifications of the schema/, set.join(' '));
    assert.match(r.stderr, message, `--set ${set.join(' ')}: ${r.stderr}`);
  }
  // The good edge values pass.
  // The good edge values pass (helm --set leaves decimals as strings: they are accepted as such).
  await mustHelm(bin, [
    'template',
    'podmeter',
    CHART,
    '--set',
    'agent.interval=0.5,agent.retention=0,agent.annotateBudget=0,agent.port=65535',
  ]);
  await mustHelm(bin, [
    'template',
    'podmeter',
    CHART,
    '--set',
    'agent.interval=500ms,agent.annotateInterval=2m,agent.annotateBudget=0.25',
  ]);
});

test('every values.yaml key is documented, in one style, and covered by the schema', () => {
  const lines = readFileSync(path.join(CHART, 'values.yaml'), 'utf8').split('\n');
  const schema = JSON.parse(readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as JsonSchema;
  const undocumented: string[] = [];
  const stack: { indent: number; key: string }[] = [];
  let keys = 0;
  for (const [i, line] of lines.entries()) {
    const m = /^(\s*)([A-Za-z][\w.-]*):(\s|$)/.exec(line);
    if (!m) continue;
    const indent = m[1]!.length;
    while (stack.length > 0 && stack.at(-1)!.indent >= indent) stack.pop();
    // A key inside a list item (e.g. tolerations' "- operator: Exists") is data, not a value key.
    const inList = lines
      .slice(0, i)
      .reverse()
      .find((l) => l.trim() !== '' && !l.trim().startsWith('#') && /^\s*/.exec(l)![0].length < indent);
    if (inList?.trim().startsWith('-')) continue;
    const parent = stack.map((s) => s.key);
    stack.push({ indent, key: m[2]! });
    // Data maps (labels, selectors) hold user keys: their entries need no comment.
    let node: JsonSchema | undefined = schema;
    for (const k of parent) node = node?.properties?.[k];
    if (node !== undefined && node.properties === undefined && parent.length > 0) continue;
    keys++;
    const dotted = [...parent, m[2]].join('.');
    if (!lines[i - 1]?.trim().startsWith('# -- ')) undocumented.push(dotted);
    assert.ok(node?.properties?.[m[2]!] !== undefined, `values.schema.json has no entry for ${dotted}`);
  }
  assert.ok(keys > 60, `found only ${keys} keys`);
  assert.deepEqual(undocumented, [], 'keys without a "# -- " comment directly above');
  // Only one comment style: every comment line in values.yaml is the header or "# -- ".
  const firstKey = lines.findIndex((l) => /^\w/.test(l));
  const stray = lines.slice(firstKey).filter((l) => l.trim().startsWith('#') && !l.trim().startsWith('# -- '));
  assert.deepEqual(stray, []);
});

test('the agent DaemonSet: privileges, host access and mounts exactly as reviewed', async () => {
  const bin = await toolsDir();
  const objects = await render(bin);
  const pod = agentDaemonSet(objects).spec.template.spec;
  const container = agentContainer(objects);

  // Pod level: host PID (map owners), nothing else of the host's namespaces.
  assert.equal(pod.hostPID, true);
  assert.equal(pod.hostNetwork, undefined);
  assert.equal(pod.hostIPC, undefined);
  assert.equal(pod.shareProcessNamespace, undefined);
  assert.equal(pod.enableServiceLinks, false);
  assert.equal(pod.automountServiceAccountToken, true);
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.deepEqual(pod.securityContext, { seccompProfile: { type: 'RuntimeDefault' } });
  assert.equal(pod.initContainers, undefined);
  assert.equal(pod.containers.length, 1);

  assert.deepEqual(container.securityContext, {
    privileged: false,
    runAsUser: 0,
    runAsNonRoot: false,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    appArmorProfile: { type: 'Unconfined' },
    capabilities: {
      drop: ['ALL'],
      add: ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'DAC_READ_SEARCH', 'SYS_RESOURCE'],
    },
  });
  assert.deepEqual(container.volumeMounts, [
    { name: 'cgroup', mountPath: '/host/sys/fs/cgroup', readOnly: true },
    { name: 'bpffs', mountPath: '/host/sys/fs/bpf', mountPropagation: 'HostToContainer' },
    { name: 'state', mountPath: '/var/lib/podmeter' },
  ]);
  assert.deepEqual(pod.volumes, [
    { name: 'cgroup', hostPath: { path: '/sys/fs/cgroup', type: 'Directory' } },
    { name: 'bpffs', hostPath: { path: '/sys/fs/bpf', type: 'Directory' } },
    { name: 'state', hostPath: { path: '/var/lib/podmeter', type: 'DirectoryOrCreate' } },
  ]);
  assert.deepEqual(
    container.env.map((e) => [e.name, e.valueFrom.fieldRef.fieldPath]),
    [
      ['NODE_NAME', 'spec.nodeName'],
      ['POD_NAMESPACE', 'metadata.namespace'],
    ],
  );
  assert.deepEqual(container.args, [
    'agent',
    '--discover=pods',
    '--cgroup-root=/host/sys/fs/cgroup',
    '--bpffs=/host/sys/fs/bpf/podmeter',
    '--state-dir=/var/lib/podmeter',
    '--listen=0.0.0.0:9471',
    '--metrics-auth=kubernetes',
    '--interval=10',
    '--retention=600',
    '--annotate-interval=60',
    '--annotate-budget=1',
    '--log-level=info',
    '--log-format=json',
    '--conntrack-netns=/proc/1/ns/net',
  ]);
  assert.ok(!container.args.some((a) => a.startsWith('--kubeconfig')), 'in-cluster config, no --kubeconfig');
  assert.deepEqual(container.ports, [{ name: 'http-metrics', containerPort: 9471, protocol: 'TCP' }]);
  assert.deepEqual(container.resources, { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '256Mi' } });

  // Each added capability has its one-line reason right above it in the template.
  const template = readFileSync(path.join(CHART, 'templates/agent/daemonset.yaml'), 'utf8').split('\n');
  for (const cap of container.securityContext.capabilities.add ?? []) {
    const at = template.findIndex((l) => l.trim() === `- ${cap}`);
    assert.match(template[at - 1] ?? '', new RegExp(`^\\s*# ${cap}: \\S`), `the comment naming what needs ${cap}`);
  }
});

test('the operator: 2 replicas, non-root, no capabilities, read-only root filesystem', async () => {
  const bin = await toolsDir();
  const objects = await render(bin);
  const deployment = findObject(objects, 'Deployment', '-operator');
  assert.equal(deployment.spec.replicas, 2);
  const pod = deployment.spec.template.spec;
  assert.deepEqual(pod.securityContext, {
    runAsNonRoot: true,
    runAsUser: 65532,
    runAsGroup: 65532,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  assert.equal(pod.hostPID, undefined);
  assert.equal(pod.volumes, undefined);
  assert.equal(pod.enableServiceLinks, false);
  assert.equal(pod.containers.length, 1);
  const container = pod.containers[0]!;
  assert.deepEqual(container.securityContext, {
    privileged: false,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
  });
  assert.deepEqual(container.args, [
    'operator',
    '--listen=0.0.0.0:9472',
    '--metrics-auth=kubernetes',
    '--max-annotation-writes-per-second=50',
    '--admission-policy=podmeter-annotations',
    '--usage-retention=30d',
    '--log-level=info',
    '--log-format=json',
  ]);
  assert.deepEqual(
    container.env.map((e) => [e.name, e.valueFrom.fieldRef.fieldPath]),
    [
      ['POD_NAMESPACE', 'metadata.namespace'],
      ['POD_NAME', 'metadata.name'],
    ],
  );
  assert.equal(findObject(objects, 'PodDisruptionBudget').spec.maxUnavailable, 1);

  // The names the Role is limited to are the code's.
  const constant = (file: string, name: string) => {
    const m = new RegExp(`export const ${name} = '([^']+)'`).exec(readFileSync(path.join(ROOT, file), 'utf8'));
    assert.ok(m, `${file} has no ${name}`);
    return m[1]!;
  };
  const lease = constant('operator/main.ts', 'LEASE_NAME');
  const budget = constant('common/contract/budget.ts', 'BUDGET_CONFIGMAP');
  const role = findObject(objects, 'Role', '-operator');
  assert.deepEqual(role.rules, [
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [lease], verbs: ['get', 'update'] },
    { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
    { apiGroups: [''], resources: ['configmaps'], resourceNames: [budget], verbs: ['get', 'update', 'patch'] },
  ]);
  const clusterRole = findObject(objects, 'ClusterRole', '-operator');
  const verbsOf = (group: string, resource: string) =>
    clusterRole.rules
      .filter((r) => r.apiGroups?.includes(group) && r.resources?.includes(resource))
      .flatMap((r) => r.verbs);
  assert.deepEqual(verbsOf('', 'pods'), ['list', 'watch']);
  assert.deepEqual(verbsOf('', 'nodes'), ['list', 'watch']);
  assert.deepEqual(verbsOf('', 'secrets'), []);
  assert.deepEqual(verbsOf('', 'events'), ['create']);
  assert.ok(!clusterRole.rules.some((r) => r.verbs.includes('*') || r.resources?.includes('*')));
  // Deletes: only the usage objects the retention removes and a NodeUsage's rolled-up overflow (never a NamespaceUsage, never anything else).
  const deletes = clusterRole.rules.filter((r) => r.verbs.includes('delete'));
  assert.deepEqual(
    deletes.map((r) => [r.apiGroups, r.resources, r.verbs]),
    [
      [['podmeter.io'], ['workloadusages', 'nodeusages'], ['delete']],
      [['podmeter.io'], ['noderetirements'], ['get', 'list', 'create', 'delete']],
    ],
  );
});

test('agent and operator: a startup probe holds off liveness for 5 minutes (a slow start is not a crash loop)', async () => {
  const objects = await render(await toolsDir());
  for (const [kind, suffix] of [
    ['DaemonSet', '-agent'],
    ['Deployment', '-operator'],
  ] as const) {
    const [container] = findObject(objects, kind, suffix).spec.template.spec.containers;
    const { startupProbe: startup, livenessProbe: liveness } = container!;
    assert.deepEqual(startup.httpGet, liveness.httpGet, `${kind}: startup and liveness probe the same endpoint`);
    assert.ok(
      startup.periodSeconds * startup.failureThreshold >= 300,
      `${kind}: startup budget ${startup.periodSeconds * startup.failureThreshold} s`,
    );
  }
});

test('the chart agent RBAC has exactly the rules of deploy/agent-rbac.yaml', async () => {
  const bin = await toolsDir();
  const file = parseDocs(readFileSync(path.join(ROOT, 'deploy/agent-rbac.yaml'), 'utf8'));
  assert.ok(file.length > 0);
  for (const values of [undefined, path.join(CHART, 'ci/operator-off-values.yaml')]) {
    const objects = await render(bin, values ? { values: [values] } : {});
    // Each role of the file (ClusterRole, and Roles should it get any) has its twin in the chart.
    for (const role of [...findObjects(file, 'ClusterRole'), ...findObjects(file, 'Role')]) {
      assert.deepEqual(
        findObject(objects, role.kind, '-agent').rules,
        role.rules,
        `${role.kind} ${role.metadata.name}`,
      );
    }
    for (const kind of ['ClusterRole', 'Role'] as const) {
      const binding = findObject(objects, `${kind}Binding`, '-agent');
      assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind, name: 'podmeter-agent' });
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'podmeter-agent', namespace: 'podmeter' }]);
    }
  }
  // Nothing else in the chart grants the agent anything but the token review of metricsAuth kubernetes (tested below).
  const objects = await render(bin);
  const grants = [...findObjects(objects, 'ClusterRoleBinding'), ...findObjects(objects, 'RoleBinding')].filter((b) =>
    b.subjects.some((s) => s.name === 'podmeter-agent'),
  );
  const fileRoles = file
    .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
    .map((o) => `${o.kind}Binding/podmeter-agent`);
  assert.deepEqual(
    grants.map((b) => `${b.kind}/${b.metadata.name}`).sort(),
    [...fileRoles, 'ClusterRoleBinding/podmeter-token-reviewer'].sort(),
  );
});

test('deploy/manifests/podmeter.yaml is the chart rendered with its defaults (run deploy/manifests/render after a chart change)', async () => {
  const bin = await toolsDir();
  const r = await run(path.join(ROOT, 'deploy/manifests/render'), ['-'], {
    env: { ...process.env, HELM: path.join(bin, 'helm') },
  });
  assert.equal(r.code, 0, r.stderr);
  const committed = readFileSync(path.join(ROOT, 'deploy/manifests/podmeter.yaml'), 'utf8');
  assert.ok(
    committed === r.stdout,
    'deploy/manifests/podmeter.yaml is stale: run `HELM=<bin>/helm deploy/manifests/render`',
  );
  const objects = parseDocs(committed);
  const ns = findObject(objects, 'Namespace');
  assert.equal(ns.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
  assert.deepEqual(
    findObjects(objects, 'CustomResourceDefinition')
      .map((c) => c.metadata.name)
      .sort(),
    [
      'namespaceusages.podmeter.io',
      'noderetirements.podmeter.io',
      'nodeusages.podmeter.io',
      'workloadusages.podmeter.io',
    ],
  );
});

test('deploy/Dockerfile: every COPY source exists, the build runs the Makefile targets, no compiler in the final image', () => {
  const dockerfile = readFileSync(path.join(ROOT, 'deploy/Dockerfile'), 'utf8');
  const makefile = readFileSync(path.join(ROOT, 'Makefile'), 'utf8');
  // Join continuation lines, drop comments.
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages: string[][] = [];
  for (const line of instructions) {
    if (/^FROM /i.test(line)) stages.push([]);
    stages.at(-1)?.push(line);
  }
  assert.equal(stages.length, 2, 'a builder and a final stage');
  assert.match(dockerfile, /^ARG NODE_IMAGE=node:24-bookworm-slim$/m);
  assert.deepEqual(
    stages.map((s) => s[0]),
    ['FROM ${NODE_IMAGE} AS build', 'FROM ${NODE_IMAGE}'],
  );

  // Builder: COPY sources exist in the repository (the build context is its root).
  const [build, final] = stages as [string[], string[]];
  for (const line of build.filter((l) => /^COPY /.test(l))) {
    const parts = line
      .split(/\s+/)
      .slice(1)
      .filter((p) => !p.startsWith('--'));
    for (const src of parts.slice(0, -1))
      assert.ok(existsSync(path.join(ROOT, src)), `COPY source ${src} is not in the repository`);
  }
  // Everything `make build` reads is copied: the sources of each build rule.
  const copied = build
    .filter((l) => /^COPY /.test(l))
    .flatMap((l) => l.split(/\s+/).slice(1, -1))
    .map((p) => p.replace(/\/$/, ''));
  for (const needed of [
    'package.json',
    'package-lock.json',
    'Makefile',
    'tsconfig.json',
    'tsconfig.build.json',
    'bin',
    'bpf',
    'cli',
    'agent',
    'operator',
  ]) {
    assert.ok(copied.includes(needed), `the builder copies ${needed}`);
  }
  // The make invocation uses targets and a variable the Makefile has.
  const runs = build.filter((l) => /^RUN /.test(l)).join('\n');
  for (const target of ['clean', 'build']) {
    assert.match(runs, new RegExp(`make NODE_PKG=/usr/local ${target}\\b`));
    assert.match(makefile, new RegExp(`^${target}:`, 'm'), `Makefile target ${target}`);
  }
  assert.match(makefile, /^NODE\s+:= \$\(NODE_PKG\)\/bin\/node$/m, 'NODE_PKG decides which node make uses');
  assert.match(runs, /npm prune --omit=dev/);
  // The builder installs what the Makefile's setup installs for building (scripts/debian-packages' build group).
  const buildGroup = readFileSync(path.join(ROOT, 'scripts/debian-packages'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim().split(/\s+/))
    .filter(([name, group]) => name && group === 'build')
    .map(([name]) => name!);
  const apt = /apt-get install -y --no-install-recommends ([^&]+)/.exec(runs)?.[1]?.trim().split(/\s+/) ?? [];
  for (const p of ['clang', 'llvm', 'libbpf-dev', 'make', 'g++', 'python3']) {
    assert.ok(apt.includes(p), `builder installs ${p}`);
    assert.ok(buildGroup.includes(p), `scripts/debian-packages has ${p} in its build group`);
  }

  // Final stage: runtime only.
  const finalText = final.join('\n');
  const finalApt = /apt-get install -y --no-install-recommends ([^&]+)/.exec(finalText)?.[1]?.trim().split(/\s+/) ?? [];
  assert.deepEqual(finalApt, ['libbpf1']);
  for (const compiler of ['clang', 'llvm', 'gcc', 'g++', 'make', 'libbpf-dev', 'python3', 'build-essential']) {
    assert.ok(!finalApt.includes(compiler), `no ${compiler} in the final image`);
  }
  // Final COPYs come from the build stage, and name what the Makefile builds and the agent loads.
  const finalCopies = final.filter((l) => /^COPY /.test(l));
  assert.ok(
    finalCopies.every((l) => l.startsWith('COPY --from=build ')),
    'the final stage copies only from the builder',
  );
  const sources = finalCopies.flatMap((l) =>
    l
      .split(/\s+/)
      .slice(2, -1)
      .map((src) => src.replace(/^\/src\//, '').replace(/\/$/, '')),
  );
  const addons = /^ADDON\s+:= (.+)$/m.exec(makefile)?.[1]?.trim().split(/\s+/) ?? [];
  assert.deepEqual(sources.sort(), ['bin', 'build', 'node_modules', 'package.json', ...addons].sort());
  // Each addon is loaded from where it is copied to (common/paths.ts: nativeAddon(name) under agent/native/build/Release).
  const loaders = ['agent/paths.ts', 'common/memory.ts'].map((f) => readFileSync(path.join(ROOT, f), 'utf8')).join('');
  for (const addon of addons) {
    assert.match(addon, /^agent\/native\/build\/Release\/\w+\.node$/);
    assert.ok(loaders.includes(`nativeAddon('${path.basename(addon, '.node')}')`), `${addon} is loaded by name`);
  }
  assert.match(finalText, /ENTRYPOINT \["\/opt\/podmeter\/bin\/podmeter"\]/);
  assert.ok(statSync(path.join(ROOT, 'bin/podmeter')).mode & 0o111, 'bin/podmeter is executable');
});

test('metricsAuth kubernetes (the default): HTTPS probes, token review RBAC, reader roles, monitors with a token and TLS; none changes nothing', async () => {
  const bin = await toolsDir();
  const containers = (objects: K8sObject[]) => [
    agentContainer(objects),
    findObject(objects, 'Deployment', '-operator').spec.template.spec.containers[0]!,
  ];
  const defaults = await render(bin);
  for (const container of containers(defaults)) {
    for (const probe of PROBES) {
      assert.equal(container[probe].httpGet.scheme, 'HTTPS', `${container.name} ${probe}`);
      assert.match(container[probe].httpGet.path, /^\/(healthz|readyz)$/, 'probes use the paths that stay open');
    }
    assert.ok(container.args.includes('--metrics-auth=kubernetes'));
    assert.ok(!container.args.some((a) => a.startsWith('--tls-')), 'self-signed without tls.secretName');
  }
  // Exactly the two creates a token review needs, for the agent and the operator.
  assert.deepEqual(findObject(defaults, 'ClusterRole', '-token-reviewer').rules, [
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
  ]);
  assert.deepEqual(findObject(defaults, 'ClusterRoleBinding', '-token-reviewer').subjects, [
    { kind: 'ServiceAccount', name: 'podmeter-agent', namespace: 'podmeter' },
    { kind: 'ServiceAccount', name: 'podmeter-operator', namespace: 'podmeter' },
  ]);
  assert.deepEqual(findObject(defaults, 'ClusterRole', '-metrics-reader').rules, [
    { nonResourceURLs: ['/metrics'], verbs: ['get'] },
  ]);
  // The agent's API is authorised as /podmeter/api/v1/... (common/http/auth.ts authorizationPath).
  assert.deepEqual(findObject(defaults, 'ClusterRole', '-api-reader').rules, [
    { nonResourceURLs: ['/podmeter/api/v1/*', '/maps', '/maps/*', '/metrics'], verbs: ['get'] },
  ]);
  const authSource = readFileSync(path.join(ROOT, 'common/http/auth.ts'), 'utf8');
  assert.match(
    authSource,
    /`\/podmeter\$\{path\}`/,
    'the prefix the api-reader role grants is the one the agent asks about',
  );

  // The monitors: https, the scraper's token, insecureSkipVerify for the self-signed certificate.
  const mon = await render(bin, { values: [path.join(CHART, 'ci/monitoring-on-values.yaml')] });
  for (const kind of ['ServiceMonitor', 'PodMonitor'] as const) {
    const endpoint = monitorEndpoint(findObject(mon, kind));
    assert.equal(endpoint.scheme, 'https', kind);
    assert.deepEqual(
      endpoint.authorization,
      { type: 'Bearer', credentials: { name: 'podmeter-scraper-token', key: 'token' } },
      kind,
    );
    assert.deepEqual(endpoint.tlsConfig, { insecureSkipVerify: true }, kind);
  }
  const secret = findObject(mon, 'Secret', '-scraper-token');
  assert.equal(secret.type, 'kubernetes.io/service-account-token');
  assert.equal(secret.metadata.annotations?.['kubernetes.io/service-account.name'], 'podmeter-scraper');
  assert.deepEqual(findObject(mon, 'ClusterRoleBinding', '-scraper').roleRef.name, 'podmeter-metrics-reader');

  // A mounted certificate, reader bindings, a verified PodMonitor and the NetworkPolicy.
  const access = await render(bin, { values: [path.join(CHART, 'ci/access-values.yaml')] });
  for (const [i, container] of containers(access).entries()) {
    assert.ok(
      container.args.includes('--tls-cert-file=/etc/podmeter/tls/tls.crt') &&
        container.args.includes('--tls-key-file=/etc/podmeter/tls/tls.key'),
      container.name,
    );
    assert.deepEqual(
      container.volumeMounts?.find((m) => m.name === 'tls'),
      { name: 'tls', mountPath: '/etc/podmeter/tls', readOnly: true },
    );
    const pod =
      i === 0
        ? agentDaemonSet(access).spec.template.spec
        : findObject(access, 'Deployment', '-operator').spec.template.spec;
    assert.deepEqual(
      pod.volumes?.find((v) => v.name === 'tls'),
      { name: 'tls', secret: { secretName: 'podmeter-tls' } },
    );
  }
  assert.deepEqual(findObject(access, 'ClusterRoleBinding', '-metrics-reader').subjects, [
    { kind: 'ServiceAccount', name: 'prometheus-k8s', namespace: 'monitoring' },
  ]);
  assert.deepEqual(findObject(access, 'ClusterRoleBinding', '-api-reader').subjects, [
    { kind: 'ServiceAccount', name: 'node-admin', namespace: 'podmeter' },
  ]);
  assert.deepEqual(monitorEndpoint(findObject(access, 'PodMonitor')).tlsConfig, {
    ca: { secret: { name: 'podmeter-tls', key: 'ca.crt' } },
    serverName: 'podmeter-agent.podmeter.svc',
  });
  // Prometheus's pods in its namespace, nothing else.
  for (const component of ['agent', 'operator']) {
    assert.deepEqual(findObject(access, 'NetworkPolicy', `-${component}`).spec.ingress, [
      {
        ports: [{ port: 'http-metrics', protocol: 'TCP' }],
        from: [
          {
            namespaceSelector: {
              matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['monitoring'] }],
            },
            podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } },
          },
        ],
      },
    ]);
  }

  // metricsAuth none: plain HTTP probes and scrapes, no token review, no reader roles.
  const off = await render(bin, { values: [path.join(CHART, 'ci/metrics-auth-off-values.yaml')] });
  for (const container of containers(off)) {
    assert.ok(container.args.includes('--metrics-auth=none'));
    for (const probe of PROBES) assert.equal(container[probe].httpGet.scheme, 'HTTP');
  }
  const endpoint = monitorEndpoint(findObject(off, 'ServiceMonitor'));
  assert.equal(endpoint.scheme, 'http');
  assert.equal(endpoint.authorization, undefined);
  assert.equal(endpoint.tlsConfig, undefined);
});

test("NetworkPolicies, on by default: the HTTP port from the scrapers' namespace only, egress to the API server only; each part can be changed or turned off", async () => {
  const bin = await toolsDir();
  const defaults = await render(bin);
  const selectorOf = (o: Workload) => o.spec.template.metadata.labels;
  for (const [component, workload] of [
    ['agent', agentDaemonSet(defaults)],
    ['operator', findObject(defaults, 'Deployment', '-operator')],
  ] as const) {
    const policy = findObject(defaults, 'NetworkPolicy', `-${component}`);
    // It selects exactly this component's pods (and they run in the pod network: a policy does not apply to hostNetwork pods).
    assert.deepEqual(policy.spec.podSelector, {
      matchLabels: {
        'app.kubernetes.io/name': 'podmeter',
        'app.kubernetes.io/instance': 'podmeter',
        'app.kubernetes.io/component': component,
      },
    });
    for (const [k, v] of Object.entries(policy.spec.podSelector.matchLabels)) assert.equal(selectorOf(workload)[k], v);
    assert.equal(workload.spec.template.spec.hostNetwork, undefined, `${component} is not hostNetwork`);
    assert.deepEqual(policy.spec.policyTypes, ['Ingress', 'Egress']);
    // The probes' port is the one the rule opens (the kubelet itself needs no rule: it probes from the node).
    const container = workload.spec.template.spec.containers[0]!;
    for (const probe of PROBES) assert.equal(container[probe].httpGet.port, 'http-metrics');
    assert.deepEqual(
      container.ports.map((p) => p.name),
      ['http-metrics'],
    );
    assert.deepEqual(policy.spec.ingress, [
      {
        ports: [{ port: 'http-metrics', protocol: 'TCP' }],
        from: [
          {
            namespaceSelector: {
              matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['monitoring'] }],
            },
          },
        ],
      },
    ]);
    // Egress: the API server's ports, any address (no DNS: in-cluster config uses KUBERNETES_SERVICE_HOST).
    assert.deepEqual(policy.spec.egress, [
      {
        ports: [
          { port: 443, protocol: 'TCP' },
          { port: 6443, protocol: 'TCP' },
        ],
      },
    ]);
  }
  const connection = readFileSync(path.join(ROOT, 'common/kube/connection.ts'), 'utf8');
  assert.match(
    connection,
    /env\.KUBERNETES_SERVICE_HOST/,
    'in-cluster config connects to the address, so the policies need no DNS egress',
  );

  // The scenario of a plugin that filters the node: every kind of peer, narrowed egress.
  const custom = await render(bin, { values: [path.join(CHART, 'ci/network-policy-values.yaml')] });
  const agent = findObject(custom, 'NetworkPolicy', '-agent');
  assert.deepEqual(agent.spec.ingress[0]?.from, [
    {
      namespaceSelector: {
        matchExpressions: [
          { key: 'kubernetes.io/metadata.name', operator: 'In', values: ['monitoring', 'observability'] },
        ],
      },
    },
    { namespaceSelector: { matchLabels: { team: 'platform' } } },
    { ipBlock: { cidr: '10.0.0.0/16' } },
    { ipBlock: { cidr: 'fd00:10::/64' } },
  ]);
  assert.deepEqual(agent.spec.egress, [
    {
      ports: [{ port: 6443, protocol: 'TCP' }],
      to: [{ ipBlock: { cidr: '10.0.0.10/32' } }, { ipBlock: { cidr: '10.0.0.11/32' } }],
    },
  ]);
  assert.deepEqual(findObject(custom, 'NetworkPolicy', '-operator').spec, {
    ...agent.spec,
    podSelector: findObject(custom, 'NetworkPolicy', '-operator').spec.podSelector,
  });

  // No peer at all: no ingress rule (an empty `from` would admit every source).
  const closed = await render(bin, { set: ['networkPolicy.scrapeNamespaces=null'] });
  assert.deepEqual(findObject(closed, 'NetworkPolicy', '-agent').spec.ingress, []);
  // Egress left open.
  const open = findObject(
    await render(bin, { set: ['networkPolicy.egress.enabled=false'] }),
    'NetworkPolicy',
    '-agent',
  );
  assert.deepEqual(open.spec.policyTypes, ['Ingress']);
  assert.equal(open.spec.egress, undefined);
  // Off: none at all.
  assert.deepEqual(findObjects(await render(bin, { set: ['networkPolicy.enabled=false'] }), 'NetworkPolicy'), []);

  // The schema names bad values.
  const cases: [string, RegExp][] = [
    ['networkPolicy.scrapeNamespaces[0]=Monitoring', /at '\/networkPolicy\/scrapeNamespaces\/0'/],
    ['networkPolicy.nodeCIDRs[0]=10.0.0.1', /at '\/networkPolicy\/nodeCIDRs\/0'/],
    ['networkPolicy.egress.apiServerPorts[0]=0', /at '\/networkPolicy\/egress\/apiServerPorts\/0'/],
    ['networkPolicy.from[0].podSelecter.matchLabels.a=b', /at '\/networkPolicy\/from\/0'/],
    ['networkPolicy.egres.enabled=false', /at '\/networkPolicy': additional properties 'egres' not allowed/],
  ];
  for (const [set, message] of cases) {
    const r = await helm(bin, ['template', 'podmeter', CHART, '--set', set]);
    assert.notEqual(r.code, 0, `--set ${set} must be rejected`);
    assert.match(r.stderr, message, `--set ${set}: ${r.stderr}`);
  }
});
