/**
 * A bounded ledger under Job churn, against a real kube-apiserver: pods of
 * short-lived Jobs (one Job per pod, as CronJobs, Argo and Spark make them)
 * are created with their counts and deleted, thousands of them, while the
 * operator runs with a short --usage-retention.
 *
 * - Phase A (PODMETER_TEST_RESTART_JOBS, default 1,000): the operator is
 *   stopped halfway; while it is down checkpointed pods die and new ones
 *   start; the restarted operator loses nothing, counts nothing twice, keeps
 *   every gone clock (each WorkloadUsage's goneSince as written before the
 *   stop) and deletes nothing before its retention. A Node and its pods go:
 *   its NodeUsage is deleted after the retention too.
 * - Phase B (PODMETER_TEST_CHURN_JOBS, default 3,000; 10,000 takes 8 min
 *   more): the operator's RSS
 *   (VmRSS of /proc/<pid>/status) before the churn and after it, once the
 *   gone Jobs' objects are deleted, the ledger's remembered deletions (5 min)
 *   and the pod store's deleted pods (the agents' finals window, 10 min) have
 *   lapsed (PODMETER_TEST_RSS_SETTLE_MS): below its peak and within 10 %.
 * Jobs start at PODMETER_TEST_CHURN_RATE a second (default 20: each Job's
 * WorkloadUsage costs 4 API requests, and this machine's API server keeps up
 * with about that beside the test's own requests).
 * Throughout: every usage object's size (JSON as the API server returns it)
 * stays under 512 KiB, the NamespaceUsage's totals equal the sum of every
 * pod's final counts, and a WorkloadUsage of a live Job is never deleted.
 * Needs the test control plane (test/cluster); no root. Takes ~15 min.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  add,
  apply,
  asStrings,
  ledgerLoaded,
  ledgerLoads,
  operatorCluster,
  startOperator,
  totals,
  totalsBecome,
  usage,
  type OperatorCluster,
} from '../helpers/operatorCluster.ts';
import { JobChurn } from '../helpers/jobChurn.ts';
import { waitFor } from '../helpers/poll.ts';
import { sleep } from '../helpers/cleanup.ts';
import { listAll } from '../../common/kube/list.ts';
import { usagePath, type UsageKind, type UsageObject } from '../../common/contract/usage.ts';
import { FINALS_WINDOW_MS } from '../../common/contract/finals.ts';

const RESTART_JOBS = Number(process.env.PODMETER_TEST_RESTART_JOBS ?? 1000);
const CHURN_JOBS = Number(process.env.PODMETER_TEST_CHURN_JOBS ?? 3000);
/** Jobs started per second: what the operator's writes keep up with here (each Job's WorkloadUsage costs a create, 2 writes and a delete). */
const RATE = Number(process.env.PODMETER_TEST_CHURN_RATE ?? 20);
const RETENTION_MS = 30_000;
/** Pods alive at a time: pod i is deleted once pod i + WINDOW is created. */
const WINDOW = 100;
const CONCURRENCY = 16;
const NODES = ['podmeter-test-n-0', 'podmeter-test-n-1', 'podmeter-test-n-2', 'podmeter-test-n-3'];
const TEMP_NODE = 'podmeter-test-n-temp';
const NS = 'jobs';
const MAX_OBJECT_BYTES = 512 * 1024;
/** The operator forgets deletions it saw after this long (operator/ledger/book.ts rememberDeletesMs). */
const REMEMBER_MS = 5 * 60_000;

/** Where a process's RSS is (MiB): malloc's main arena ([heap]), other anonymous memory (V8's heap, other arenas), files. */
function rssParts(pid: number): string {
  const kib = { brk: 0, anon: 0, file: 0 };
  let part: keyof typeof kib = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\S+)\s*(.*)$/.exec(line);
    if (mapping) part = mapping[2] === '[heap]' ? 'brk' : mapping[1] === '0' ? 'anon' : 'file';
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kib[part] += Number(rss[1]);
  }
  return `malloc [heap] ${(kib.brk / 1024).toFixed(1)}, other anonymous ${(kib.anon / 1024).toFixed(1)}, files ${(kib.file / 1024).toFixed(1)} MiB`;
}

/** The operator's V8 heap in use (its /metrics), to tell the heap from what the allocator keeps. */
const heapOf = async (url: string) =>
  Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
const rssOf = (pid: number) =>
  Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** Every usage object's size and count, sampled while churning; WorkloadUsage deletions with the goneSince last seen. */
