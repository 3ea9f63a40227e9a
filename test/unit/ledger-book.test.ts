/**
 * The operator ledger's pure core without an API server: the book
 * (operator/ledger/book.ts: pods in and out of the sums, the gone clock,
 * dirty and clean, retiring) and the status planning (status.ts: what a
 * NodeUsage, NamespaceUsage or WorkloadUsage status says, committed only
 * after its write). The pod store is a fake that knows the owners it is
 * told; the rest is the ledger's own code. Against a real API server:
 * test/operator/ and test/faults/operator.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { zero, type Counts } from '../../common/contract/counts.ts';
import { parseLedger, readSpill } from '../../common/contract/usage.ts';
import type { Workload } from '../../common/contract/workloads.ts';
import type { KubeApi } from '../../common/kube/api.ts';
import type { WriteBudget } from '../../common/writeBudget.ts';
import { Book } from '../../operator/ledger/book.ts';
import type { Entry } from '../../operator/ledger/entry.ts';
import { Quarantine } from '../../operator/ledger/quarantine.ts';
import { nodeStatus, rollupStatus, type PlannedStatus } from '../../operator/ledger/status.ts';
import type { PodRecord, PodStore } from '../../operator/pods.ts';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const NODE = 'node-a';
const WEB: Workload = { namespace: 'shop', kind: 'Deployment', name: 'web', key: 'shop/Deployment/web' };
const silent = pino({ level: 'silent' });

function egress(bytes: bigint): Counts {
  return { ...zero(), egressBytes: bytes, egressPackets: bytes / 100n };
}

function pod(uid: string, annotated: Counts, workload: Workload | undefined): PodRecord {
  return {
    uid,
    namespace: 'shop',
    name: `web-${uid}`,
    node: NODE,
    owner: { kind: 'ReplicaSet', name: 'web-7f' },
    workload,
    firstSeen: T0,
    annotated,
    unread: undefined,
    base: undefined,
    checkpointed: undefined,
  };
}

/** What writes.ts does once a planned status is written: commit it, then clean the entry as of the plan. */
function written(book: Book, e: Entry, plan: (e: Entry) => PlannedStatus): PlannedStatus {
  const seen = e.changes;
  const planned = plan(e);
  planned.commit();
  book.clean(e, seen, planned.keepDirty ? T0 : undefined);
  return planned;
}

/** A book whose pod store resolves the owners in `owners` (by uid), and no others until forced. */
function makeBook(owners = new Map<string, Workload>()) {
  const errors: string[] = [];
  const pods = {
    workloadOf(p: PodRecord, _now: number, force: boolean): Workload | undefined {
      p.workload ??= owners.get(p.uid) ?? (force ? { ...WEB, kind: 'Pod', name: p.name } : undefined);
      return p.workload;
    },
  };
  const book = new Book({
    api: {} as KubeApi, // the planning never calls the API server (writes.ts does)
    pods: pods as unknown as PodStore,
    identity: 'podmeter-test-operator',
    log: silent,
    budget: {} as WriteBudget,
    onError: (op) => errors.push(op),
  });
  book.liveNodes.add(NODE);
  const quarantine = new Quarantine(silent, (op) => errors.push(op));
  const node = book.entry('NodeUsage', NODE);
  const ns = book.entry('NamespaceUsage', 'shop');
  const wl = book.entry('WorkloadUsage', WEB);
  return { book, quarantine, node, ns, wl, errors };
}

