/**
 * The ledger's 512 KiB bound under a status write backlog, against a real
 * kube-apiserver: PODMETER_TEST_BACKLOG_JOBS (default 10,000) one-pod Jobs
 * on one node, created and deleted as fast as the API server takes them
 * (WINDOW alive at a time), while the operator may write only
 * PODMETER_TEST_BACKLOG_BUDGET (default 100) statuses a second. Each Job is
 * its own WorkloadUsage (a create and a status write), so pods retire far
 * faster than their workloads can take them: the NodeUsage records every
 * retirement, its intents pile up, and those past its own bound go into
 * NodeRetirements objects (operator/ledger/spills.ts).
 *
 * - The backlog forms: at the middle the NodeUsage has recorded every dead
 *   pod while thousands of its retirements are in no WorkloadUsage yet, and
 *   it lists NodeRetirements objects.
 * - There the operator is SIGKILLed and started again: the ledger is read
 *   back from the objects alone (NodeUsage, the NodeRetirements it lists,
 *   the rollup marks) and nothing is lost or counted twice.
 * - Every NodeUsage, NamespaceUsage and NodeRetirements object stays under
 *   512 KiB (JSON as the API server returns it, sampled every 2 s); at the
 *   end the NamespaceUsage and the WorkloadUsages are exact, every pod
 *   retired once, and every NodeRetirements object is deleted.
 * Needs the test control plane (test/cluster); no root. Takes ~6 min.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  add,
  apply,
  asStrings,
  ledgerLoaded,
  ledgerLoads,
  operatorCluster,
  startOperator,
  totalsBecome,
  usage,
  type OperatorCluster,
} from '../helpers/operatorCluster.ts';
import { JobChurn } from '../helpers/jobChurn.ts';
import { waitFor } from '../helpers/poll.ts';
import { sleep } from '../helpers/cleanup.ts';
import { listAll } from '../../common/kube/list.ts';
import { spillPath, usagePath, type SpillObject, type UsageObject } from '../../common/contract/usage.ts';

const JOBS = Number(process.env.PODMETER_TEST_BACKLOG_JOBS ?? 10_000);
const BUDGET = Number(process.env.PODMETER_TEST_BACKLOG_BUDGET ?? 100);
const NODE = 'podmeter-test-burst-0';
const NS = 'burst';
/** Pods alive at a time: pod i is deleted once pod i + WINDOW is created. */
const WINDOW = 50;
const CONCURRENCY = 16;
const MAX_OBJECT_BYTES = 512 * 1024;

/** The NodeUsage, NamespaceUsage and NodeRetirements objects sampled: largest, and the backlog they show. */
class Sampler {
  readonly maxBytes = { NodeUsage: 0, NamespaceUsage: 0, NodeRetirements: 0 };
  maxSpills = 0;
  maxRetiring = 0;
  /** Retirements recorded in the NodeUsage and not yet in their WorkloadUsage (retiredSeq - workloadsThrough). */
  maxBacklog = 0;
  samples = 0;
  /** Rejects as soon as an object of 512 KiB or more is seen (the test fails then, not at its end). */
  readonly tooLarge: Promise<never>;
  #stopped = false;
  readonly #done: Promise<void>;

