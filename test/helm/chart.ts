/**
 * Helpers for the chart tests: the real helm, kubectl and promtool that
 * test/cluster/build-tools builds, rendering helm/podmeter into objects, and
 * small readers of what the chart renders.
 *
 *   toolsDir(): Promise<string>                 bin dir with helm, kubectl, promtool (builds once per machine)
 *   helm(bin, args, {input?}): Promise<RunResult>, mustHelm(...)
 *   render(bin, {release?, namespace?, values?, set?, includeCrds?}): Promise<K8sObject[]>
 *   findObject(objects, kind, nameSuffix?)      the one object of that kind (and name ending), typed by kind
 *   findObjects(objects, kind)                  every object of that kind
 *   parseDocs(yamlText): K8sObject[]            every YAML document that is an object
 *   agentDaemonSet(objects) / agentContainer(objects)
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAll } from 'js-yaml';
import { run, type RunResult } from '../cluster/cluster.ts';
import type {
  AlertRule,
  Container,
  K8sObject,
  Kind,
  Manifests,
  RecordingRuleGroup,
  RuleGroup,
  Workload,
} from './manifests.ts';

export type { K8sObject } from './manifests.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CHART = path.join(ROOT, 'helm/podmeter');

let tools: Promise<string> | undefined;

/** The directory with helm, kubectl and promtool (test/cluster/build-tools prints it last). */
export function toolsDir(): Promise<string> {
  tools ??= (async () => {
    const r = await run(path.join(ROOT, 'test/cluster/build-tools'), [], { inheritStderr: true });
    if (r.code !== 0) throw new Error(`test/cluster/build-tools exited ${r.code}`);
    const dir = r.stdout.trimEnd().split('\n').pop() ?? '';
    assert.ok(dir.startsWith('/'), `build-tools printed no directory: ${r.stdout}`);
    return dir;
  })();
  return tools;
}

export function helm(bin: string, args: string[], opts: { input?: string } = {}): Promise<RunResult> {
  return run(path.join(bin, 'helm'), args, opts.input === undefined ? {} : { input: opts.input });
}

