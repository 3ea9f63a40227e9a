/**
 * The annotator's decisions (agent/kube/annotator.ts) with a fake API
 * server, Pod directory and tracker: which pods are written in a round and
 * in what order, what each patch holds, the interval and the node's write
 * budget, a pod refused or gone on its own while the others are written, an
 * outage that ends the round and backs off, and the Node's finals. No
 * cluster: kube/agent and faults/apiserver (test/README.md) run it against a
 * real API server.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { pino } from 'pino';
import type { TrackerEvents } from '../../agent/counting/trackerPorts.ts';
import type { Unit } from '../../agent/counting/unit.ts';
import { Annotator, type AnnotationWriteResult, type AnnotatorApi } from '../../agent/kube/annotator.ts';
import type { PodRef } from '../../agent/kube/pods.ts';
import { ANNOTATIONS } from '../../common/contract/annotations.ts';
import { parseNodeFinals } from '../../common/contract/finals.ts';
import { unitCounts, type ClassTraffic, type UnitCounts } from '../../common/contract/counts.ts';
import { ApiError, type HttpMethod, type RequestOptions } from '../../common/kube/api.ts';
import { WriteBudget } from '../../common/writeBudget.ts';
import { podUnit } from '../helpers/units.ts';

const log = pino({ level: 'silent' });
const INTERVAL_MS = 10_000;

function counts(egress: bigint, external = 0n): UnitCounts {
  const egressClasses: ClassTraffic = { 'in-cluster': { bytes: egress - external, packets: 1n } };
  return unitCounts({
    ingress: {},
    egress: external === 0n ? egressClasses : { ...egressClasses, external: { bytes: external, packets: 1n } },
  });
}

/** A PATCH the annotator sent: the object's path and the annotations (updated left out). */
interface Patch {
  path: string;
  uid?: string;
  annotations: Record<string, string | null>;
}

/** The API server: records every request; `answer` decides each (undefined: written). */
class FakeApi implements AnnotatorApi {
  readonly patches: Patch[] = [];
  answer: (path: string) => Error | undefined = () => undefined;

  request<T>(method: HttpMethod, path: string, opts: RequestOptions = {}): Promise<T> {
    assert.equal(method, 'PATCH');
    assert.equal(opts.contentType, 'application/merge-patch+json');
    const { metadata } = opts.body as { metadata: { uid?: string; annotations: Record<string, string | null> } };
    const { [ANNOTATIONS.updated]: updated, ...annotations } = metadata.annotations;
    assert.ok(updated, 'every write says when');
    this.patches.push({ path, ...(metadata.uid !== undefined ? { uid: metadata.uid } : {}), annotations });
    const err = this.answer(path);
    return err === undefined ? Promise.resolve(undefined as T) : Promise.reject(err);
  }

  /** The paths written since the last call. */
  take(): string[] {
    return this.patches.splice(0).map((p) => p.path);
  }
}

class FakeTracker extends EventEmitter<TrackerEvents> {
  list: Unit[] = [];
  units(): Unit[] {
    return this.list;
  }
}

function pod(i: number, c: UnitCounts = counts(BigInt(i) * 100n)): Unit {
  return podUnit(i, c);
}
const podPath = (i: number) => `/api/v1/namespaces/ns/pods/p${i}`;

function setup(options: { rate?: number; node?: boolean; mapBytes?: () => number | undefined } = {}) {
  const api = new FakeApi();
  const tracker = new FakeTracker();
  const refs = new Map<string, PodRef>();
  const results: AnnotationWriteResult[] = [];
  const known = (uid: string) => refs.get(uid);
  const annotator = new Annotator({
    api,
    pods: { byCgroupUid: known, lastKnown: known },
    tracker,
    budget: new WriteBudget(options.rate ?? 100),
    intervalMs: INTERVAL_MS,
    log,
    onWrite: (r) => results.push(r),
    podMapBytes: () => options.mapBytes?.(),
    ...(options.node === true ? { node: { name: 'node-1', mapBytes: () => 8192 } } : {}),
  });
  /** Units of pods 1..n with their Pod objects (named p<i>, uid pod-uid-<i>). */
  const add = (...units: Unit[]) => {
    for (const u of units) {
      const i = Number(u.id);
      refs.set(u.uid!, { namespace: 'ns', name: `p${i}`, uid: `pod-uid-${i}` });
      tracker.list.push(u);
    }
  };
  return { api, tracker, annotator, results, add, pods: refs };
}

