/**
 * Operator fixtures on the real control plane (test/cluster): the CRDs from
 * helm/podmeter/crds, `bin/podmeter operator` as a child process (so a test can
 * SIGKILL it), and simulated agents that write exactly what a real agent
 * writes on a Pod: a JSON merge patch with the pod's uid as precondition
 * and the counters (totals, billed classes when not zero) plus
 * podmeter.io/updated (agent/kube/annotator.ts).
 *
 * Needs: the test control plane tools (test/cluster/build-tools). No root.
 * PODMETER_TEST_OPERATOR_LOG=FILE appends every operator log line (at debug
 * level) to FILE, for a failure's post-mortem.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { startCluster, type TestCluster } from '../cluster/cluster.ts';
import { afterOrSignal, randomSuffix, sleep, type AfterHook } from './cleanup.ts';
import { waitFor } from './poll.ts';
import { sample } from './samples.ts';
import { must } from './kubeCluster.ts';
import { launchPodmeter, PODMETER, signalAndWait } from './podmeter.ts';
import { ANNOTATIONS, podAnnotations } from '../../common/contract/annotations.ts';
import { CLASS_FIELDS, FIELDS, toStrings, zero, type Counts } from '../../common/contract/counts.ts';
import type { NodeFinal } from '../../common/contract/finals.ts';
import { KubeApi } from '../../common/kube/api.ts';
import { loadConnection } from '../../common/kube/connection.ts';
import { usagePath, type UsageKind, type UsageObject } from '../../common/contract/usage.ts';

const CRDS = new URL('../../helm/podmeter/crds/', import.meta.url).pathname;
export const OPERATOR_NS = 'podmeter';

/** The totals and the egress bytes to the billed peer classes (common/contract/counts.ts). */
export type { Counts };

export interface OperatorCluster {
  cluster: TestCluster;
  /** Run before the control plane goes down (operators stop first: no error noise, quicker teardown). */
  cleanups: (() => Promise<void>)[];
  kc: KubeConfig;
  core: CoreV1Api;
  api: KubeApi;
}

/** A fresh control plane with the podmeter CRDs and the operator's namespace. */
export async function operatorCluster(t: AfterHook): Promise<OperatorCluster> {
  const cluster = await startCluster();
  const cleanups: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await cluster.down();
  });
  for (const file of readdirSync(CRDS)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    await must(cluster.kubectl(['apply', '-f', '-'], { input: readFileSync(join(CRDS, file), 'utf8') }));
  }
  await must(
    cluster.kubectl([
      'wait',
      '--for=condition=Established',
      '--timeout=30s',
      'crd/namespaceusages.podmeter.io',
      'crd/workloadusages.podmeter.io',
      'crd/nodeusages.podmeter.io',
      'crd/noderetirements.podmeter.io',
    ]),
  );
  await must(cluster.kubectl(['create', 'namespace', OPERATOR_NS]));
  const kc = new KubeConfig();
  kc.loadFromFile(cluster.kubeconfig);
  const connection = await loadConnection(cluster.kubeconfig);
  return { cluster, cleanups, kc, core: kc.makeApiClient(CoreV1Api), api: new KubeApi(connection!) };
}

export { must };

export async function apply(oc: OperatorCluster, objects: unknown[]): Promise<void> {
  await must(
    oc.cluster.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
    }),
  );
}

export interface PodSpec {
  namespace: string;
  name: string;
  node: string;
  owner?: { apiVersion: string; kind: string; name: string; uid?: string };
}

export interface TestPod extends PodSpec {
  uid: string;
}

/** A Pod bound to a node (no kubelet runs: it stays Pending, which is all the operator needs). */
export async function createPod(oc: OperatorCluster, spec: PodSpec): Promise<TestPod> {
  const pod = await oc.core.createNamespacedPod({
    namespace: spec.namespace,
    body: {
      metadata: {
        name: spec.name,
        namespace: spec.namespace,
        ...(spec.owner
          ? {
              ownerReferences: [
                { ...spec.owner, uid: spec.owner.uid ?? `00000000-0000-4000-8000-${randomHex(12)}`, controller: true },
              ],
            }
          : {}),
      },
      spec: { nodeName: spec.node, containers: [{ name: 'app', image: 'example.invalid/app' }] },
    },
  });
  return { ...spec, uid: pod.metadata!.uid! };
}