test('book: attach and detach count a pod in its namespace, workload and node; the gone clock starts with the last pod (and, for a node, its Node) and stops when one is back', () => {
  const { book, node, ns, wl } = makeBook();
  const a = pod('a', egress(100n), WEB);
  book.attach(a);
  assert.deepEqual([ns.pods, wl.pods, [...node.members!]], [1, 1, [a]]);
  assert.ok(book.dirtySet.has(node), 'a new member is written into the node checkpoint');
  assert.equal(wl.goneSince, undefined);

  book.detach(a);
  assert.deepEqual([ns.pods, wl.pods, node.members!.size], [0, 0, 0]);
  assert.notEqual(wl.goneSince, undefined, 'no live pod: the workload is gone from now');
  assert.equal(node.goneSince, undefined, 'its Node still exists');
  book.liveNodes.delete(NODE);
  book.updateGone(node, T0 + 5);
  assert.equal(node.goneSince, T0 + 5, 'neither pods nor the Node: gone');
  assert.equal(ns.goneSince, undefined, 'a namespace is never gone');

  book.liveNodes.add(NODE);
  book.attach(pod('b', egress(1n), WEB));
  assert.deepEqual([wl.goneSince, node.goneSince], [undefined, undefined], 'back: the clocks stop');
});

test('book: an entry is due at its oldest change; a change made while its write was on its way keeps it dirty', () => {
  const { book, ns } = makeBook();
  book.dirty(ns, T0 + 10);
  book.dirty(ns, T0 + 5);
  assert.equal(ns.dirtyAt, T0 + 5);
  const seen = ns.changes;
  book.dirty(ns, T0 + 20); // during the write
  book.clean(ns, seen, undefined);
  assert.ok(book.dirtySet.has(ns), 'changed since the write began');
  assert.equal(ns.dirtyAt, T0 + 5);
  book.clean(ns, ns.changes, undefined);
  assert.ok(!book.dirtySet.has(ns));
  assert.equal(ns.dirtyAt, undefined);
  book.dirty(ns, T0 + 30);
  book.clean(ns, ns.changes, T0 + 99);
  assert.deepEqual([book.dirtySet.has(ns), ns.dirtyAt], [true, T0 + 99], 'written, and asked to write again later');
});

test('book: retire takes a dead pod out of its node live sum and holds its final for the write; not without a node, nor a pod never counted', () => {
  const { book, node } = makeBook();
  const a = pod('a', egress(800n), WEB);
  a.checkpointed = egress(500n);
  node.live = egress(500n);
  book.retire(a, NODE, egress(800n), T0);
  assert.equal(node.live.egressBytes, 0n);
  assert.deepEqual(node.pendingNode.get('a')?.final, egress(800n));
  assert.equal(node.dirtyAt, T0);

  book.retire(pod('b', egress(5n), WEB), '', egress(5n), T0);
  book.retire(pod('c', zero(), WEB), NODE, zero(), T0);
  assert.deepEqual([...node.pendingNode.keys()], ['a'], 'no node: not counted; nothing counted: nothing to retire');
});

test('status planning: a NodeUsage checkpoints its live pods and retires the dead; nothing changes until the plan is committed (a failed write)', () => {
  const { book, quarantine, node, ns, wl } = makeBook();
  const a = pod('a', egress(1000n), WEB);
  const b = pod('b', egress(300n), WEB);
  book.attach(a);
  book.attach(b);

  const first = nodeStatus(book, node, T0, quarantine);
  assert.deepEqual(
    first.status.checkpoint?.map((c) => [c.uid, c.workloadKind, c.workload, c.egressBytes]),
    [
      ['a', 'Deployment', 'web', '1000'],
      ['b', 'Deployment', 'web', '300'],
    ],
  );
  assert.deepEqual([first.status.egressBytes, first.status.pods, first.keepDirty], ['1300', 2, false]);
  assert.deepEqual([a.checkpointed, ns.live.egressBytes], [undefined, 0n], 'not committed: nothing moved');
  first.commit();
  assert.deepEqual(a.checkpointed, egress(1000n));
  assert.deepEqual([ns.live.egressBytes, wl.live.egressBytes, node.live.egressBytes], [1300n, 1300n, 1300n]);
  assert.ok(book.dirtySet.has(ns) && book.dirtySet.has(wl), 'their totals changed: written too');

  // b dies with more than its checkpoint said.
  book.detach(b);
  book.retire(b, NODE, egress(400n), T0 + 1000);
  const plan = () => nodeStatus(book, node, T0 + 1000, quarantine);
  const second = plan();
  assert.deepEqual(
    second.status.checkpoint?.map((c) => c.uid),
    ['a'],
  );
  assert.deepEqual(
    second.status.retiring?.map((r) => [r.uid, r.egressBytes, r.rolledUp]),
    [['b', '400', false]],
  );
  assert.deepEqual(
    [second.status.egressBytes, second.status.retired.egressBytes, second.status.retiredPods, second.status.pods],
    ['1400', '400', 1, 1],
  );
  assert.deepEqual(plan().status.retired, second.status.retired, 'planned again (the write failed): the same');
  assert.equal(node.retired.egressBytes, 0n);
  second.commit();
  assert.deepEqual([node.retired.egressBytes, node.retiredPods, node.pendingNode.size], [400n, 1, 0]);
  assert.deepEqual(ns.pending.get('b')?.final, egress(400n), 'the namespace retires it next');
  assert.deepEqual(wl.pending.get('b')?.final, egress(400n), 'and the workload');
  assert.equal(ns.live.egressBytes, 1000n, "b's checkpoint left the live sum");
  book.retire(b, NODE, egress(400n), T0 + 2000);
  assert.equal(node.pendingNode.size, 0, 'retired once: seen again (a relist) it is not retired again');
});