test('a pod is written once its counts change and its interval has passed; unchanged counts are not written', async () => {
  const { api, tracker, annotator, results, add } = setup();
  const unit = pod(1);
  add(unit, { ...pod(2), kind: 'cgroup' });
  const t0 = Date.now();
  await annotator.tick(t0);
  assert.deepEqual(api.patches, [
    {
      path: podPath(1),
      uid: 'pod-uid-1', // precondition: never another Pod of that name
      annotations: {
        [ANNOTATIONS.ingressBytes]: '0',
        [ANNOTATIONS.ingressPackets]: '0',
        [ANNOTATIONS.egressBytes]: '100',
        [ANNOTATIONS.egressPackets]: '1',
      },
    },
  ]);
  api.take();
  assert.deepEqual(results, ['ok']);

  await annotator.tick(t0 + 2 * INTERVAL_MS);
  assert.deepEqual(api.take(), [], 'unchanged: not written');

  Object.assign(unit, counts(150n, 50n));
  await annotator.tick(Date.now() + 1000);
  assert.deepEqual(api.take(), [], 'changed, but written less than an interval ago');
  // New objects with the same values (a restart's read): nothing to write either.
  tracker.list[0] = { ...unit, ...counts(150n, 50n) };
  await annotator.tick(Date.now() + INTERVAL_MS + 1);
  assert.deepEqual(api.patches.at(-1)?.annotations, {
    [ANNOTATIONS.ingressBytes]: '0',
    [ANNOTATIONS.ingressPackets]: '0',
    [ANNOTATIONS.egressBytes]: '150',
    [ANNOTATIONS.egressPackets]: '2',
    [ANNOTATIONS.egressExternalBytes]: '50',
  });
  api.take();
  tracker.list[0] = { ...tracker.list[0], ...counts(150n, 50n) };
  await annotator.tick(Date.now() + 3 * INTERVAL_MS);
  assert.deepEqual(api.take(), [], 'the same values in new objects: not written');
});

test('an annotation no longer there is removed (null in the merge patch)', async () => {
  let mapBytes: number | undefined = 4096;
  const { api, annotator, add } = setup({ mapBytes: () => mapBytes });
  add(pod(1));
  await annotator.tick();
  assert.equal(api.patches[0]?.annotations[ANNOTATIONS.bpfMapBytes], '4096');
  mapBytes = undefined;
  await annotator.tick(Date.now() + INTERVAL_MS + 1);
  assert.equal(api.patches[1]?.annotations[ANNOTATIONS.bpfMapBytes], null);
});

test('emptied or terminated pods are written at once, first; a final is written once', async () => {
  const { api, tracker, annotator, add } = setup();
  const units = [pod(1), pod(2), pod(3)];
  add(...units);
  await annotator.tick();
  api.take();
  for (const u of units) Object.assign(u, counts(1000n));
  const now = Date.now() + 1000; // within the interval
  await annotator.tick(now);
  assert.deepEqual(api.take(), [], 'changed within the interval: waits');

  tracker.emit('emptied', units[2]!);
  units[1]!.state = 'terminated';
  tracker.emit('terminated', units[1]!);
  await annotator.tick(now);
  assert.deepEqual(api.take(), [podPath(2), podPath(3)].sort(), 'both urgent ones, not pod 1');

  await annotator.tick(now + INTERVAL_MS + 1);
  assert.deepEqual(api.take(), [podPath(1)], 'the final is not written again');
});

test('with budget for one write, the urgent pod goes first and the rest wait (skipped_budget)', async () => {
  const { api, tracker, annotator, results, add } = setup({ rate: 1 });
  add(pod(1), pod(2));
  tracker.emit('emptied', tracker.list[1]!);
  const now = Date.now();
  await annotator.tick(now);
  assert.deepEqual(api.take(), [podPath(2)]);
  assert.deepEqual(results, ['ok', 'skipped_budget']);
  await annotator.tick(now + 1000); // a token more
  assert.deepEqual(api.take(), [podPath(1)]);
});

