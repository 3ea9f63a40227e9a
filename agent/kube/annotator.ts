/**
 * Writes each pod's counters onto its Pod object as annotations (JSON merge
 * patch), within the scale rules: only when a value changed, at most once per
 * pod per --annotate-interval, and never more than the node's write budget.
 * A pod whose cgroup emptied or went away gets its final values written
 * first, without waiting for its interval. The Node gets the node's BPF map
 * memory and the finals of its recently terminated pods (finals.ts). When
 * the API server is away the agent keeps counting; writes back off, and the
 * latest values are written when it returns (one log line per outage).
 *
 * A write refused for what it is (isRefusal: 422 when the Pod's annotations
 * are near the API server's 256 KiB limit, 413, 400) is that pod's problem
 * alone: logged once, counted as `rejected`, the pod retried after twice its
 * interval, doubling up to 15 minutes, while every other pod is written as
 * usual. A Pod gone (404, or 409: another Pod of that name) is not written
 * again: its counts stay in the metrics and the Node's finals.
 */
import type { Logger } from '../../common/log.ts';
import { ANNOTATIONS, podAnnotations } from '../../common/contract/annotations.ts';
import { encodeNodeFinals } from '../../common/contract/finals.ts';
import { describe, isRefusal, isStatus, retryDelay, type KubeApi } from '../../common/kube/api.ts';
import type { WriteBudget } from '../../common/writeBudget.ts';
import type { Unit } from '../counting/unit.ts';
import { contractCounts } from '../../common/contract/counts.ts';
import { nodeFinals } from './finals.ts';
import type { PodDirectory, PodRef } from './pods.ts';

/**
 * podmeter_annotation_writes_total{result}: written, failed (API away), the object is gone (404/409),
 * refused for this object alone (another 4xx, e.g. 422 annotations too long: retried with backoff), no budget left.
 */
export const ANNOTATION_WRITE_RESULTS = ['ok', 'error', 'gone', 'rejected', 'skipped_budget'] as const;
export type AnnotationWriteResult = (typeof ANNOTATION_WRITE_RESULTS)[number];
type WriteResult = Exclude<AnnotationWriteResult, 'skipped_budget'>;

/** What the annotator uses of the API client, the Pod directory and the tracker (test/unit/annotator.test.ts fakes them). */
export type AnnotatorApi = Pick<KubeApi, 'request'>;
export type AnnotatorPods = Pick<PodDirectory, 'byCgroupUid' | 'lastKnown'>;
export interface AnnotatorTracker {
  on(event: 'emptied' | 'terminated', listener: (unit: Unit) => void): unknown;
  units(): Unit[];
}

/** A Pod's counter annotations (podAnnotations). */
type Values = Readonly<Record<string, string>>;

interface PodState {
  /** The values of the last write that went through. */
  written?: Values;
  writtenAt: number;
  urgent: boolean;
  /** The Pod that answered 404/409: not written again (another Pod for the same cgroup, a static pod's new mirror, is). */
  goneUid?: string;
  /** The last write was refused for this pod alone: not again before `retryAt`; the next delay is twice `delayMs`. */
  refused?: { retryAt: number; delayMs: number };
  /** The last values made and what they were made from: an idle pod's counts are the same objects from read to read, so most rounds make none. */
  values?: { network: Unit['network']; byClass: Unit['byClass']; mapBytes: number | undefined; values: Values };
}

const MAX_BACKOFF_MS = 10_000;
/** The longest wait before a refused pod is tried again (or its interval, when longer). */
const MAX_REFUSED_DELAY_MS = 15 * 60_000;
/** Every write is a JSON merge patch (annotations only; nothing else is touched). */
const MERGE_PATCH = 'application/merge-patch+json';
const WRITE_TIMEOUT_MS = 30_000;