export async function deletePod(oc: OperatorCluster, pod: PodSpec): Promise<void> {
  await oc.core.deleteNamespacedPod({ namespace: pod.namespace, name: pod.name, gracePeriodSeconds: 0 });
}

/** What a real agent writes: the counters (billed classes when not zero, removed when zero) and `updated`, merge-patched with the pod's uid as precondition. */
export async function writeCounts(oc: OperatorCluster, pod: TestPod, c: Counts): Promise<void> {
  const annotations: Record<string, string | null> = {
    ...Object.fromEntries(CLASS_FIELDS.map((f) => [ANNOTATIONS[f], null])),
    ...podAnnotations(c, undefined),
    [ANNOTATIONS.updated]: new Date().toISOString(),
  };
  await oc.core.patchNamespacedPod(
    { name: pod.name, namespace: pod.namespace, body: { metadata: { uid: pod.uid, annotations } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** What a real agent writes on its Node when pods terminate: `podmeter.io/finals`, newest first (agent/kube/finals.ts). */
export async function writeNodeFinals(
  oc: OperatorCluster,
  node: string,
  finals: { pod: TestPod; counts: Counts; at?: Date }[],
): Promise<void> {
  const value: NodeFinal[] = finals.map(({ pod, counts, at }) => ({
    uid: pod.uid,
    namespace: pod.namespace,
    name: pod.name,
    ...(pod.owner ? { owner: { kind: pod.owner.kind, name: pod.owner.name } } : {}),
    terminated: (at ?? new Date()).toISOString(),
    ...toStrings(counts),
  }));
  await oc.core.patchNode(
    {
      name: node,
      body: {
        metadata: {
          annotations: { [ANNOTATIONS.finals]: JSON.stringify(value), [ANNOTATIONS.updated]: new Date().toISOString() },
        },
      },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** Distinct counters for a seed; the billed classes are parts of egress (cross-region zero at seed 0: its annotation absent). */
export function counters(seed: number, scale = 1n): Counts {
  const s = BigInt(seed);
  return {
    ingressBytes: (1000n * s + 17n) * scale,
    egressBytes: (700n * s + 3n) * scale,
    ingressPackets: 10n * s + 1n,
    egressPackets: 7n * s + 2n,
    egressCrossZoneBytes: (300n * s + 1n) * scale,
    egressCrossRegionBytes: 100n * s * scale,
    egressExternalBytes: (200n * s + 2n) * scale,
  };
}

/** Counts from totals only (the billed classes zero). */
export function totalsOnly(
  c: Pick<Counts, 'ingressBytes' | 'egressBytes' | 'ingressPackets' | 'egressPackets'>,
): Counts {
  return { ...zero(), ...c };
}

/** Field by field sum (a negative part subtracts). */
export function add(...cs: Counts[]): Counts {
  const t = zero();
  for (const c of cs) for (const f of FIELDS) t[f] += c[f];
  return t;
}

/** Every field as a decimal string, zero classes too (as a status's top level has them). */
export function asStrings(c: Counts): Record<keyof Counts, string> {
  return Object.fromEntries(FIELDS.map((f) => [f, String(c[f])])) as Record<keyof Counts, string>;
}

export async function usage(oc: OperatorCluster, kind: UsageKind, name: string): Promise<UsageObject | undefined> {
  return oc.api.find<UsageObject>(usagePath(kind, name));
}

/** The exact totals and billed classes of a usage object's status (undefined until written). */
export async function totals(
  oc: OperatorCluster,
  kind: UsageKind,
  name: string,
): Promise<Record<keyof Counts, string> | undefined> {
  const s = (await usage(oc, kind, name))?.status as Record<string, unknown> | undefined;
  return s && (Object.fromEntries(FIELDS.map((f) => [f, s[f]])) as Record<keyof Counts, string>);
}

/** Waits until the usage object's totals are exactly `want`. */
export async function totalsBecome(
  oc: OperatorCluster,
  kind: UsageKind,
  name: string,
  want: Counts,
  timeoutMs = 60_000,
): Promise<void> {
  let got: unknown;
  const expected = JSON.stringify(asStrings(want));
  await waitFor(
    `${kind} ${name} = ${expected}`,
    async () => {
      got = await totals(oc, kind, name);
      return JSON.stringify(got) === expected ? true : undefined;
    },
    timeoutMs,
    () => got,
  );
}

/**
 * How long "nothing changes" is watched after the operator has done what a
 * change would follow from: its 0.5 s tick and the 2 s minimum between
 * writes of one WorkloadUsage (operator/rounds.ts, operator/ledger/), four
 * times over, so a late write lands inside the window.
 */
export const SETTLE_MS = 8_000;

/** Asserts that `read` gives `want` at every poll for `windowMs`: a late change (a double count) fails. */
export async function staysEqual<T>(
  what: string,
  read: () => Promise<T>,
  want: T,
  windowMs = SETTLE_MS,
): Promise<void> {
  const until = Date.now() + windowMs;
  for (;;) {
    assert.deepEqual(await read(), want, `${what} changed`);
    if (Date.now() > until) return;
    await sleep(250);
  }
}

/** How often `op` has loaded its ledger (taken the lead and applied every Pod, ledger and Node final it found). */
export const ledgerLoads = (op: OperatorProcess): number => op.logs.filter((l) => l.msg === 'ledger loaded').length;

/** Waits until `op` has loaded its ledger more than `before` times. */
export async function ledgerLoaded(op: OperatorProcess, before: number): Promise<void> {
  await waitFor('the operator loaded its ledger', () => (ledgerLoads(op) > before ? true : undefined), 60_000);
}

export interface OperatorProcess {
  identity: string;
  url: string;
  child: ChildProcess;
  logs: Record<string, unknown>[];
  metrics(): Promise<string>;
  leader(): Promise<boolean>;
  /** Resolves with the exit code (null after a deadly signal). */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** Starts it again with the same flags (the same identity and port). */
  restart(): Promise<void>;
}

/** Runs `podmeter operator` against the test cluster; resolves when it is ready (watches synced). */
export async function startOperator(
  oc: OperatorCluster,
  options: { identity?: string; args?: string[]; kubeconfig?: string } = {},
): Promise<OperatorProcess> {
  const identity = options.identity ?? `podmeter-test-op-${randomSuffix()}`;
  let listen = '127.0.0.1:0';
  const logs: Record<string, unknown>[] = [];
  let child!: ChildProcess;
  const launch = (): Promise<string> => {
    const args = [
      'operator',
      '--kubeconfig',
      options.kubeconfig ?? oc.cluster.kubeconfig,
      '--listen',
      listen,
      '--namespace',
      OPERATOR_NS,
      '--identity',
      identity,
      '--log-format',
      'json',
      ...(process.env.PODMETER_TEST_OPERATOR_LOG ? ['--log-level', 'debug'] : []),
      ...(options.args ?? []),
    ];
    const logFile = process.env.PODMETER_TEST_OPERATOR_LOG;
    const launched = launchPodmeter(args, {
      ready: 'operator ready',
      logs,
      ...(logFile ? { onLine: (line: string) => appendFileSync(logFile, `${identity} ${line}\n`) } : {}),
    });
    child = launched.child;
    return launched.listen;
  };
  const kill = (signal: NodeJS.Signals = 'SIGTERM') => signalAndWait(child, signal, undefined, logs);
  const listening = launch();
  // Registered before it is ready: an operator that never gets there is stopped too.
  oc.cleanups.push(afterOrSignal(undefined, async () => void (await kill('SIGKILL'))));
  listen = await listening;
  // https with --metrics-auth kubernetes (the ready line says which).
  const url = `${logs.findLast((l) => l.msg === 'operator ready')?.scheme === 'https' ? 'https' : 'http'}://${listen}`;
  const metrics = async () => (await fetch(`${url}/metrics`)).text();
  return {
    identity,
    url,
    get child() {
      return child;
    },
    logs,
    metrics,
    leader: async () => sample(await metrics(), 'podmeter_operator_leader', {}) === 1,
    kill,
    restart: async () => {
      await launch();
    },
  };
}

/** Runs `podmeter top ...` (cluster mode) and returns stdout, stderr and the exit code. */
export function podmeterTop(
  oc: OperatorCluster,
  args: string[],
): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PODMETER, ['top', ...args, '--kubeconfig', oc.cluster.kubeconfig], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code: code ?? 1 }));
  });
}

function randomHex(n: number): string {
  let s = '';
  while (s.length < n) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}
