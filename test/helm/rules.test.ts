/**
 * The chart's PrometheusRule and Grafana dashboard against reality:
 *  - every metric they name is one a live agent exports (the real agent,
 *    standalone on a test cgroup root in pods mode, its /metrics read);
 *    the operator's metrics are skipped while no operator exists;
 *  - the rules pass `promtool check rules`, and `promtool test rules` cases
 *    make each alert fire (and not fire where it must not), with the exact
 *    labels and annotations an alert carries.
 * Needs root (the agent loads BPF programs), cgroup v2 and bpffs.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { dump } from 'js-yaml';
import { run } from '../cluster/cluster.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import {
  exportedNames,
  isOperatorMetric,
  missingMetrics,
  monitoringObjects,
  podmeterMetricNames,
  selectorMetricNames,
  toolsDir,
} from './chart.ts';

test('every metric in the PrometheusRule and the dashboard is exported by the agent', async (t) => {
  const { queries } = await monitoringObjects(await toolsDir());
  assert.ok(queries.filter((q) => q.where === 'dashboard').length >= 14, 'the dashboard has its queries');

  // Outside podmeter's names only Prometheus's own `up` may appear.
  const promqlWords = [
    'by',
    'on',
    'rate',
    'increase',
    'sum',
    'max',
    'topk',
    'histogram_quantile',
    'label_values',
    'offset',
  ];
  for (const q of queries) {
    const foreign = selectorMetricNames(q.promql).filter((n) => !n.startsWith('podmeter_') && !promqlWords.includes(n));
    assert.ok(
      foreign.every((n) => n === 'up'),
      `foreign metric in ${q.promql}: ${foreign.join(', ')}`,
    );
  }

  // A real agent in pods mode, on a test root with one pod cgroup.
  const root = makeTestCgroup(t);
  root.child(
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${randomUUID().replaceAll('-', '_')}.slice`,
  );
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--discover', 'pods', '--interval', '1'] });
  const exposition = await waitFor(
    'the map inventory in /metrics',
    async () => {
      const text = await agent.metrics();
      return /^podmeter_node_bpf_map_memory_bytes \d/m.test(text) ? text : undefined;
    },
    10_000,
  );
  assert.deepEqual(
    missingMetrics(queries, exportedNames(exposition), (n) => !isOperatorMetric(n)),
    [],
    'metric names the agent does not export',
  );
  // The exposition itself (prom-client's part and the text written by
  // common/http/exposition.ts) parses (a parse error is a line of its own),
  // and only prom-client's own nodejs_* gauges named *_total trip the lint.
  const lint = await run(path.join(await toolsDir(), 'promtool'), ['check', 'metrics'], { input: exposition });
  assert.deepEqual(
    (lint.stdout + lint.stderr).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('nodejs_')),
    [],
  );

  // The alerts rest on the agent alone; the operator's names (dashboard) are checked against a live operator in install.test.ts.
  assert.deepEqual(
    queries
      .filter((q) => q.where === 'PrometheusRule')
      .flatMap((q) => podmeterMetricNames(q.promql))
      .filter(isOperatorMetric),
    [],
  );
  const operatorNames = [...new Set(queries.flatMap((q) => podmeterMetricNames(q.promql)).filter(isOperatorMetric))];
  t.diagnostic(`operator metrics, checked in install.test.ts: ${operatorNames.join(', ')}`);
});

test('promtool check rules accepts the rendered rules (alerts and OpenCost recording rules)', async (t) => {
  const bin = await toolsDir();
  const { groups, opencostGroups } = await monitoringObjects(bin);
  const dir = mkdtempSync(path.join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'rules.yaml');
  writeFileSync(file, dump({ groups: [...groups, ...opencostGroups] }));
  const r = await run(path.join(bin, 'promtool'), ['check', 'rules', '--lint=all', '--lint-fatal', file]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS: 11 rules found/);
});

// --- promtool test rules -------------------------------------------------------

/** Prometheus's humanize1024 and humanize, for the values the cases use. */
function humanize1024(v: number): string {
  if (Math.abs(v) <= 1) return g4(v);
  let prefix = '';
  for (const p of ['ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei', 'Zi', 'Yi']) {
    if (Math.abs(v) < 1024) break;
    prefix = p;
    v /= 1024;
  }
  return `${g4(v)}${prefix}`;
}
function humanize(v: number): string {
  if (v === 0) return g4(v);
  let prefix = '';
  if (Math.abs(v) >= 1) {
    for (const p of ['k', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y']) {
      if (Math.abs(v) < 1000) break;
      prefix = p;
      v /= 1000;
    }
  } else {
    for (const p of ['m', 'u', 'n', 'p', 'f', 'a', 'z', 'y']) {
      if (Math.abs(v) >= 1) break;
      prefix = p;
      v *= 1000;
    }
  }
  return `${g4(v)}${prefix}`;
}
/** Go's %.4g for the plain values the cases produce. */
function g4(v: number): string {
  return String(Number(v.toPrecision(4)));
}

/**
 * Expands the forms of Prometheus alert templates the chart uses; anything
 * else fails, so a new form must be taught here (and checked by promtool).
 */
function expand(template: string, labels: Record<string, string>, value: number): string {
  const out = template.replace(/\{\{\s*(.*?)\s*\}\}/g, (_, body: string) => {
    let m: RegExpExecArray | null;
    if ((m = /^\$labels\.(\w+)$/.exec(body))) return labels[m[1]!] ?? '';
    if ((m = /^(\$value|[0-9.]+) \| (humanize1024|humanize)$/.exec(body))) {
      const v = m[1] === '$value' ? value : Number(m[1]);
      return m[2] === 'humanize1024' ? humanize1024(v) : humanize(v);
    }
    throw new Error(`template form not understood by the test: {{ ${body} }}`);
  });
  return out;
}

test('promtool test rules: each alert fires on its condition, and only then', async (t) => {
  const bin = await toolsDir();
  const { rules, groups } = await monitoringObjects(bin);
  const rule = (name: string) => rules.find((r) => r.alert === name) ?? assert.fail(`no alert ${name}`);
  const job = 'podmeter-agent';
  const target = (node: string) => ({ job, node, instance: `10.0.0.${node.slice(1)}:9471` });
  const series = (name: string, labels: Record<string, string>, values: string) => ({
    series: `${name}{${Object.entries(labels)
      .map(([k, v]) => `${k}="${v}"`)
      .join(',')}}`,
    values,
  });
  const expected = (alert: string, labels: Record<string, string>, value: number) => {
    const r = rule(alert);
    const all = { ...labels, ...r.labels };
    return {
      exp_labels: all,
      exp_annotations: Object.fromEntries(
        Object.entries(r.annotations).map(([k, v]) => [k, expand(v, { ...all, alertname: alert }, value)]),
      ),
    };
  };
  const byNode = (node: string) => ({ node, instance: target(node).instance });
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;

  const tests = [
    {
      name: 'agent down: fires after 5 minutes of up == 0, not before',
      interval: '1m',
      input_series: [series('up', target('n1'), '1 1 0x20'), series('up', target('n2'), '1x22')],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'PodmeterAgentDown', exp_alerts: [] },
        {
          eval_time: '8m',
          alertname: 'PodmeterAgentDown',
          exp_alerts: [expected('PodmeterAgentDown', target('n1'), 0)],
        },
      ],
    },
    {
      name: 'attach errors: the first error of a new series fires; other ops do not',
      interval: '1m',
      input_series: [
        series('podmeter_errors_total', { ...target('n1'), op: 'attach' }, '_x5 1x10'),
        series('podmeter_errors_total', { ...target('n2'), op: 'read' }, '_x5 1+1x10'),
      ],
      alert_rule_test: [
        { eval_time: '4m', alertname: 'PodmeterAttachErrors', exp_alerts: [] },
        {
          eval_time: '7m',
          alertname: 'PodmeterAttachErrors',
          exp_alerts: [expected('PodmeterAttachErrors', byNode('n1'), 1)],
        },
      ],
    },
    {
      name: 'attach errors: a counter that grows fires; one that stays does not after 10 minutes',
      interval: '1m',
      input_series: [
        series('podmeter_errors_total', { ...target('n1'), op: 'attach' }, '0x15 1 2 3'),
        series('podmeter_errors_total', { ...target('n2'), op: 'attach' }, '4x30'),
      ],
      alert_rule_test: [
        { eval_time: '14m', alertname: 'PodmeterAttachErrors', exp_alerts: [] },
        {
          eval_time: '18m',
          alertname: 'PodmeterAttachErrors',
          exp_alerts: [expected('PodmeterAttachErrors', byNode('n1'), 3)],
        },
      ],
    },
    {
      name: 'counters stale: attached pods and no packet for 30 minutes, for 10 more; a young agent does not fire',
      interval: '1m',
      input_series: [
        series('podmeter_attached_cgroups', target('n1'), '3x60'),
        series(
          'podmeter_pod_network_packets_total',
          { ...target('n1'), namespace: 'shop', pod: 'web', uid: 'u1', direction: 'egress' },
          '100x60',
        ),
        series('podmeter_attached_cgroups', target('n2'), '3x60'),
        series(
          'podmeter_pod_network_packets_total',
          { ...target('n2'), namespace: 'shop', pod: 'db', uid: 'u2', direction: 'ingress' },
          '0+10x60',
        ),
        series('podmeter_attached_cgroups', target('n3'), '0x60'),
        series(
          'podmeter_pod_network_packets_total',
          { ...target('n3'), namespace: '', pod: '', uid: 'u3', direction: 'ingress' },
          '5x60',
        ),
        // An agent that started 25 minutes ago: its window is too young to judge.
        series('podmeter_attached_cgroups', target('n4'), '_x20 3x40'),
        series(
          'podmeter_pod_network_packets_total',
          { ...target('n4'), namespace: 'shop', pod: 'api', uid: 'u4', direction: 'egress' },
          '_x20 7x40',
        ),
      ],
      alert_rule_test: [
        { eval_time: '35m', alertname: 'PodmeterCountersStale', exp_alerts: [] },
        {
          eval_time: '45m',
          alertname: 'PodmeterCountersStale',
          exp_alerts: [expected('PodmeterCountersStale', byNode('n1'), 3)],
        },
      ],
    },
    {
      name: 'BPF map memory high: above 1 GiB for 15 minutes',
      interval: '1m',
      input_series: [
        series('podmeter_node_bpf_map_memory_bytes', target('n1'), `${2 * GiB}x30`),
        series('podmeter_node_bpf_map_memory_bytes', target('n2'), `${GiB}x30`),
      ],
      alert_rule_test: [
        { eval_time: '10m', alertname: 'PodmeterBpfMapMemoryHigh', exp_alerts: [] },
        {
          eval_time: '20m',
          alertname: 'PodmeterBpfMapMemoryHigh',
          exp_alerts: [expected('PodmeterBpfMapMemoryHigh', byNode('n1'), 2 * GiB)],
        },
      ],
    },
    {
      name: 'annotation budget exhausted: skipped writes for 30 minutes',
      interval: '1m',
      input_series: [
        series('podmeter_annotation_writes_total', { ...target('n1'), result: 'skipped_budget' }, '0+120x60'),
        series('podmeter_annotation_writes_total', { ...target('n2'), result: 'ok' }, '0+120x60'),
      ],
      alert_rule_test: [
        { eval_time: '30m', alertname: 'PodmeterAnnotationBudgetExhausted', exp_alerts: [] },
        {
          eval_time: '50m',
          alertname: 'PodmeterAnnotationBudgetExhausted',
          exp_alerts: [expected('PodmeterAnnotationBudgetExhausted', byNode('n1'), 2)],
        },
      ],
    },
    {
      name: 'annotation writes rejected: a first refusal (a new series) fires after 15 minutes of refusals; other results do not',
      interval: '1m',
      input_series: [
        series('podmeter_annotation_writes_total', { ...target('n1'), result: 'rejected' }, '_x5 1+1x40'),
        series('podmeter_annotation_writes_total', { ...target('n2'), result: 'error' }, '0+5x45'),
        series('podmeter_annotation_writes_total', { ...target('n3'), result: 'rejected' }, '3x45'),
      ],
      alert_rule_test: [
        { eval_time: '15m', alertname: 'PodmeterAnnotationWritesRejected', exp_alerts: [] },
        {
          eval_time: '25m',
          alertname: 'PodmeterAnnotationWritesRejected',
          exp_alerts: [expected('PodmeterAnnotationWritesRejected', byNode('n1'), 15)],
        },
      ],
    },
    {
      name: 'namespace cross-zone egress: above 10 MiB/s (summed over its pods and nodes) for 30 minutes; other classes and namespaces do not fire',
      interval: '1m',
      input_series: [
        // shop: two pods on two nodes, 6 MiB/s each to other zones: 12 MiB/s.
        series(
          'podmeter_pod_network_peer_bytes_total',
          { ...target('n1'), namespace: 'shop', pod: 'web', uid: 'u1', direction: 'egress', peer: 'cross-zone' },
          `0+${6 * 60 * MiB}x60`,
        ),
        series(
          'podmeter_pod_network_peer_bytes_total',
          { ...target('n2'), namespace: 'shop', pod: 'db', uid: 'u2', direction: 'egress', peer: 'cross-zone' },
          `0+${6 * 60 * MiB}x60`,
        ),
        // batch: 8 MiB/s cross-zone (below), 50 MiB/s external and cross-zone ingress (other classes).
        series(
          'podmeter_pod_network_peer_bytes_total',
          { ...target('n1'), namespace: 'batch', pod: 'job', uid: 'u3', direction: 'egress', peer: 'cross-zone' },
          `0+${8 * 60 * MiB}x60`,
        ),
        series(
          'podmeter_pod_network_peer_bytes_total',
          { ...target('n1'), namespace: 'batch', pod: 'job', uid: 'u3', direction: 'egress', peer: 'external' },
          `0+${50 * 60 * MiB}x60`,
        ),
        series(
          'podmeter_pod_network_peer_bytes_total',
          { ...target('n1'), namespace: 'batch', pod: 'job', uid: 'u3', direction: 'ingress', peer: 'cross-zone' },
          `0+${50 * 60 * MiB}x60`,
        ),
      ],
      alert_rule_test: [
        { eval_time: '30m', alertname: 'PodmeterNamespaceCrossZoneEgressHigh', exp_alerts: [] },
        {
          eval_time: '50m',
          alertname: 'PodmeterNamespaceCrossZoneEgressHigh',
          exp_alerts: [expected('PodmeterNamespaceCrossZoneEgressHigh', { namespace: 'shop' }, 12 * MiB)],
        },
      ],
    },
  ];
  // Every alert is made to fire by some case.
  const fired = new Set(
    tests.flatMap((c) => c.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)),
  );
  assert.deepEqual([...fired].sort(), rules.map((r) => r.alert).sort());

  const dir = mkdtempSync(path.join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'rules.yaml'), dump({ groups }));
  writeFileSync(path.join(dir, 'tests.yaml'), dump({ rule_files: ['rules.yaml'], evaluation_interval: '1m', tests }));
  const r = await run(path.join(bin, 'promtool'), ['test', 'rules', path.join(dir, 'tests.yaml')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS/);
});
