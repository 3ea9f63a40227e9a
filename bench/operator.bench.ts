/**
 * The operator at scale, run as users run it (`bin/podmeter operator` from
 * build/js, a child process) against the real kube-apiserver (test/cluster):
 * 1,000 Nodes x 50 pods (50,000 pods) owned by ReplicaSets of Deployments in
 * 100 namespaces, every pod annotated as an agent does.
 *
 *   node bench/operator.bench.ts [--nodes 1000] [--pods-per-node 50] [--namespaces 100]
 *        [--writers 40] [--seconds 60] [--churn-seconds 90] [--churn-rate 20]
 *
 * Phases and what each prints:
 * 1. operator A starts at 0 pods: RSS (VmRSS of /proc/<pid>/status, what a
 *    container memory limit sees) once it leads and has written every NodeUsage;
 * 2. the pods are created (concurrent POSTs, annotations included) while A
 *    watches: time to create, A's RSS and peak (VmHWM) once its totals are exact;
 * 3. A is stopped and operator B starts with every pod there (the initial
 *    list of a restarted replica): time to ready, RSS after the initial sync,
 *    its peak, and RSS samples over the next seconds (steady);
 * 4. steady: `--writers` simulated agents, each in its own namespace, change
 *    one pod's annotations at a time and wait for the NamespaceUsage total to
 *    include it (seen through a watch): p50/p99/max; RSS samples;
 * 5. churn: the same writers while `--churn-rate` pods/s are deleted and as
 *    many created (with annotations): latency, RSS samples (first and second
 *    half, so growth shows); at the end every namespace total must be exact.
 * Throughout: the operator's writes per second (the API server's own
 * apiserver_request_total for the resources only the operator writes: usage
 * status, its Lease, the budget ConfigMap) against --max-status-writes-per-second,
 * its CPU (/proc/<pid>/stat), the heap parts of its /metrics (where the RSS
 * goes) and the load average (latency moves with it; RSS hardly does).
 * Everything is removed afterwards, also on Ctrl-C.
 */
import { readFileSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { registerCleanup, runMain, sleep } from '../test/helpers/cleanup.ts';
import {
  apply,
  counters,
  operatorCluster,
  startOperator,
  type OperatorCluster,
  type OperatorProcess,
} from '../test/helpers/operatorCluster.ts';
import { sample } from '../test/helpers/samples.ts';
import { usagePath, type UsageObject } from '../common/contract/usage.ts';
import { addTo, CLASS_FIELDS, FIELDS, fromStrings, subFrom, zero, type Counts } from '../common/contract/counts.ts';
import { ANNOTATIONS, podAnnotations } from '../common/contract/annotations.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    'pods-per-node': { type: 'string', default: '50' },
    namespaces: { type: 'string', default: '100' },
    writers: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '60' },
    'churn-seconds': { type: 'string', default: '90' },
    'churn-rate': { type: 'string', default: '20' },
    'create-concurrency': { type: 'string', default: '48' },
  },
});
const NODES = Number(values.nodes);
const PODS = NODES * Number(values['pods-per-node']);
const NAMESPACES = Number(values.namespaces);
const WRITERS = Math.min(NAMESPACES, Number(values.writers));
const DEPLOYMENTS_PER_NS = 2;
const SECONDS = Number(values.seconds);
const CHURN_SECONDS = Number(values['churn-seconds']);
const CHURN_RATE = Number(values['churn-rate']);
const CREATE_CONCURRENCY = Number(values['create-concurrency']);
/** The operator's default --max-status-writes-per-second. */
const STATUS_BUDGET = 50;
const MiB = 2 ** 20;