  constructor(oc: OperatorCluster) {
    let fail!: (err: Error) => void;
    this.tooLarge = new Promise<never>((_, reject) => (fail = reject));
    this.tooLarge.catch(() => {}); // (awaited by the test)
    const seen = (kind: keyof Sampler['maxBytes'], o: unknown) => {
      const bytes = JSON.stringify(o).length;
      this.maxBytes[kind] = Math.max(this.maxBytes[kind], bytes);
      if (bytes >= MAX_OBJECT_BYTES) fail(new Error(`${kind} of ${bytes} bytes`));
    };
    this.#done = (async () => {
      while (!this.#stopped) {
        try {
          for (const kind of ['NodeUsage', 'NamespaceUsage'] as const) {
            for (const o of await listAll<UsageObject>(oc.api, usagePath(kind))) {
              seen(kind, o);
              const s = o.status;
              if (kind !== 'NodeUsage' || s === undefined) continue;
              this.maxSpills = Math.max(this.maxSpills, s.spills?.length ?? 0);
              this.maxRetiring = Math.max(this.maxRetiring, s.retiring?.length ?? 0);
              this.maxBacklog = Math.max(this.maxBacklog, (s.retiredSeq ?? 0) - (s.workloadsThrough ?? 0));
            }
          }
          for (const o of await listAll<SpillObject>(oc.api, spillPath())) seen('NodeRetirements', o);
          this.samples++;
        } catch {
          // (the API server busy: the next sample)
        }
        await sleep(2000);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
  }
}

test(
  `ledger under a write backlog: ${JOBS} unpaced Jobs on one node, ${BUDGET} status writes/s, a SIGKILL in the middle`,
  { timeout: 30 * 60_000 },
  async (t) => {
    const oc = await operatorCluster(t);
    await apply(oc, [
      { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    ]);
    const op = await startOperator(oc, {
      identity: 'podmeter-test-op-b',
      args: ['--max-status-writes-per-second', String(BUDGET)],
    });
    await waitFor('leader', async () => ((await op.leader()) ? true : undefined), 60_000);
    const burst = new JobChurn({ oc, namespace: NS, node: () => NODE, window: WINDOW, concurrency: CONCURRENCY });
    const sampler = new Sampler(oc);
    t.after(() => sampler.stop());
    const started = Date.now();
    let burstS = 0;
    let exactS = 0;
    const run = async () => {
      const half = Math.floor(JOBS / 2);
      await burst.run(0, half, { first: 0, finish: false });
      const firstHalfS = (Date.now() - started) / 1000;
      // Every pod deleted so far is on record in the NodeUsage (a pod the operator saw die but had not yet
      // written when it was killed, and never checkpointed, would be known to no one: in a real cluster its
      // agent's final counts it). Its namespace and workloads are far behind.
      let node: UsageObject | undefined;
      await waitFor(
        'the NodeUsage records every dead pod',
        async () => {
          node = await usage(oc, 'NodeUsage', NODE);
          return node?.status?.retiredPods === burst.deleted ? true : undefined;
        },
        300_000,
        () => ({ retiredPods: node?.status?.retiredPods, deleted: burst.deleted }),
      );
      const s = node!.status!;
      const backlog = (s.retiredSeq ?? 0) - (s.workloadsThrough ?? 0);
      const listed = s.spills?.length ?? 0;
      t.diagnostic(
        `middle: ${half} Jobs in ${firstHalfS.toFixed(0)} s (${burst.deleted} pods dead); ${backlog} retirements not yet in their WorkloadUsage, ${listed} NodeRetirements listed, NodeUsage ${JSON.stringify(node).length} bytes`,
      );
      assert.ok(backlog > 1000, `a backlog formed: ${backlog} retirements waiting for their workloads`);
      assert.ok(listed > 0, 'the intents past the NodeUsage bound went into NodeRetirements objects');

      const loads = ledgerLoads(op);
      await op.kill('SIGKILL');
      await op.restart();
      await ledgerLoaded(op, loads);
      assert.ok(
        op.logs.some((l) => l.msg === 'ledger loaded' && l.diedWhileAway === 0),
        'no pod died while it was down (the churn waited)',
      );
      await burst.run(half, JOBS, { first: 0, finish: true });
      burstS = (Date.now() - started) / 1000;

      await totalsBecome(oc, 'NamespaceUsage', NS, burst.sum(), 20 * 60_000);
      exactS = (Date.now() - started) / 1000;
      assert.equal((await usage(oc, 'NamespaceUsage', NS))?.status?.retiredPods, JOBS, 'every pod retired once');
      // The namespace is one object; the workloads are 10,000, created and written at the status budget, so
      // they may take their retirements well after it (with two CPU hogs beside the suite: over 2 minutes).
      let status: UsageObject['status'];
      await waitFor(
        'every retirement in its WorkloadUsage',
        async () => {
          status = (await usage(oc, 'NodeUsage', NODE))?.status;
          return status?.retiredSeq !== undefined && status.workloadsThrough === status.retiredSeq ? true : undefined;
        },
        20 * 60_000,
        () => ({
          retiredSeq: status?.retiredSeq,
          workloadsThrough: status?.workloadsThrough,
          namespacesThrough: status?.namespacesThrough,
        }),
      );
      // Then nothing is left to spill: the objects go with the next NodeUsage write.
      let left: SpillObject[] = [];
      await waitFor(
        'every NodeRetirements object deleted',
        async () => {
          left = await listAll<SpillObject>(oc.api, spillPath());
          status = (await usage(oc, 'NodeUsage', NODE))?.status;
          return left.length === 0 && (status?.spills ?? []).length === 0 ? true : undefined;
        },
        120_000,
        () => ({ objects: left.map((o) => o.metadata.name), listed: status?.spills }),
      );
    };
    await Promise.race([run(), sampler.tooLarge]);
    await sampler.stop();
    // Each Job's WorkloadUsage holds exactly its pod.
    const workloads = await listAll<UsageObject>(oc.api, usagePath('WorkloadUsage'));
    assert.equal(workloads.length, JOBS);
    const wrong = workloads.filter((o) => {
      const want = asStrings(burst.finals.get(Number(/^job-(\d+)$/.exec(o.spec?.name ?? '')?.[1])) ?? add());
      const status = (o.status ?? {}) as unknown as Record<string, unknown>;
      return Object.entries(want).some(([f, v]) => status[f] !== v);
    });
    assert.deepEqual(
      wrong.slice(0, 3).map((o) => o.metadata.name),
      [],
      `${wrong.length} WorkloadUsages not exact`,
    );
    t.diagnostic(
      `${JOBS} Jobs created and deleted in ${burstS.toFixed(0)} s (budget ${BUDGET} writes/s); namespace exact at ${exactS.toFixed(0)} s; ${sampler.samples} samples`,
    );
    t.diagnostic(
      `largest objects (bytes of JSON): ${JSON.stringify(sampler.maxBytes)}; at most ${sampler.maxSpills} NodeRetirements listed, ${sampler.maxRetiring} entries in status.retiring, ${sampler.maxBacklog} retirements waiting for their workloads`,
    );
    assert.ok(sampler.samples > 10);
    for (const [kind, bytes] of Object.entries(sampler.maxBytes))
      assert.ok(bytes < MAX_OBJECT_BYTES, `${kind}: ${bytes} bytes`);
  },
);