test("status planning: the namespace and the workload each take a node's retirement once (retiredThrough marks); when both have, the node marks it rolled up and its rollup marks let theirs go", () => {
  const { book, quarantine, node, ns, wl } = makeBook();
  const b = pod('b', egress(300n), WEB);
  book.attach(b);
  written(book, node, (e) => nodeStatus(book, e, T0, quarantine));
  book.detach(b);
  book.retire(b, NODE, egress(400n), T0 + 1000);
  const nodePlan = written(book, node, (e) => nodeStatus(book, e, T0 + 1000, quarantine));
  assert.deepEqual(
    [nodePlan.status.retiredSeq, nodePlan.status.retiring?.[0]?.seq, nodePlan.status.namespacesThrough],
    [1, 1, 0],
    'numbered 1; no namespace has it yet',
  );
  assert.ok(!book.dirtySet.has(node));
  // Every change of the node from here on (the namespace's mark too) is a marker, made due 30 s later.
  const before = Date.now();
  written(book, ns, (e) => rollupStatus(book, e));
  written(book, ns, (e) => rollupStatus(book, e));

  const nsStatus = rollupStatus(book, ns).status;
  assert.deepEqual(
    [nsStatus.egressBytes, nsStatus.retired.egressBytes, nsStatus.retiredPods, nsStatus.pods],
    ['400', '400', 1, 0],
    'planned again: not counted twice',
  );
  assert.deepEqual(nsStatus.retiredThrough, [{ node: NODE, seq: 1 }]);
  assert.equal(nsStatus.goneSince, undefined, 'a namespace has no gone clock');
  assert.equal(node.retiring.get('b')?.entry.rolledUp, false, 'the workload has not taken it yet');

  const wlPlan = written(book, wl, (e) => rollupStatus(book, e));
  assert.equal(wlPlan.status.retired.egressBytes, '400');
  assert.notEqual(wlPlan.status.goneSince, undefined, 'its last pod died: the retention clock is written');
  assert.equal(node.retiring.get('b')?.entry.rolledUp, true);
  assert.ok(node.dirtyAt! >= before + 30_000, 'the marker rides along with a later write of the node');

  // A new leader rolls an unmarked intent up again: the namespace's mark still covers it.
  ns.pending.set('b', { final: egress(400n), node: NODE, seq: 1 });
  assert.equal(rollupStatus(book, ns).status.retired.egressBytes, '400');
  // Once the node's written rollup marks pass it, the namespace's mark goes.
  const marked = written(book, node, (e) => nodeStatus(book, e, T0 + 2000, quarantine));
  assert.deepEqual([marked.status.namespacesThrough, marked.status.workloadsThrough], [1, 1]);
  ns.pending.clear();
  assert.deepEqual(rollupStatus(book, ns).status.retiredThrough, []);
  ns.pending.set('b', { final: egress(400n), node: NODE, seq: 1 });
  assert.equal(rollupStatus(book, ns).status.retired.egressBytes, '400', 'covered by the node mark: still once');
});

