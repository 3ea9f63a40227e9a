/**
 * The operator at scale, in the real kube-apiserver (test/cluster): 200
 * Nodes x 50 pods (10,000 pods) owned by ReplicaSets of Deployments in 40
 * namespaces, every pod annotated as an agent does.
 *
 *   node bench/operator.bench.ts [--nodes 200] [--pods-per-node 50] [--namespaces 40] [--seconds 30]
 *
 * Prints:
 * - operator memory per pod: heap after a full GC with the pods minus before
 *   them (the operator runs as a child process with --expose-gc), and RSS;
 *   target <= 1.5 KiB per pod;
 * - time from an annotation change (PATCH answered) to the NamespaceUsage
 *   total including it, seen through a watch: p50/p99/max; target p99 <= 5 s;
 * - API requests per second the operator sends meanwhile (watches held open
 *   are not requests), and the annotation writes per second driving it.
 * Everything is removed afterwards, also on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { registerCleanup, runMain, sleep } from '../test/helpers/cleanup.ts';
import { add, apply, counters, createPod, OPERATOR_NS, operatorCluster, writeCounts, type Counters, type OperatorCluster, type TestPod } from '../test/helpers/operatorCluster.ts';
import { usagePath, type UsageObject } from '../common/contract/usage.ts';
import { fromStrings } from '../common/contract/counts.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '200' },
    'pods-per-node': { type: 'string', default: '50' },
    namespaces: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '30' },
  },
});
const NODES = Number(values.nodes);
const PODS = NODES * Number(values['pods-per-node']);
const NAMESPACES = Number(values.namespaces);
const DEPLOYMENTS_PER_NS = 2;
const SECONDS = Number(values.seconds);
const STATS_OPERATOR = new URL('../test/helpers/statsOperator.ts', import.meta.url).pathname;

interface Stats {
  heapUsed: number;
  rss: number;
  requests: number;
  gc: boolean;
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function startOperatorChild(oc: OperatorCluster): Promise<{ child: ChildProcess; stats: () => Promise<Stats> }> {
  const child = spawn(process.execPath, ['--expose-gc', STATS_OPERATOR, '--kubeconfig', oc.cluster.kubeconfig, '--listen', '127.0.0.1:0', '--namespace', OPERATOR_NS, '--identity', 'podmeter-test-bench', '--log-format', 'json', '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  registerCleanup(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (!line.includes('"level":30')) process.stderr.write(`operator: ${line.slice(0, 300)}\n`);
  });
  const stats = () =>
    new Promise<Stats>((resolve) => {
      child.once('message', (m) => resolve(m as Stats));
      child.send('stats');
    });
  return { child, stats };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const oc = await operatorCluster({ after: (fn) => registerCleanup(fn) });
  const namespaces = Array.from({ length: NAMESPACES }, (_, i) => `bench-${i}`);
  await apply(oc, [
    ...Array.from({ length: NODES }, (_, i) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: `podmeter-test-node-${i}`, annotations: { 'podmeter.io/bpf-map-bytes': String(100_000 + i) } } })),
    ...namespaces.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
  ]);
  const replicaSets = namespaces.flatMap((ns) =>
    Array.from({ length: DEPLOYMENTS_PER_NS }, (_, d) => ({
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: { name: `app-${d}-7c9f`, namespace: ns, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: `app-${d}`, uid: '11111111-2222-4333-8444-555555555555', controller: true }] },
      spec: { selector: { matchLabels: { app: `app-${d}` } }, template: { metadata: { labels: { app: `app-${d}` } }, spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] } } },
    })),
  );
  await apply(oc, replicaSets);

  const op = await startOperatorChild(oc);
  // Baseline once it is idle: synced, leading, every NodeUsage (BPF map memory) written.
  for (let n = 0; n < NODES; await sleep(500)) n = (await oc.api.get<{ items: unknown[] }>(usagePath('NodeUsage')).catch(() => ({ items: [] }))).items.length;
  await sleep(2000);
  const before = await op.stats();
  if (!before.gc) throw new Error('the operator child has no global.gc (--expose-gc)');

  // 10,000 pods, then one annotation each, as the agents' first writes.
  const specs = Array.from({ length: PODS }, (_, i) => {
    const ns = namespaces[i % NAMESPACES]!;
    const d = Math.floor(i / NAMESPACES) % DEPLOYMENTS_PER_NS;
    return { namespace: ns, name: `app-${d}-7c9f-${i.toString(36)}`, node: `podmeter-test-node-${i % NODES}`, owner: { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `app-${d}-7c9f` } };
  });
  const pods: TestPod[] = [];
  let at = Date.now();
  await pool(specs, 32, async (s) => void pods.push(await createPod(oc, s)));
  if (process.env.PODMETER_BENCH_DEBUG) console.log('after pods', await op.stats());
  console.log(`created ${PODS} pods in ${((Date.now() - at) / 1000).toFixed(1)} s`);
  const counts = new Map<string, Counters>();
  at = Date.now();
  let seed = 1;
  await pool(pods, 32, async (p) => {
    const c = counters(seed++);
    await writeCounts(oc, p, c);
    counts.set(p.uid, c);
  });
  console.log(`annotated ${PODS} pods in ${((Date.now() - at) / 1000).toFixed(1)} s`);

  // Namespace totals, followed through a watch.
  const seen = new Map<string, Counters>();
  const waiters = new Map<string, { want: Counters; resolve: () => void }>();
  const stop = new AbortController();
  const same = (a: Counters | undefined, b: Counters) => a !== undefined && a.ingressBytes === b.ingressBytes && a.egressBytes === b.egressBytes && a.ingressPackets === b.ingressPackets && a.egressPackets === b.egressPackets;
  const onObject = (o: UsageObject) => {
    const c = fromStrings(o.status);
    if (c === undefined) return;
    seen.set(o.metadata.name, c);
    const w = waiters.get(o.metadata.name);
    if (w && same(c, w.want)) {
      waiters.delete(o.metadata.name);
      w.resolve();
    }
  };
  const list = await oc.api.get<{ items: UsageObject[]; metadata: { resourceVersion: string } }>(usagePath('NamespaceUsage'));
  for (const o of list.items) onObject(o);
  const watching = oc.api.watch(usagePath('NamespaceUsage'), { query: { resourceVersion: list.metadata.resourceVersion }, signal: stop.signal, idleMs: 600_000 }, (ev) => onObject(ev.object as unknown as UsageObject));
  watching.catch((err) => console.error(`watch ended: ${(err as Error).message}`));
  const podsOf = new Map<string, TestPod[]>(namespaces.map((ns) => [ns, pods.filter((p) => p.namespace === ns)]));
  const expected = (ns: string) => add(...podsOf.get(ns)!.map((p) => counts.get(p.uid)!));
  const until = (ns: string, want: Counters) =>
    new Promise<void>((resolve) => {
      if (same(seen.get(ns), want)) return resolve();
      waiters.set(ns, { want, resolve });
    });
  at = Date.now();
  const converged = await Promise.race([Promise.all(namespaces.map((ns) => until(ns, expected(ns)))).then(() => true), sleep(120_000).then(() => false)]);
  if (!converged) {
    for (const ns of namespaces) {
      const want = expected(ns);
      if (!same(seen.get(ns), want)) console.error(`${ns}: want ingress ${want.ingressBytes}, seen ${seen.get(ns)?.ingressBytes}`);
    }
    const nodeUsages = (await oc.api.get<{ items: UsageObject[] }>(usagePath('NodeUsage'))).items;
    const checkpointed = new Map(nodeUsages.flatMap((n) => (n.status?.checkpoint ?? []).map((c) => [c.uid, { node: n.metadata.name, c }] as const)));
    for (const p of pods) {
      const cp = checkpointed.get(p.uid);
      if (cp === undefined || cp.c.ingressBytes !== String(counts.get(p.uid)!.ingressBytes)) console.error(`pod ${p.namespace}/${p.name} uid ${p.uid} node ${p.node}: checkpoint ${JSON.stringify(cp)}, written ${counts.get(p.uid)!.ingressBytes}`);
    }
    await sleep(600_000);
    throw new Error('namespace totals did not converge in 120 s');
  }
  console.log(`all ${NAMESPACES} namespace totals exact ${((Date.now() - at) / 1000).toFixed(1)} s after the last annotation`);
  await sleep(3000);
  const loaded = await op.stats();
  if (process.env.PODMETER_BENCH_DEBUG) console.log('before', before, 'loaded', loaded);

  // Steady state: in every namespace one annotation change at a time; each one's latency to the namespace total.
  const latencies: number[] = [];
  const reqBefore = await op.stats();
  const windowStart = Date.now();
  let writes = 0;
  await Promise.all(
    namespaces.map(async (ns) => {
      const list = podsOf.get(ns)!;
      let i = 0;
      while (Date.now() - windowStart < SECONDS * 1000) {
        const p = list[(i++ * 7919) % list.length]!;
        const c = add(counts.get(p.uid)!, counters(i));
        await writeCounts(oc, p, c);
        const written = Date.now();
        writes++;
        counts.set(p.uid, c);
        await until(ns, expected(ns));
        latencies.push(Date.now() - written);
      }
    }),
  );
  const windowS = (Date.now() - windowStart) / 1000;
  const reqAfter = await op.stats();
  stop.abort();
  latencies.sort((a, b) => a - b);

  const perPod = (loaded.heapUsed - before.heapUsed) / PODS;
  console.log('');
  console.log(`operator memory: heap ${(before.heapUsed / 2 ** 20).toFixed(1)} MiB -> ${(loaded.heapUsed / 2 ** 20).toFixed(1)} MiB with ${PODS} pods = ${(perPod / 1024).toFixed(2)} KiB per pod (target <= 1.5 KiB); RSS ${(before.rss / 2 ** 20).toFixed(0)} -> ${(loaded.rss / 2 ** 20).toFixed(0)} MiB`);
  console.log(`annotation change -> NamespaceUsage total: ${latencies.length} changes, p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms, max ${latencies.at(-1)} ms (target p99 <= 5000 ms)`);
  console.log(`operator API requests: ${((reqAfter.requests - reqBefore.requests) / windowS).toFixed(1)}/s while agents wrote ${(writes / windowS).toFixed(1)} annotations/s (${((reqAfter.requests - reqBefore.requests) / Math.max(1, writes)).toFixed(2)} requests per annotation write)`);
  console.log(`total bench time ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

await runMain(main);