/** helm that must succeed; returns stdout. */
export async function mustHelm(bin: string, args: string[]): Promise<string> {
  const r = await helm(bin, args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Every YAML document of a multi-document text that is an object (comments-only documents dropped). */
export function parseDocs(text: string): K8sObject[] {
  return loadAll(text).filter((d): d is K8sObject => typeof d === 'object' && d !== null);
}

export interface RenderOptions {
  release?: string;
  namespace?: string;
  /** Values files (paths). */
  values?: string[];
  /** --set expressions. */
  set?: string[];
  includeCrds?: boolean;
}

export async function render(bin: string, opts: RenderOptions = {}): Promise<K8sObject[]> {
  const args = ['template', opts.release ?? 'podmeter', CHART, '--namespace', opts.namespace ?? 'podmeter'];
  for (const f of opts.values ?? []) args.push('--values', f);
  for (const s of opts.set ?? []) args.push('--set', s);
  if (opts.includeCrds) args.push('--include-crds');
  return parseDocs(await mustHelm(bin, args));
}

/** The ci/*-values.yaml scenarios, as absolute paths. */
export function ciValues(): string[] {
  const dir = path.join(CHART, 'ci');
  return readdirSync(dir)
    .filter((f) => f.endsWith('-values.yaml'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function findObjects<K extends Kind>(objects: K8sObject[], kind: K): Manifests[K][] {
  return objects.filter((o) => o.kind === kind) as Manifests[K][];
}

/** The single object of `kind` (whose name ends with `nameSuffix`, when given). */
export function findObject<K extends Kind>(objects: K8sObject[], kind: K, nameSuffix = ''): Manifests[K] {
  const found = findObjects(objects, kind).filter((o) => o.metadata.name.endsWith(nameSuffix));
  assert.equal(
    found.length,
    1,
    `expected one ${kind} *${nameSuffix}, found ${found.map((o) => o.metadata.name).join(', ') || 'none'}`,
  );
  return found[0]!;
}

export function agentDaemonSet(objects: K8sObject[]): Workload {
  return findObject(objects, 'DaemonSet', '-agent');
}

export function agentContainer(objects: K8sObject[]): Container {
  const containers = agentDaemonSet(objects).spec.template.spec.containers;
  assert.equal(containers.length, 1);
  return containers[0]!;
}

/** The capabilities the chart adds to the agent, e.g. ['BPF', 'NET_ADMIN', ...]. */
export function agentCapabilities(objects: K8sObject[]): string[] {
  return agentContainer(objects).securityContext.capabilities.add ?? [];
}

/** Metric names (podmeter_*) in a PromQL text: selectors, function arguments, label_values(). */
export function podmeterMetricNames(promql: string): string[] {
  return [...new Set([...promql.matchAll(/\b(podmeter_[a-z0-9_]+)\b/g)].map((m) => m[1]!))].sort();
}

/** Every metric name used in a selector (`name{...}` or `name[`), podmeter's or not. */
export function selectorMetricNames(promql: string): string[] {
  return [...new Set([...promql.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{[]/g)].map((m) => m[1]!))].sort();
}

/** Metrics of the operator (issue 6), not of the agent: checked against a live operator. */
export const OPERATOR_METRIC_PREFIXES = [
  'podmeter_namespace_',
  'podmeter_workload_',
  'podmeter_node_network_',
  'podmeter_cluster_',
  'podmeter_operator_',
];

export function isOperatorMetric(name: string): boolean {
  return OPERATOR_METRIC_PREFIXES.some((p) => name.startsWith(p));
}

/** The Grafana dashboard, as far as the tests read it. */
export interface Dashboard {
  uid: string;
  panels: { targets?: { expr: string }[] }[];
  templating: { list: { type: string; query: string | { query: string } }[] };
}

export interface MonitoringObjects {
  /** The PrometheusRule's groups, as a Prometheus rules file has them. */
  groups: RuleGroup[];
  /** The recording rules of monitoring.opencost (the <fullname>-opencost PrometheusRule). */
  opencostGroups: RecordingRuleGroup[];
  rules: AlertRule[];
  dashboard: Dashboard;
  /** Every PromQL text: rule expressions, then the dashboard's targets and variable queries. */
  queries: { where: 'PrometheusRule' | 'dashboard'; promql: string }[];
}

/** The PrometheusRule and the dashboard as ci/monitoring-on-values.yaml renders them. */
export async function monitoringObjects(bin: string): Promise<MonitoringObjects> {
  const objects = await render(bin, { values: [path.join(CHART, 'ci/monitoring-on-values.yaml')] });
  const alerting = findObjects(objects, 'PrometheusRule').filter((o) => !o.metadata.name.endsWith('-opencost'));
  assert.equal(alerting.length, 1, 'one PrometheusRule of alerts');
  const groups = alerting[0]!.spec.groups;
  const opencostGroups = findObject(objects, 'PrometheusRule', '-opencost').spec
    .groups as unknown as RecordingRuleGroup[];
  const rules = groups.flatMap((g) => g.rules);
  const dashboard = JSON.parse(findObject(objects, 'ConfigMap', '-dashboard').data['podmeter.json']!) as Dashboard;
  const queries: MonitoringObjects['queries'] = rules.map((r) => ({ where: 'PrometheusRule', promql: r.expr }));
  for (const panel of dashboard.panels)
    for (const target of panel.targets ?? []) queries.push({ where: 'dashboard', promql: target.expr });
  for (const v of dashboard.templating.list)
    if (v.type === 'query')
      queries.push({ where: 'dashboard', promql: typeof v.query === 'string' ? v.query : v.query.query });
  return { groups, opencostGroups, rules, dashboard, queries };
}

/** Names a /metrics exposition declares (# TYPE), with a histogram's _bucket/_sum/_count. */
export function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]!);
    if (m[2] === 'histogram' || m[2] === 'summary')
      for (const s of ['_bucket', '_sum', '_count']) names.add(`${m[1]}${s}`);
  }
  return names;
}

/** "where: name" for each metric of `queries` (filtered by `pick`) that `exported` lacks. */
export function missingMetrics(
  queries: MonitoringObjects['queries'],
  exported: Set<string>,
  pick: (name: string) => boolean,
): string[] {
  const missing = new Set<string>();
  for (const q of queries)
    for (const name of podmeterMetricNames(q.promql))
      if (pick(name) && !exported.has(name)) missing.add(`${q.where}: ${name}`);
  return [...missing].sort();
}