test('status planning: a pod whose owner is not known yet waits (the plan asks to be written again); once known, its workload counts it', () => {
  const owners = new Map<string, Workload>();
  const { book, quarantine, node, wl } = makeBook(owners);
  const c = pod('c', egress(50n), undefined); // its ReplicaSet not seen yet
  book.attach(c);
  const waiting = nodeStatus(book, node, T0, quarantine);
  assert.deepEqual([waiting.keepDirty, waiting.status.checkpoint, wl.pods], [true, [], 0]);
  owners.set('c', WEB);
  const known = nodeStatus(book, node, T0 + 1000, quarantine);
  assert.deepEqual([known.keepDirty, known.status.checkpoint?.map((e) => e.uid), wl.pods], [false, ['c'], 1]);
});

test('status planning under a backlog: 2,000 pods retired in one write stay under 512 KiB (the older intents in NodeRetirements objects), and read back from the objects alone they are all there, numbered, once', () => {
  const { book, quarantine, node, ns } = makeBook();
  const pods = Array.from({ length: 2000 }, (_, i) =>
    pod(`p-${String(i).padStart(5, '0')}`, egress(BigInt(i + 1)), WEB),
  );
  for (const p of pods) book.attach(p);
  written(book, node, (e) => nodeStatus(book, e, T0, quarantine));
  for (const p of pods) {
    book.detach(p);
    book.retire(p, NODE, egress(BigInt(p.name.length)), T0 + 1000);
  }
  const plan = nodeStatus(book, node, T0 + 1000, quarantine);
  const names = plan.spill!.map((_, k) => `${NODE}.spill-${k}`);
  const status = { ...plan.status, spills: [...(plan.status.spills ?? []), ...names] };
  assert.ok(JSON.stringify(status).length < 512 * 1024, `${JSON.stringify(status).length} bytes`);
  assert.ok(plan.spill!.length > 0 && plan.spill!.every((s) => JSON.stringify(s).length < 512 * 1024));
  const seen = node.changes;
  plan.commit(names);
  book.clean(node, seen, undefined);
  assert.deepEqual([...node.spills.keys()], names);

  // Read back: the status, then the objects it lists.
  const state = parseLedger(status);
  for (const [k, entries] of plan.spill!.entries())
    readSpill(
      {
        apiVersion: 'podmeter.io/v1alpha1',
        kind: 'NodeRetirements',
        metadata: { name: names[k]! },
        spec: { node: NODE, retiring: entries },
      },
      state,
    );
  assert.deepEqual(state.problems, []);
  assert.equal(state.retiring.size, 2000);
  assert.deepEqual(
    [...state.retiring.values()].map((r) => r.seq).sort((a, b) => a - b),
    Array.from({ length: 2000 }, (_, i) => i + 1),
  );
  assert.equal(state.seq, 2000);

  // A new leader's pending comes in the order the objects list them (not by seq): all are taken, once.
  const reloaded = makeBook().ns;
  const shuffled = [...state.retiring].sort(([a], [b]) => (a < b ? 1 : -1));
  for (const [uid, r] of shuffled) reloaded.pending.set(uid, { final: r.counts, node: NODE, seq: r.seq });
  const once = rollupStatus(book, reloaded).status;
  assert.deepEqual([once.retiredPods, once.retiredThrough], [2000, [{ node: NODE, seq: 2000 }]]);

  // The namespace takes them all once; its mark makes a second rollup (a new leader) count nothing.
  const taken = written(book, ns, (e) => rollupStatus(book, e));
  assert.deepEqual(taken.status.retiredThrough, [{ node: NODE, seq: 2000 }]);
  assert.equal(taken.status.retiredPods, 2000);
  const marks = parseLedger(taken.status).marks;
  ns.marks = marks;
  for (const [uid, r] of state.retiring) ns.pending.set(uid, { final: r.counts, node: NODE, seq: r.seq });
  assert.deepEqual(rollupStatus(book, ns).status.retired, taken.status.retired, 'not counted twice');
});