/** bin/podmeter runs build/js only when it is newer than every source: refuse to measure the TypeScript entry. */
function requireFreshBuild(): void {
  const root = new URL('..', import.meta.url).pathname;
  let stamp: number;
  try {
    stamp = statSync(`${root}build/js/.stamp`).mtimeMs;
  } catch {
    throw new Error(
      'no build/js: run `make build` first (the bench measures bin/podmeter as users run it, from build/js)',
    );
  }
  const newer = execFileSync(
    'find',
    ['cli', 'agent', 'operator', 'common', '-name', '*.ts', '-newermt', `@${stamp / 1000}`, '-print', '-quit'],
    { cwd: root, encoding: 'utf8' },
  ).trim();
  if (newer !== '')
    throw new Error(
      `build/js is older than ${newer}: run \`make build\` first (bin/podmeter would run the TypeScript sources)`,
    );
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
function memOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) =>
    Number(/^(\w+):\s+(\d+) kB$/m.exec(status.split('\n').find((l) => l.startsWith(`${key}:`)) ?? '')?.[2] ?? NaN) *
    1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** CPU seconds (user + system) a process has used; /proc/<pid>/stat counts in clock ticks (100 a second on Linux). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** RSS sampled every `everyMs` while running. */
class RssSampler {
  readonly samples: number[] = [];
  readonly #timer: NodeJS.Timeout;
  constructor(pid: number, everyMs = 1000) {
    this.#timer = setInterval(() => {
      try {
        this.samples.push(memOf(pid).rss);
      } catch {
        // exited
      }
    }, everyMs);
  }
  stop(): number[] {
    clearInterval(this.#timer);
    return this.samples;
  }
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const mib = (b: number) => (b / MiB).toFixed(0);
function summary(samples: number[]): string {
  if (samples.length === 0) return 'no samples';
  const s = [...samples].sort((a, b) => a - b);
  return `min ${mib(s[0]!)}, median ${mib(s[Math.floor(s.length / 2)]!)}, max ${mib(s.at(-1)!)} MiB over ${s.length} samples`;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function latencyLine(what: string, ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  return `${what}: ${s.length} changes, p50 ${percentile(s, 50)} ms, p99 ${percentile(s, 99)} ms, max ${s.at(-1)} ms (target p99 <= 5000 ms)`;
}

async function pool<T>(items: Iterable<T>, concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  const it = items[Symbol.iterator]();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let r = it.next(); !r.done; r = it.next()) await fn(r.value);
    }),
  );
}

/** The operator's heap parts from its /metrics (prom-client's default process metrics). */
async function heapParts(op: OperatorProcess): Promise<string> {
  const text = await op.metrics();
  const get = (name: string, labels: Record<string, string> = {}) => sample(text, name, labels) ?? NaN;
  return (
    `heap used ${mib(get('nodejs_heap_size_used_bytes'))} of ${mib(get('nodejs_heap_size_total_bytes'))} MiB ` +
    `(old space ${mib(get('nodejs_heap_space_size_total_bytes', { space: 'old' }))}, large objects ${mib(get('nodejs_heap_space_size_total_bytes', { space: 'large_object' }))}, ` +
    `code ${mib(get('nodejs_heap_space_size_total_bytes', { space: 'code' }))}, new ${mib(get('nodejs_heap_space_size_total_bytes', { space: 'new' }))}), external ${mib(get('nodejs_external_memory_bytes'))} MiB`
  );
}

/** Writes (POST, PUT, PATCH, DELETE) to what only the operator writes: usage objects and their status, its Lease, the budget ConfigMap. */
async function operatorWrites(oc: OperatorCluster): Promise<{ status: number; other: number; statusSeconds: number }> {
  const r = await oc.cluster.kubectl(['get', '--raw', '/metrics']);
  if (r.code !== 0) throw new Error(`kubectl get --raw /metrics: ${r.stderr}`);
  let status = 0;
  let other = 0;
  /** Time the API server spent answering status writes (apiserver_request_duration_seconds_sum). */
  let statusSeconds = 0;
  const usage = (line: string) =>
    /resource="(namespaceusages|workloadusages|nodeusages)"/.test(line) && /verb="(PUT|POST)"/.test(line);
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('apiserver_request_duration_seconds_sum{') && usage(line))
      statusSeconds += Number(line.split(' ').at(-1));
    if (!line.startsWith('apiserver_request_total{')) continue;
    const verb = /verb="(\w+)"/.exec(line)?.[1] ?? '';
    if (!['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY'].includes(verb)) continue;
    const resource = /resource="([^"]*)"/.exec(line)?.[1] ?? '';
    const n = Number(line.split(' ').at(-1));
    if (['namespaceusages', 'workloadusages', 'nodeusages'].includes(resource)) status += n;
    else if (resource === 'leases' || (resource === 'configmaps' && line.includes('scope="resource"'))) other += n;
  }
  return { status, other, statusSeconds };
}