test("a pod refused on its own is retried with backoff while the node's other pods are written", async () => {
  const { api, annotator, results, add } = setup();
  const units = [pod(1), pod(2), pod(3)];
  add(...units);
  api.answer = (path) =>
    path === podPath(2) ? new ApiError(422, 'Invalid', 'metadata.annotations: Too long') : undefined;
  await annotator.tick();
  assert.deepEqual(api.take(), [podPath(1), podPath(2), podPath(3)]);
  assert.deepEqual(results.sort(), ['ok', 'ok', 'rejected']);

  for (const u of units) Object.assign(u, counts(5000n));
  await annotator.tick(Date.now() + INTERVAL_MS + 1);
  assert.deepEqual(api.take(), [podPath(1), podPath(3)], 'not retried before twice its interval');
  await annotator.tick(Date.now() + 2 * INTERVAL_MS + 1000);
  assert.deepEqual(api.take(), [podPath(2)], 'retried after it');
  await annotator.tick(Date.now() + 3 * INTERVAL_MS);
  assert.deepEqual(api.take(), [], 'refused again: the wait doubled (4 intervals)');
  api.answer = () => undefined;
  await annotator.tick(Date.now() + 4 * INTERVAL_MS + 1000);
  assert.deepEqual(api.take(), [podPath(2)]);
});

test('a Pod gone (404, 409) is not written again; another Pod for the same cgroup is', async () => {
  const { api, annotator, results, add, pods } = setup();
  const unit = pod(1);
  add(unit);
  api.answer = () => new ApiError(404, 'NotFound', 'pods "p1" not found');
  await annotator.tick();
  assert.deepEqual(results, ['gone']);
  api.take();
  api.answer = () => undefined;
  Object.assign(unit, counts(999n));
  await annotator.tick(Date.now() + 2 * INTERVAL_MS);
  assert.deepEqual(api.take(), []);
  // A static pod's new mirror Pod: another object for the same cgroup.
  pods.set(unit.uid!, { namespace: 'ns', name: 'p1-mirror', uid: 'pod-uid-1b' });
  await annotator.tick(Date.now() + 2 * INTERVAL_MS);
  assert.deepEqual(
    api.patches.map((p) => [p.path, p.uid]),
    [['/api/v1/namespaces/ns/pods/p1-mirror', 'pod-uid-1b']],
  );
});

test('an outage ends the round and backs off; the latest values are written when the API server answers', async () => {
  const { api, annotator, results, add } = setup();
  const units = [pod(1), pod(2)];
  add(...units);
  api.answer = () => Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  await annotator.tick();
  assert.deepEqual(api.take(), [podPath(1)], 'the round ends at the first failure');
  assert.deepEqual(results, ['error']);
  await annotator.tick(Date.now() + 100);
  assert.deepEqual(api.take(), [], 'backing off (1 s)');
  api.answer = () => undefined;
  Object.assign(units[0]!, counts(777n));
  await annotator.tick(Date.now() + 1100);
  assert.deepEqual(api.take(), [podPath(1), podPath(2)]);
  assert.equal(api.patches.length, 0);
});

test("the Node carries the terminated pods' finals, written before the pods; unchanged values are not sent", async () => {
  const { api, tracker, annotator, add } = setup({ node: true });
  const units = [pod(1), pod(2)];
  add(...units);
  await annotator.tick();
  assert.deepEqual(
    api.patches.map((p) => [p.path, Object.keys(p.annotations).sort()]),
    [
      ['/api/v1/nodes/node-1', [ANNOTATIONS.bpfMapBytes]], // no final yet: nothing to remove either (null is not sent)
      [
        podPath(1),
        [ANNOTATIONS.egressBytes, ANNOTATIONS.egressPackets, ANNOTATIONS.ingressBytes, ANNOTATIONS.ingressPackets],
      ],
      [
        podPath(2),
        [ANNOTATIONS.egressBytes, ANNOTATIONS.egressPackets, ANNOTATIONS.ingressBytes, ANNOTATIONS.ingressPackets],
      ],
    ],
  );
  assert.equal(api.patches[0]?.annotations[ANNOTATIONS.bpfMapBytes], '8192');
  api.take();

  const now = Date.now() + 1000;
  Object.assign(units[0]!, counts(300n), { state: 'terminated', terminatedAt: Date.now() });
  tracker.emit('terminated', units[0]!);
  await annotator.tick(now);
  const [node, ...pods] = api.patches.splice(0);
  assert.equal(node?.path, '/api/v1/nodes/node-1', 'the Node first, without waiting for its interval');
  assert.deepEqual(Object.keys(node.annotations), [ANNOTATIONS.finals], 'only what changed');
  const { finals } = parseNodeFinals(String(node.annotations[ANNOTATIONS.finals]));
  assert.deepEqual(
    finals.map((f) => [f.name, f.counts.egressBytes]),
    [['p1', 300n]],
  );
  assert.deepEqual(
    pods.map((p) => p.path),
    [podPath(1)],
    "and the pod's final (its last counts changed), within its interval",
  );
});