export class Annotator {
  readonly #api: AnnotatorApi;
  readonly #pods: AnnotatorPods;
  readonly #tracker: AnnotatorTracker;
  readonly #budget: WriteBudget;
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #onWrite: (result: AnnotationWriteResult) => void;
  readonly #podMapBytes: (uid: string) => number | undefined;
  readonly #node: {
    name: string;
    mapBytes: () => number | undefined;
    written: Record<string, string | null>;
    checkedAt: number;
    refused: boolean;
  };
  /** A pod terminated since the Node was last written: its final goes out without waiting for the interval. */
  #newFinal = false;
  readonly #state = new Map<string, PodState>();
  #outageSince: number | undefined;
  #retryAt = 0;
  #backoffMs = 1000;
  #busy = false;

  constructor(options: {
    api: AnnotatorApi;
    pods: AnnotatorPods;
    tracker: AnnotatorTracker;
    budget: WriteBudget;
    intervalMs: number;
    log: Logger;
    onWrite: (result: AnnotationWriteResult) => void;
    podMapBytes?: (uid: string) => number | undefined;
    node?: { name: string; mapBytes: () => number | undefined };
  }) {
    this.#api = options.api;
    this.#pods = options.pods;
    this.#tracker = options.tracker;
    this.#budget = options.budget;
    this.#intervalMs = options.intervalMs;
    this.#log = options.log;
    this.#onWrite = options.onWrite;
    this.#podMapBytes = options.podMapBytes ?? (() => undefined);
    this.#node = {
      name: options.node?.name ?? '',
      mapBytes: options.node?.mapBytes ?? (() => undefined),
      written: {},
      checkedAt: 0,
      refused: false,
    };
    const urgent = (unit: Unit) => {
      if (unit.uid !== undefined) this.#podState(unit.uid).urgent = true;
    };
    this.#tracker.on('emptied', urgent);
    this.#tracker.on('terminated', (unit) => {
      urgent(unit);
      if (unit.kind === 'pod') this.#newFinal = true;
    });
  }

  /** One round: writes what is due, as far as the budget allows. Never throws. */
  async tick(now = Date.now()): Promise<void> {
    if (this.#busy || now < this.#retryAt) return;
    this.#busy = true;
    try {
      // The Node first: one write carries every new final, and the operator counts pods exactly from it.
      if (!(await this.#writeNode(now))) return;
      for (const { unit, pod, values, state } of this.#due(now)) {
        if (!this.#budget.take(now)) {
          this.#onWrite('skipped_budget');
          return;
        }
        const result = await this.#write(pod, values, state);
        this.#onWrite(result);
        if (result === 'error') return; // outage: back off, retry later with the then latest values
        if (result === 'rejected') continue; // this pod's alone: the others go on
        state.written = values;
        state.writtenAt = Date.now();
        state.urgent = false;
        if (result === 'gone') state.goneUid = pod.uid;
        if (unit.state === 'terminated') this.#state.delete(unit.uid!); // final written: nothing more to do
      }
    } finally {
      this.#busy = false;
    }
  }

  /** Pods whose annotations should be written now: finals first, then the longest unwritten. */
  #due(now: number): { unit: Unit; pod: PodRef; values: Values; state: PodState }[] {
    const due: { unit: Unit; pod: PodRef; values: Values; state: PodState }[] = [];
    for (const unit of this.#tracker.units()) {
      if (unit.kind !== 'pod' || unit.uid === undefined) continue;
      const pod = this.#pods.byCgroupUid(unit.uid);
      if (pod === undefined) continue;
      const state = this.#podState(unit.uid);
      if (state.goneUid === pod.uid || (state.refused !== undefined && now < state.refused.retryAt)) continue;
      if (unit.state === 'terminated' && !state.urgent) continue; // final already written (or never counted)
      const mapBytes = this.#podMapBytes(unit.uid);
      const last = state.values;
      const values =
        last !== undefined &&
        last.network === unit.network &&
        last.byClass === unit.byClass &&
        last.mapBytes === mapBytes
          ? last.values
          : podAnnotations(contractCounts(unit), mapBytes);
      state.values = { network: unit.network, byClass: unit.byClass, mapBytes, values };
      if (values === state.written || (state.written !== undefined && sameValues(values, state.written))) continue;
      if (!state.urgent && now - state.writtenAt < this.#intervalMs) continue;
      due.push({ unit, pod, values, state });
    }
    return due.sort((a, b) => Number(b.state.urgent) - Number(a.state.urgent) || a.state.writtenAt - b.state.writtenAt);
  }

  /** A value last written (`state.written`) no longer there (a class back at zero) is removed (null in a merge patch). */
  async #write(pod: PodRef, values: Values, state: PodState): Promise<WriteResult> {
    const annotations: Record<string, string | null> = { ...values, [ANNOTATIONS.updated]: new Date().toISOString() };
    for (const key in state.written) if (!(key in values)) annotations[key] = null;
    try {
      // The uid precondition makes sure a re-created Pod of the same name is never given another pod's counts.
      const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
      await this.#api.request('PATCH', path, {
        body: { metadata: { uid: pod.uid, annotations } },
        contentType: MERGE_PATCH,
        timeoutMs: WRITE_TIMEOUT_MS,
      });
      this.#recovered();
      if (state.refused !== undefined)
        this.#log.info(
          { namespace: pod.namespace, pod: pod.name, uid: pod.uid },
          'Pod annotations written again after refusals',
        );
      state.refused = undefined;
      return 'ok';
    } catch (err) {
      if (!isRefusal(err)) {
        this.#outage(err);
        return 'error';
      }
      this.#recovered(); // the API server answers
      const who = {
        namespace: pod.namespace,
        pod: pod.name,
        uid: pod.uid,
        status: err.status,
        reason: err.reason,
        err: err.message,
      };
      if (isStatus(err, 404, 409)) {
        this.#log.info(
          who,
          "Pod gone before its annotations were written: its counts stay in the metrics and the Node's finals",
        );
        return 'gone';
      }
      if (state.refused === undefined)
        this.#log.warn(
          who,
          "Pod annotation write refused: this pod is retried with backoff, the node's other pods are written as usual",
        );
      const delayMs =
        state.refused === undefined
          ? 2 * this.#intervalMs
          : Math.min(2 * state.refused.delayMs, Math.max(MAX_REFUSED_DELAY_MS, this.#intervalMs));
      state.refused = { retryAt: Date.now() + delayMs, delayMs };
      return 'rejected';
    }
  }

  /**
   * The Node's annotations: `podmeter.io/bpf-map-bytes` (the node's BPF map
   * memory) at most once per interval, and `podmeter.io/finals` at once when
   * a pod terminated. Only values that changed are sent. False when the
   * round should end (no budget, or the API server is away).
   */
  async #writeNode(now: number): Promise<boolean> {
    const node = this.#node;
    if (node.name === '' || (!this.#newFinal && now - node.checkedAt < this.#intervalMs)) return true;
    const bytes = node.mapBytes();
    const finals = nodeFinals(this.#tracker.units(), (uid) => this.#pods.lastKnown(uid), now);
    const want: Record<string, string | null> = {
      ...(bytes !== undefined ? { [ANNOTATIONS.bpfMapBytes]: String(bytes) } : {}),
      [ANNOTATIONS.finals]: encodeNodeFinals(finals), // null: merge patch removes it
    };
    const changed = Object.entries(want).filter(([key, value]) => value !== (node.written[key] ?? null));
    if (changed.length === 0) {
      this.#newFinal = false;
      node.checkedAt = now;
      return true;
    }
    if (!this.#budget.take(now)) {
      this.#onWrite('skipped_budget');
      return false;
    }
    const newFinal = this.#newFinal;
    this.#newFinal = false;
    try {
      const annotations = { ...Object.fromEntries(changed), [ANNOTATIONS.updated]: new Date().toISOString() };
      await this.#api.request('PATCH', `/api/v1/nodes/${encodeURIComponent(node.name)}`, {
        body: { metadata: { annotations } },
        contentType: MERGE_PATCH,
        timeoutMs: WRITE_TIMEOUT_MS,
      });
      this.#recovered();
      Object.assign(node.written, Object.fromEntries(changed));
      node.checkedAt = Date.now();
      node.refused = false;
      this.#onWrite('ok');
      return true;
    } catch (err) {
      if (isStatus(err, 404)) {
        node.checkedAt = Date.now(); // no such Node (e.g. --node-name wrong): retry at the interval
        this.#log.warn({ node: node.name }, 'Node object not found: check --node-name');
        this.#onWrite('gone');
        return true;
      }
      if (isRefusal(err)) {
        // The Node's alone (e.g. its annotations too long): retried at the interval; the pods go on.
        this.#recovered();
        node.checkedAt = Date.now();
        if (!node.refused)
          this.#log.warn(
            { node: node.name, status: err.status, reason: err.reason, err: err.message },
            'Node annotation write refused: retried at the interval; pod annotations go on',
          );
        node.refused = true;
        this.#onWrite('rejected');
        return true;
      }
      this.#newFinal ||= newFinal;
      this.#outage(err);
      this.#onWrite('error');
      return false;
    }
  }

  #podState(uid: string): PodState {
    let s = this.#state.get(uid);
    if (s === undefined) {
      s = { writtenAt: 0, urgent: false };
      this.#state.set(uid, s);
    }
    return s;
  }

  #outage(err: unknown): void {
    if (this.#outageSince === undefined) {
      this.#outageSince = Date.now();
      this.#log.warn(
        { err: describe(err) },
        'annotation writes failing; counting and metrics continue, writes resume with the latest values when the API server answers',
      );
    }
    this.#retryAt = Date.now() + retryDelay(err, this.#backoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, MAX_BACKOFF_MS);
  }

  #recovered(): void {
    if (this.#outageSince !== undefined) {
      this.#log.info({ outageMs: Date.now() - this.#outageSince }, 'annotation writes succeed again');
    }
    this.#outageSince = undefined;
    this.#backoffMs = 1000;
  }
}

/** The same annotations with the same values (key order aside). */
function sameValues(a: Values, b: Values): boolean {
  let keys = 0;
  for (const key in a) {
    if (a[key] !== b[key]) return false;
    keys++;
  }
  return keys === Object.keys(b).length;
}