class Observer {
  readonly maxBytes: Record<UsageKind, number> = { NamespaceUsage: 0, WorkloadUsage: 0, NodeUsage: 0 };
  readonly maxCount: Record<UsageKind, number> = { NamespaceUsage: 0, WorkloadUsage: 0, NodeUsage: 0 };
  maxLists = { retiring: 0, retiredThrough: 0 };
  #stopped = false;
  readonly #done: Promise<void>;

  constructor(oc: OperatorCluster) {
    this.#done = (async () => {
      while (!this.#stopped) {
        for (const kind of ['NamespaceUsage', 'WorkloadUsage', 'NodeUsage'] as const) {
          const objects = await listAll<UsageObject>(oc.api, usagePath(kind)).catch(() => []);
          this.maxCount[kind] = Math.max(this.maxCount[kind], objects.length);
          for (const o of objects) {
            this.maxBytes[kind] = Math.max(this.maxBytes[kind], JSON.stringify(o).length);
            this.maxLists.retiring = Math.max(this.maxLists.retiring, o.status?.retiring?.length ?? 0);
            this.maxLists.retiredThrough = Math.max(
              this.maxLists.retiredThrough,
              o.status?.retiredThrough?.length ?? 0,
            );
          }
        }
        await sleep(3000);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
  }
}

/** WorkloadUsage and NodeUsage deletions (watched): when, and the goneSince the object had. */
function watchDeletions(
  oc: OperatorCluster,
  signal: AbortSignal,
): Map<string, { goneSince: string | undefined; deletedAt: number; firstGoneSince: string | undefined }> {
  const seen = new Map<string, string | undefined>();
  const first = new Map<string, string | undefined>();
  const deletions = new Map<
    string,
    { goneSince: string | undefined; deletedAt: number; firstGoneSince: string | undefined }
  >();
  for (const kind of ['WorkloadUsage', 'NodeUsage'] as const) {
    void (async () => {
      while (!signal.aborted) {
        await oc.api
          .watch(usagePath(kind), { idleMs: 120_000, signal }, (ev) => {
            const o = ev.object as unknown as UsageObject;
            const key = `${kind}/${o.metadata.name}`;
            if (ev.type === 'DELETED')
              deletions.set(key, {
                goneSince: o.status?.goneSince,
                deletedAt: Date.now(),
                firstGoneSince: first.get(key),
              });
            else {
              seen.set(key, o.status?.goneSince);
              if (o.status?.goneSince !== undefined && !first.has(key)) first.set(key, o.status.goneSince);
              if (o.status?.goneSince === undefined) first.delete(key);
            }
          })
          .catch(() => sleep(500));
      }
    })();
  }
  return deletions;
}

test(
  'bounded ledger: Job churn, retention, a restart in the middle, RSS back down',
  { timeout: 30 * 60_000 },
  async (t) => {
    const oc = await operatorCluster(t);
    await apply(oc, [
      ...[...NODES, TEMP_NODE].map((name) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name } })),
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    ]);
    const args = ['--usage-retention', `${RETENTION_MS / 1000}s`, '--max-status-writes-per-second', '500'];
    const op = await startOperator(oc, { identity: 'podmeter-test-op-r', args });
    await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);
    const abort = new AbortController();
    t.after(() => abort.abort());
    const deletions = watchDeletions(oc, abort.signal);
    const churn = new JobChurn({
      oc,
      namespace: NS,
      node: (i) => NODES[i % NODES.length]!,
      window: WINDOW,
      concurrency: CONCURRENCY,
      ratePerS: RATE,
      growEvery: 10,
    });
    const observer = new Observer(oc);
    t.after(() => observer.stop());

    // A Job that lives throughout: its WorkloadUsage must stay.
    const keeper = 1_000_000;
    await churn.create(keeper);
    // A Node whose pods die and which goes: its NodeUsage is deleted after the retention.
    for (let i = 0; i < 5; i++) await churn.create(2_000_000 + i, TEMP_NODE);
    await totalsBecome(
      oc,
      'NodeUsage',
      TEMP_NODE,
      add(...[0, 1, 2, 3, 4].map((i) => churn.finals.get(2_000_000 + i)!)),
    );
    for (let i = 0; i < 5; i++) await churn.delete(2_000_000 + i);
    await oc.api.request('DELETE', `/api/v1/nodes/${TEMP_NODE}`);

    let leftOver: unknown;
    const jobObjects = async () => {
      const objects = await listAll<UsageObject>(oc.api, usagePath('WorkloadUsage'));
      leftOver = objects
        .filter((o) => o.metadata.name !== keeperName)
        .slice(0, 3)
        .map((o) => ({
          name: o.metadata.name,
          status: o.status,
        }));
      return objects.map((o) => o.metadata.name).sort();
    };
    const keeperName = `${NS}.job.job-${keeper}`;

    await t.test(
      `phase A: ${RESTART_JOBS} Jobs, the operator stopped halfway; nothing lost, doubled or deleted early`,
      async () => {
        const half = Math.floor(RESTART_JOBS / 2);
        const started = Date.now();
        await churn.run(0, half, { first: 0, finish: false });
        // The live pods are checkpointed (their owners unknown, each waits 5 s: operator/pods.ts OWNER_WAIT_MS).
        const checkpointed = async () =>
          new Set(
            (await listAll<UsageObject>(oc.api, usagePath('NodeUsage'))).flatMap((o) =>
              (o.status?.checkpoint ?? []).map((c) => c.uid),
            ),
          );
        const live = (await churn.alive()).filter(([i]) => i < half);
        await waitFor(
          'the live pods checkpointed',
          async () => {
            const c = await checkpointed();
            return live.every(([, uid]) => c.has(uid)) ? true : undefined;
          },
          60_000,
        );
        await op.kill('SIGTERM');
        const stoppedAt = Date.now();
        const loads = ledgerLoads(op);
        const goneBeforeStop = new Map(
          (await listAll<UsageObject>(oc.api, usagePath('WorkloadUsage')))
            .filter((o) => o.status?.goneSince)
            .map((o) => [o.metadata.name, o.status!.goneSince!]),
        );
        // While no operator runs: checkpointed pods die (their last counts are their checkpoints), new pods start and live on.
        const dying = live.slice(0, 40);
        await Promise.all(dying.map(([i]) => churn.delete(i, false)));
        const born = Array.from({ length: 20 }, (_, k) => 3_000_000 + k);
        await Promise.all(born.map((i) => churn.create(i)));
        await sleep(10_000); // longer than a sweep interval (retention / 4): a clock reset by the restart would show
        await op.restart();
        await ledgerLoaded(op, loads);
        const restartedAt = Date.now();
        assert.ok(
          op.logs.some((l) => l.msg === 'ledger loaded' && l.diedWhileAway === 40),
          'the 40 pods that died while it was down are found',
        );
        await churn.run(half, RESTART_JOBS, { first: 0, finish: true });
        await Promise.all(born.map((i) => churn.delete(i)));
        t.diagnostic(
          `phase A: ${RESTART_JOBS} Jobs in ${((Date.now() - started) / 1000).toFixed(0)} s, operator down ${((restartedAt - stoppedAt) / 1000).toFixed(1)} s; ${goneBeforeStop.size} WorkloadUsages gone before the stop`,
        );

        await totalsBecome(oc, 'NamespaceUsage', NS, churn.sum(), 120_000);
        await waitFor(
          "every gone Job's WorkloadUsage deleted",
          async () => ((await jobObjects()).join() === keeperName ? true : undefined),
          RETENTION_MS + 120_000,
          () => leftOver,
        );
        await waitFor(
          "the gone Node's NodeUsage deleted",
          async () => ((await usage(oc, 'NodeUsage', TEMP_NODE)) === undefined ? true : undefined),
          RETENTION_MS + 60_000,
        );
        assert.deepEqual(
          await totals(oc, 'NamespaceUsage', NS),
          asStrings(churn.sum()),
          'the namespace carries every byte of what was deleted',
        );
        assert.equal(
          (await usage(oc, 'NamespaceUsage', NS))?.status?.retiredPods,
          churn.finals.size - 1,
          'every pod but the keeper retired once',
        );

        // No deletion before its retention, counted from the time written before the stop (not reset by the restart).
        let carried = 0;
        for (const [key, d] of deletions) {
          assert.ok(d.goneSince !== undefined, `${key} was deleted without a goneSince`);
          assert.ok(
            d.deletedAt - Date.parse(d.goneSince) >= RETENTION_MS,
            `${key} deleted ${d.deletedAt - Date.parse(d.goneSince)} ms after it was gone`,
          );
          assert.equal(d.goneSince, d.firstGoneSince, `${key}: its goneSince was rewritten while it stayed gone`);
          const before = goneBeforeStop.get(key.slice('WorkloadUsage/'.length));
          if (key.startsWith('WorkloadUsage/') && before !== undefined) {
            assert.equal(d.goneSince, before, `${key}: the restart reset its gone clock`);
            if (d.deletedAt < restartedAt + RETENTION_MS) carried++;
          }
        }
        assert.ok(deletions.has(`NodeUsage/${TEMP_NODE}`));
        assert.ok(
          carried > 0,
          'objects gone before the stop are deleted on their own clock, before a clock started at the restart would let them',
        );
        t.diagnostic(
          `${deletions.size} objects deleted, ${carried} of them gone before the stop and deleted less than the retention after the restart`,
        );
      },
    );

    await t.test(
      `phase B: ${CHURN_JOBS} Jobs; objects bounded, totals exact, gone Jobs' objects deleted, RSS back down`,
      async () => {
        const pid = op.child.pid!;
        const rssBefore = rssOf(pid);
        const partsBefore = rssParts(pid);
        const heapBefore = await heapOf(op.url);
        const samples: number[] = [];
        const sampler = setInterval(() => {
          try {
            samples.push(rssOf(pid));
          } catch {
            clearInterval(sampler); // (the operator has exited: the test failed before)
          }
        }, 1000);
        const first = 4_000_000;
        const started = Date.now();
        await churn.run(first, first + CHURN_JOBS, { first, finish: true });
        const churnS = (Date.now() - started) / 1000;
        const endedAt = Date.now();
        await totalsBecome(oc, 'NamespaceUsage', NS, churn.sum(), 180_000);
        const exactS = (Date.now() - endedAt) / 1000;
        await waitFor(
          "every gone Job's WorkloadUsage deleted",
          async () => ((await jobObjects()).join() === keeperName ? true : undefined),
          RETENTION_MS + 180_000,
          () => leftOver,
        );
        const deletedS = (Date.now() - endedAt) / 1000;
        const rssDeleted = rssOf(pid);
        await observer.stop();
        // The ledger remembers each deletion it saw for 5 minutes (for a takeover), the pod store each deleted pod for
        // the agents' finals window (10 minutes): memory comes back once they lapse.
        const settleMs = Math.max(REMEMBER_MS, FINALS_WINDOW_MS) + 30_000;
        const settleUntil = endedAt + Number(process.env.PODMETER_TEST_RSS_SETTLE_MS ?? settleMs);
        while (Date.now() < settleUntil) await sleep(5000);
        clearInterval(sampler);
        const rssAfter = rssOf(pid);
        const partsAfter = rssParts(pid);
        const heapAfter = await heapOf(op.url);
        assert.deepEqual(await totals(oc, 'NamespaceUsage', NS), asStrings(churn.sum()));
        t.diagnostic(
          `phase B: ${CHURN_JOBS} Jobs (${churn.requests} pod requests in all) in ${churnS.toFixed(0)} s; namespace exact ${exactS.toFixed(0)} s and every gone Job's object deleted ${deletedS.toFixed(0)} s after the last pod went`,
        );
        t.diagnostic(
          `largest objects (bytes of JSON): ${JSON.stringify(observer.maxBytes)}; most objects at once: ${JSON.stringify(observer.maxCount)}; longest lists: ${JSON.stringify(observer.maxLists)}`,
        );
        t.diagnostic(
          `operator RSS: ${mib(rssBefore)} MiB before (${partsBefore}), peak ${mib(Math.max(...samples))} MiB, ${mib(rssDeleted)} MiB once the objects were deleted, ${mib(rssAfter)} MiB ${((Date.now() - endedAt) / 60_000).toFixed(1)} min after the churn (${partsAfter}); heap used ${mib(heapBefore)} -> ${mib(heapAfter)} MiB`,
        );
        for (const [kind, bytes] of Object.entries(observer.maxBytes))
          assert.ok(bytes <= MAX_OBJECT_BYTES, `${kind}: ${bytes} bytes`);
        // Comes back down from its peak, and to where it was: +0.7 % (3,000 Jobs) and -0.2 % (10,000) here once the pod
        // store forgot the deleted pods and malloc's free pages went back (README); +8.8-15.9 % before.
        const peak = Math.max(...samples);
        assert.ok(rssAfter < peak, `RSS ${mib(rssAfter)} MiB after the churn, not below its peak ${mib(peak)} MiB`);
        assert.ok(
          rssAfter <= rssBefore * 1.1,
          `RSS ${mib(rssAfter)} MiB after the churn, ${mib(rssBefore)} MiB before`,
        );
        assert.ok((await usage(oc, 'WorkloadUsage', keeperName)) !== undefined, 'a live Job keeps its WorkloadUsage');
      },
    );
  },
);