interface BenchPod {
  namespace: string;
  name: string;
  uid: string;
  counts: Counts;
}

function annotations(c: Counts): Record<string, string | null> {
  return {
    ...Object.fromEntries(CLASS_FIELDS.map((f) => [ANNOTATIONS[f], null])),
    ...podAnnotations(c, undefined),
    [ANNOTATIONS.updated]: new Date().toISOString(),
  };
}

async function main(): Promise<void> {
  requireFreshBuild();
  const t0 = Date.now();
  const oc = await operatorCluster({ after: (fn) => registerCleanup(fn) });
  const namespaces = Array.from({ length: NAMESPACES }, (_, i) => `bench-${i}`);
  await apply(oc, [
    ...Array.from({ length: NODES }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: `podmeter-test-node-${i}`, annotations: { 'podmeter.io/bpf-map-bytes': String(100_000 + i) } },
    })),
    ...namespaces.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
  ]);
  await apply(
    oc,
    namespaces.flatMap((ns) =>
      Array.from({ length: DEPLOYMENTS_PER_NS }, (_, d) => ({
        apiVersion: 'apps/v1',
        kind: 'ReplicaSet',
        metadata: {
          name: `app-${d}-7c9f`,
          namespace: ns,
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'Deployment',
              name: `app-${d}`,
              uid: '11111111-2222-4333-8444-555555555555',
              controller: true,
            },
          ],
        },
        spec: {
          selector: { matchLabels: { app: `app-${d}` } },
          template: {
            metadata: { labels: { app: `app-${d}` } },
            spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
          },
        },
      })),
    ),
  );
  const nodeUsages = async () =>
    (await oc.api.get<{ items: unknown[] }>(usagePath('NodeUsage')).catch(() => ({ items: [] }))).items.length;

  // --- 1. operator A at 0 pods ------------------------------------------------
  const a = await startOperator(oc, { identity: 'podmeter-bench-op-a' });
  const aPid = a.child.pid!;
  for (let deadline = Date.now() + 300_000; (await nodeUsages()) < NODES; await sleep(1000)) {
    if (Date.now() > deadline) throw new Error(`operator A did not write ${NODES} NodeUsages within 300 s`);
  }
  await sleep(3000);
  const idle = new RssSampler(aPid, 500);
  await sleep(5000);
  console.log(
    `1. operator A, 0 pods, leading, ${NODES} NodeUsages written: RSS ${summary(idle.stop())} (peak so far ${mib(memOf(aPid).hwm)} MiB); ${await heapParts(a)}`,
  );

  // --- 2. 50,000 pods created while A watches -------------------------------
  const pods: BenchPod[] = [];
  const nsTotal = new Map<string, Counts>(namespaces.map((ns) => [ns, zero()]));
  let seq = 0;
  const newPod = async (ns: string, d: number, node: number): Promise<BenchPod> => {
    const i = seq++;
    const counts = counters(i + 1);
    const name = `app-${d}-7c9f-${i.toString(36)}`;
    const pod = await oc.api.request<{ metadata: { uid: string } }>('POST', `/api/v1/namespaces/${ns}/pods`, {
      body: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: ns,
          annotations: annotations(counts),
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'ReplicaSet',
              name: `app-${d}-7c9f`,
              uid: '00000000-0000-4000-8000-000000000001',
              controller: true,
            },
          ],
        },
        spec: { nodeName: `podmeter-test-node-${node}`, containers: [{ name: 'app', image: 'example.invalid/app' }] },
      },
      timeoutMs: 120_000,
    });
    addTo(nsTotal.get(ns)!, counts);
    return { namespace: ns, name, uid: pod.metadata.uid, counts };
  };
  const creating = new RssSampler(aPid, 1000);
  let at = Date.now();
  await pool(
    Array.from({ length: PODS }, (_, i) => i),
    CREATE_CONCURRENCY,
    async (i) =>
      void pods.push(
        await newPod(namespaces[i % NAMESPACES]!, Math.floor(i / NAMESPACES) % DEPLOYMENTS_PER_NS, i % NODES),
      ),
  );
  const createS = (Date.now() - at) / 1000;
  console.log(
    `2. created ${PODS} pods (annotated) in ${createS.toFixed(0)} s (${(PODS / createS).toFixed(0)}/s, ${CREATE_CONCURRENCY} concurrent POSTs)`,
  );

  // Namespace totals, followed through one watch for the rest of the bench.
  const seen = new Map<string, Counts>();
  const waiters = new Set<{ ns: string; want: Counts; resolve: () => void }>();
  const covers = (have: Counts | undefined, want: Counts) =>
    have !== undefined && FIELDS.every((f) => have[f] >= want[f]);
  const onObject = (o: UsageObject) => {
    const c = fromStrings(o.status);
    if (c === undefined) return;
    seen.set(o.metadata.name, c);
    for (const w of waiters) {
      if (w.ns === o.metadata.name && covers(c, w.want)) {
        waiters.delete(w);
        w.resolve();
      }
    }
  };
  const stopWatch = new AbortController();
  registerCleanup(() => stopWatch.abort());
  const follow = async () => {
    while (!stopWatch.signal.aborted) {
      const list = await oc.api.get<{ items: UsageObject[]; metadata: { resourceVersion: string } }>(
        usagePath('NamespaceUsage'),
      );
      for (const o of list.items) onObject(o);
      await oc.api
        .watch(
          usagePath('NamespaceUsage'),
          { query: { resourceVersion: list.metadata.resourceVersion }, signal: stopWatch.signal, idleMs: 600_000 },
          (ev) => onObject(ev.object as unknown as UsageObject),
        )
        .catch(() => {});
    }
  };
  void follow();
  /** Resolves once the namespace's total covers `want` (totals only grow: covering it means everything written so far is in). */
  const until = (ns: string, want: Counts) =>
    new Promise<void>((resolve) => (covers(seen.get(ns), want) ? resolve() : waiters.add({ ns, want, resolve })));
  const exact = () => namespaces.every((ns) => FIELDS.every((f) => seen.get(ns)?.[f] === nsTotal.get(ns)![f]));
  const allExact = async (what: string) => {
    for (const deadline = Date.now() + 300_000; !exact(); await sleep(500)) {
      if (Date.now() > deadline) {
        const wrong = namespaces.filter((ns) => !FIELDS.every((f) => seen.get(ns)?.[f] === nsTotal.get(ns)![f]));
        throw new Error(
          `${what}: ${wrong.length} namespace totals not exact within 300 s, e.g. ${wrong[0]}: want ingress ${nsTotal.get(wrong[0]!)!.ingressBytes}, seen ${seen.get(wrong[0]!)?.ingressBytes}`,
        );
      }
    }
  };
  await allExact('operator A after the creates');
  console.log(
    `   operator A: all ${NAMESPACES} namespace totals exact ${((Date.now() - at) / 1000 - createS).toFixed(0)} s after the last create; RSS while creating ${summary(creating.stop())}, now ${mib(memOf(aPid).rss)} MiB, peak ${mib(memOf(aPid).hwm)} MiB; ${await heapParts(a)}`,
  );

  // --- 3. operator B: the initial list of every pod ---------------------------
  await a.kill('SIGTERM');
  at = Date.now();
  const b = await startOperator(oc, { identity: 'podmeter-bench-op-b' });
  const readyS = (Date.now() - at) / 1000;
  const bPid = b.child.pid!;
  const synced = memOf(bPid);
  console.log(
    `3. operator B started with ${PODS} pods: ready in ${readyS.toFixed(1)} s; RSS after the initial sync ${mib(synced.rss)} MiB, peak ${mib(synced.hwm)} MiB (target <= 384 MiB)`,
  );
  const settling = new RssSampler(bPid, 1000);
  for (const deadline = Date.now() + 120_000; !(await b.leader().catch(() => false)); await sleep(200)) {
    if (Date.now() > deadline) throw new Error('operator B did not lead within 120 s');
  }
  // A new leader writes every object once (its ledger, under its name): wait until its rounds write nothing more.
  at = Date.now();
  for (const deadline = Date.now() + 120_000; !b.logs.some((l) => l.msg === 'ledger loaded'); await sleep(200)) {
    if (Date.now() > deadline) throw new Error('operator B did not load its ledger within 120 s');
  }
  // (Its status writes as the API server counts them: one round can last many seconds at the budget.)
  for (let last = -1, quiet = 0; quiet < 5; await sleep(1000)) {
    const n = (await operatorWrites(oc)).status;
    quiet = n === last ? quiet + 1 : 0;
    last = n;
    if (Date.now() - at > 300_000) throw new Error('operator B still writing 300 s after it took the lead');
  }
  console.log(
    `   operator B leading, its takeover writes done in ${((Date.now() - at) / 1000 - 5).toFixed(0)} s: RSS since ready ${summary(settling.stop())}, peak ${mib(memOf(bPid).hwm)} MiB; ${await heapParts(b)}`,
  );
  const after = new RssSampler(bPid, 1000);
  await sleep(20_000);
  console.log(`   the next 20 s (idle): RSS ${summary(after.stop())}`);

  // --- 4. steady: simulated agents change annotations ---------------------------
  const live = new Map<string, BenchPod[]>(namespaces.map((ns) => [ns, []]));
  for (const p of pods) live.get(p.namespace)!.push(p);
  const writerNs = namespaces.slice(0, WRITERS);
  let writes = 0;
  const writer = async (ns: string, untilMs: number, latencies: number[]) => {
    let i = 0;
    while (Date.now() < untilMs) {
      const list = live.get(ns)!;
      const p = list[(i++ * 7919) % list.length]!;
      const next = counters(i);
      addTo(next, p.counts);
      try {
        await oc.api.request('PATCH', `/api/v1/namespaces/${ns}/pods/${p.name}`, {
          body: { metadata: { uid: p.uid, annotations: annotations(next) } },
          contentType: 'application/merge-patch+json',
          timeoutMs: 60_000,
        });
      } catch (err) {
        if ((err as { status?: number }).status === 404 || (err as { status?: number }).status === 409) continue; // deleted by the churn meanwhile
        throw err;
      }
      const total = nsTotal.get(ns)!;
      subFrom(total, p.counts);
      addTo(total, next);
      p.counts = next;
      const written = Date.now();
      writes++;
      await until(ns, { ...total });
      latencies.push(Date.now() - written);
    }
  };
  const window = async (seconds: number, extra: () => Promise<void>) => {
    const before = await operatorWrites(oc);
    const cpuBefore = cpuSeconds(bPid);
    const rss = new RssSampler(bPid, 1000);
    const latencies: number[] = [];
    const start = Date.now();
    writes = 0;
    await Promise.all([...writerNs.map((ns) => writer(ns, start + seconds * 1000, latencies)), extra()]);
    const s = (Date.now() - start) / 1000;
    const after = await operatorWrites(oc);
    return {
      latencies,
      rss: rss.stop(),
      cpu: (cpuSeconds(bPid) - cpuBefore) / s,
      writeMs: (1000 * (after.statusSeconds - before.statusSeconds)) / Math.max(1, after.status - before.status),
      statusPerS: (after.status - before.status) / s,
      otherPerS: (after.other - before.other) / s,
      annotationsPerS: writes / s,
    };
  };
  const steady = await window(SECONDS, async () => {});
  console.log(
    `4. steady, ${WRITERS} simulated agents writing ${steady.annotationsPerS.toFixed(1)} annotations/s for ${SECONDS} s (load average ${loadavg()}):`,
  );
  console.log(`   ${latencyLine('annotation change -> NamespaceUsage total', steady.latencies)}`);
  console.log(
    `   operator writes: ${steady.statusPerS.toFixed(1)} status writes/s (budget ${STATUS_BUDGET}/s), ${steady.otherPerS.toFixed(2)} Lease and ConfigMap writes/s; operator CPU ${(steady.cpu * 100).toFixed(0)} % of a core; the API server took ${steady.writeMs.toFixed(0)} ms per status write on average`,
  );
  console.log(`   RSS ${summary(steady.rss)}`);

  // --- 5. churn: pods deleted and created, annotations changing -------------------
  let deleted = 0;
  let created = 0;
  const churn = await window(CHURN_SECONDS, async () => {
    const end = Date.now() + CHURN_SECONDS * 1000;
    const tickMs = 250;
    const perTick = Math.max(1, Math.round((CHURN_RATE * tickMs) / 1000));
    let node = 0;
    while (Date.now() < end) {
      const tick = Date.now();
      await Promise.all(
        Array.from({ length: perTick }, async (_, k) => {
          const ns = namespaces[(deleted + k) % NAMESPACES]!;
          const list = live.get(ns)!;
          // A writer may be changing it right now: its PATCH then lands before the DELETE (the final has it) or fails (404, skipped).
          const victim = list.splice(Math.floor(Math.random() * list.length), 1)[0]!;
          await oc.api.request('DELETE', `/api/v1/namespaces/${ns}/pods/${victim.name}`, {
            query: { gracePeriodSeconds: 0 },
            timeoutMs: 60_000,
          });
          deleted++;
          const p = await newPod(ns, deleted % DEPLOYMENTS_PER_NS, node++ % NODES);
          list.push(p);
          created++;
        }),
      );
      await sleep(Math.max(0, tickMs - (Date.now() - tick)));
    }
  });
  const half = Math.floor(churn.rss.length / 2);
  console.log(
    `5. churn for ${CHURN_SECONDS} s: ${deleted} pods deleted and ${created} created (${(deleted / CHURN_SECONDS).toFixed(1)}/s each way) while agents wrote ${churn.annotationsPerS.toFixed(1)} annotations/s (load average ${loadavg()}):`,
  );
  console.log(`   ${latencyLine('annotation change -> NamespaceUsage total', churn.latencies)}`);
  console.log(
    `   operator writes: ${churn.statusPerS.toFixed(1)} status writes/s (budget ${STATUS_BUDGET}/s), ${churn.otherPerS.toFixed(2)} Lease and ConfigMap writes/s; operator CPU ${(churn.cpu * 100).toFixed(0)} % of a core; the API server took ${churn.writeMs.toFixed(0)} ms per status write on average`,
  );
  console.log(
    `   RSS first half ${summary(churn.rss.slice(0, half))}; second half ${summary(churn.rss.slice(half))}; peak ${mib(memOf(bPid).hwm)} MiB; ${await heapParts(b)}`,
  );
  at = Date.now();
  await allExact('operator B after the churn');
  console.log(
    `   every namespace total exact (deleted pods' counts kept) ${((Date.now() - at) / 1000).toFixed(1)} s after the churn`,
  );
  stopWatch.abort();
  console.log(`total bench time ${((Date.now() - t0) / 1000).toFixed(0)} s (load average ${loadavg()})`);
}

await runMain(main);
