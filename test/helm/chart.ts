/**
 * Helpers for the chart tests: the real helm, kubectl and promtool that
 * test/cluster/build-tools builds, rendering helm/podmeter into objects, and
 * small readers of what the chart renders.
 *
 *   toolsDir(): Promise<string>                 bin dir with helm, kubectl, promtool (builds once per machine)
 *   helm(bin, args, {input?}): Promise<RunResult>, mustHelm(...)
 *   render(bin, {release?, namespace?, values?, set?, includeCrds?}): Promise<K8sObject[]>
 *   findObject(objects, kind, nameSuffix?)      the one object of that kind (and name ending)
 *   parseDocs(yamlText): K8sObject[]            every YAML document that is an object
 *   agentDaemonSet(objects) / agentContainer(objects)
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAll } from 'js-yaml';
import { run, type RunResult } from '../cluster/cluster.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CHART = path.join(ROOT, 'helm/podmeter');

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // Every manifest's body differs; tests look into it by path.
  [key: string]: any;
}

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

export function findObjects(objects: K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

/** The single object of `kind` (whose name ends with `nameSuffix`, when given). */
export function findObject(objects: K8sObject[], kind: string, nameSuffix = ''): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  assert.equal(found.length, 1, `expected one ${kind} *${nameSuffix}, found ${found.map((o) => o.metadata.name).join(', ') || 'none'}`);
  return found[0]!;
}

export function agentDaemonSet(objects: K8sObject[]): K8sObject {
  return findObject(objects, 'DaemonSet', '-agent');
}

export function agentContainer(objects: K8sObject[]): K8sObject {
  const containers = agentDaemonSet(objects).spec.template.spec.containers as K8sObject[];
  assert.equal(containers.length, 1);
  return containers[0]!;
}

/** The capabilities the chart adds to the agent, e.g. ['BPF', 'NET_ADMIN', ...]. */
export function agentCapabilities(objects: K8sObject[]): string[] {
  return agentContainer(objects).securityContext.capabilities.add as string[];
}

/** Metric names (podmeter_*) in a PromQL text: selectors, function arguments, label_values(). */
export function podmeterMetricNames(promql: string): string[] {
  return [...new Set([...promql.matchAll(/\b(podmeter_[a-z0-9_]+)\b/g)].map((m) => m[1]!))].sort();
}

/** Every metric name used in a selector (`name{...}` or `name[`), podmeter's or not. */
export function selectorMetricNames(promql: string): string[] {
  return [...new Set([...promql.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{[]/g)].map((m) => m[1]!))].sort();
}
