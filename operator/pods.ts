/**
 * Every pod of the cluster, as a small record: uid, namespace, name, node,
 * controller, workload and the counters from the agents' annotations. Fed
 * by a watch of server-side Table rows with only each pod's metadata
 * (includeObject=Metadata): metadata-only like a PartialObjectMetadata
 * watch, plus the row's Node column, which metadata lacks. Whole Pod
 * objects are never held, nor a whole list's rows (relist): the operator's
 * heap holds about 0.7-1.1 KiB per pod (bench/operator.bench.ts).
 *
 * Counters are read here and only here (countsFromAnnotations: an unsigned
 * 64-bit decimal, or the value is refused and the previous one stays,
 * logged once per pod and reason). The one rule for counters that go back:
 *
 *   a reading below what the pod was last counted with, in any counter
 *   (its previous reading, or its checkpoint when a leader loads the
 *   ledger), means the agent's counters restarted from zero (a node
 *   reboot lost the pinned links): everything the pod was counted with
 *   becomes its `base`, and the new reading counts on top of it.
 *
 * So a pod's contribution never goes down (a tenant who writes a lower
 * value on its own pod only adds to its own bill). Deleted pods are
 * remembered for the agents' finals window with the node they were bound
 * to (seenOn): a Node's finals are used only for those.
 */
import type { Logger } from '../common/log.ts';
import type { KubeObject } from '../common/kube/api.ts';
import { copy, equal, FIELDS, sum, wentBack, type Counts } from '../common/contract/counts.ts';
import { ANNOTATIONS, countsFromAnnotations, type Malformed } from '../common/contract/annotations.ts';
import { FINALS_WINDOW_MS, type Owner } from '../common/contract/finals.ts';
import type { Interner, OwnerIndex } from './owners.ts';
import type { Workload } from '../common/contract/workloads.ts';

export interface PodRecord {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  /** '' until the pod is scheduled. */
  node: string;
  readonly owner: Owner | null;
  /** Resolved owner chain; undefined while an owner is not known yet. */
  workload: Workload | undefined;
  readonly firstSeen: number;
  /** The counters of the pod's annotations, as last seen. */
  annotated: Counts;
  /**
   * Counters whose annotation has been malformed ever since this process first
   * saw the pod: zero in `annotated` because never read. A leader takes them
   * from the pod's checkpoint when it loads the ledger; a good value clears them.
   */
  unread: (keyof Counts)[] | undefined;
  /** Counts from before the agent's counters restarted from zero (a node reboot); usually undefined. */
  base: Counts | undefined;
  /** Leader only: the pod's counts as persisted in its NodeUsage checkpoint (what the rollups include). */
  checkpointed: Counts | undefined;
}

/** The counters (of `among`) whose annotation is in `malformed`; undefined when none. */
function malformedFields(
  malformed: Malformed[],
  among: readonly (keyof Counts)[] = FIELDS,
): (keyof Counts)[] | undefined {
  const fields = among.filter((f) => malformed.some((m) => m.annotation === ANNOTATIONS[f]));
  return fields.length > 0 ? fields : undefined;
}

/** What a pod contributes to the totals: everything it was ever counted with. */
export function contribution(p: PodRecord): Counts {
  return p.base === undefined ? p.annotated : sum(p.base, p.annotated);
}

export interface PodListener {
  added(p: PodRecord): void;
  changed(p: PodRecord, previous: { node: string }): void;
  /** The pod was deleted; `final` is its contribution in its last state (the DELETED event's annotations). */
  deleted(p: PodRecord, final: Counts): void;
  /** An owner became known (or the wait for it ended): the pod's workload was set. */
  assigned(p: PodRecord): void;
}

/** How long a pod waits for its ReplicaSet or Job to be seen before it is counted under the nearest known owner. */
const OWNER_WAIT_MS = 5_000;
/** At most this many deleted pods are remembered for the finals (a burst beyond it forgets the oldest). */
const MAX_REMEMBERED = 100_000;

interface Row {
  cells?: unknown[];
  object?: KubeObject;
}

export class PodStore {
  readonly #pods = new Map<string, PodRecord>();
  readonly #unresolved = new Set<PodRecord>();
  readonly #owners: OwnerIndex;
  readonly #intern: Interner;
  readonly #log: Logger;
  readonly #onMalformed: () => void;
  readonly #warned = new Set<string>();
  /** Pods deleted within the finals window, by uid, oldest first (seenOn). */
  readonly #gone = new Map<string, { p: PodRecord; at: number }>();
  #nodeColumn = -1;
  listener: PodListener | undefined;

  constructor(options: { owners: OwnerIndex; intern: Interner; log: Logger; onMalformed: () => void }) {
    this.#owners = options.owners;
    this.#intern = options.intern;
    this.#log = options.log;
    this.#onMalformed = options.onMalformed;
  }

  get size(): number {
    return this.#pods.size;
  }

  get(uid: string): PodRecord | undefined {
    return this.#pods.get(uid);
  }

  values(): IterableIterator<PodRecord> {
    return this.#pods.values();
  }

  /**
   * A complete list (Table rows), page by page (the Reflector's `relist`):
   * each page's rows become records at once, so the list's rows are never
   * all held; at the end, pods in no page were deleted while nobody watched.
   */
  relist(): { page(rows: KubeObject[], table: KubeObject): void; end(): void } {
    const seen = new Set<PodRecord>();
    return {
      page: (rows, table) => {
        this.#columns(table);
        for (const row of rows as Row[]) {
          const p = this.#upsert(row);
          if (p !== undefined) seen.add(p);
        }
      },
      end: () => {
        for (const p of [...this.#pods.values()]) if (!seen.has(p)) this.#delete(p, contribution(p));
      },
    };
  }

  /** One watch event (its Table holds one row; the first event of a watch also carries the columns). */
  event(type: 'ADDED' | 'MODIFIED' | 'DELETED', table: KubeObject): void {
    this.#columns(table);
    for (const row of (table as { rows?: Row[] | null }).rows ?? []) {
      if (type !== 'DELETED') {
        this.#upsert(row);
        continue;
      }
      const uid = row.object?.metadata?.uid;
      const p = uid === undefined ? undefined : this.#pods.get(uid);
      if (p === undefined) continue;
      this.#update(p, row); // the last state: the agent's final annotations
      this.#delete(p, contribution(p));
    }
  }

  /**
   * The pod's workload, resolving its owner chain now if it was not known;
   * `force` (or a pod older than the wait) falls back to the nearest known owner.
   */
  workloadOf(p: PodRecord, now: number, force: boolean): Workload | undefined {
    if (p.workload !== undefined) return p.workload;
    const r = this.#owners.resolve(p.namespace, p.name, p.owner);
    if (r.missing && !force && now - p.firstSeen < OWNER_WAIT_MS) return undefined;
    if (r.missing) this.#owners.reportMissing(p.namespace, p.name, r.workload);
    p.workload = r.workload;
    this.#unresolved.delete(p);
    return p.workload;
  }

  /** The workload of a pod known only from its agent's final (it was never in this store). */
  workloadOfFinal(namespace: string, podName: string, owner: Owner | null): Workload {
    const r = this.#owners.resolve(namespace, podName, owner);
    if (r.missing) this.#owners.reportMissing(namespace, podName, r.workload);
    return r.workload;
  }

  /** Retries pods whose owner was not known, forgets what the finals window and the caches let go; called on a timer. */
  resolvePending(now = Date.now()): void {
    for (const p of [...this.#unresolved]) {
      if (this.workloadOf(p, now, false) !== undefined) this.listener?.assigned(p);
    }
    // Also when no pod is deleted any more: what churn left goes once its time is up.
    this.#forgetGone(now);
    this.#owners.age(now);
  }

  /** Pins a pod's workload (the one its checkpoint was counted under). */
  pin(p: PodRecord, workload: Workload): void {
    p.workload = workload;
    this.#unresolved.delete(p);
  }

  /**
   * A leader loaded the pod's checkpoint (what the totals include): its base
   * is the checkpoint's, a counter whose annotation this process never read
   * is the checkpoint's (zero would look like a restart and count the pod
   * twice), and a reading below the checkpoint is a restart (the rule above).
   */
  resume(p: PodRecord, checkpointed: Counts, base: Counts | undefined): void {
    if (base !== undefined) p.base = base;
    if (p.unread !== undefined) {
      p.annotated = copy(p.annotated);
      for (const f of p.unread) {
        const read = checkpointed[f] - (p.base?.[f] ?? 0n);
        p.annotated[f] = read > 0n ? read : 0n;
      }
      p.unread = undefined;
    }
    this.#reading(p, p.annotated, checkpointed);
    p.checkpointed = checkpointed;
  }

  /** The pod `uid` if this process saw it bound to `node` (live, or deleted within the finals window). */
  seenOn(uid: string, node: string, now = Date.now()): PodRecord | undefined {
    const live = this.#pods.get(uid);
    if (live !== undefined) return live.node === node ? live : undefined;
    const gone = this.#gone.get(uid);
    return gone !== undefined && gone.p.node === node && now - gone.at <= FINALS_WINDOW_MS ? gone.p : undefined;
  }

  #columns(table: KubeObject): void {
    const defs = (table as { columnDefinitions?: { name?: string }[] | null }).columnDefinitions;
    if (!Array.isArray(defs) || defs.length === 0) return; // watch events after the first carry null
    this.#nodeColumn = defs.findIndex((d) => d.name === 'Node');
    if (this.#nodeColumn < 0)
      this.#log.warn("the API server's pod table has no Node column: pods are not attributed to nodes");
  }

  #nodeOf(row: Row): string {
    const cell = this.#nodeColumn < 0 ? undefined : row.cells?.[this.#nodeColumn];
    return typeof cell === 'string' && cell !== '<none>' ? this.#intern.get(cell) : '';
  }

  /** The pod's record, made or updated from the row (undefined: a row without uid, name or namespace). */
  #upsert(row: Row): PodRecord | undefined {
    const m = row.object?.metadata;
    if (!m?.uid || !m.name || !m.namespace) return undefined;
    const existing = this.#pods.get(m.uid);
    if (existing !== undefined) {
      const previous = { node: existing.node };
      if (this.#update(existing, row)) this.listener?.changed(existing, previous);
      return existing;
    }
    const { counts, malformed } = countsFromAnnotations(m.annotations, undefined);
    this.#malformed(m.namespace, m.name, m.uid, malformed);
    const p: PodRecord = {
      uid: m.uid,
      namespace: this.#intern.get(m.namespace),
      name: m.name,
      node: this.#nodeOf(row),
      owner: this.#owners.controllerOf(m.ownerReferences),
      workload: undefined,
      firstSeen: Date.now(),
      annotated: counts,
      unread: malformedFields(malformed),
      base: undefined,
      checkpointed: undefined,
    };
    this.#pods.set(p.uid, p);
    if (this.workloadOf(p, p.firstSeen, false) === undefined) this.#unresolved.add(p);
    this.listener?.added(p);
    return p;
  }

  /** Applies a row to a known pod; true when anything the rollups use changed. */
  #update(p: PodRecord, row: Row): boolean {
    const m = row.object?.metadata;
    let changed = false;
    const node = this.#nodeOf(row);
    if (node !== '' && node !== p.node) {
      p.node = node;
      changed = true;
    }
    const { counts, malformed } = countsFromAnnotations(m?.annotations, p.annotated);
    this.#malformed(p.namespace, p.name, p.uid, malformed);
    if (p.unread !== undefined) p.unread = malformedFields(malformed, p.unread);
    this.#reading(p, counts, contribution(p));
    if (!equal(counts, p.annotated)) {
      p.annotated = copy(counts);
      changed = true;
    }
    return changed;
  }

  /** The one place a counter that went back is handled (the rule in this file's header): `reading` against what the pod was `counted` with. */
  #reading(p: PodRecord, reading: Counts, counted: Counts): void {
    if (!wentBack(p.base === undefined ? reading : sum(p.base, reading), counted)) return;
    p.base = copy(counted);
    this.#log.warn(
      { namespace: p.namespace, pod: p.name },
      'pod counters went back (agent counters restarted): keeping the earlier counts as a base',
    );
  }

  #delete(p: PodRecord, final: Counts): void {
    const now = Date.now();
    this.#forgetGone(now);
    this.#gone.delete(p.uid);
    this.#gone.set(p.uid, { p, at: now });
    this.#pods.delete(p.uid);
    this.#unresolved.delete(p);
    this.listener?.deleted(p, final);
  }

  /** Drops deleted pods past the finals window (and the oldest beyond MAX_REMEMBERED). */
  #forgetGone(now: number): void {
    for (const [uid, g] of this.#gone) {
      if (now - g.at <= FINALS_WINDOW_MS && this.#gone.size < MAX_REMEMBERED) break;
      this.#gone.delete(uid);
    }
  }

  /** Counts each refused value; logs once per pod and reason. */
  #malformed(namespace: string, name: string, uid: string, malformed: Malformed[]): void {
    for (const problem of new Set(malformed.map((m) => m.problem))) {
      this.#onMalformed();
      const key = `${uid}/${problem}`;
      if (this.#warned.has(key)) continue;
      if (this.#warned.size > 10_000) this.#warned.clear(); // bounded; at worst a line repeats
      this.#warned.add(key);
      const annotations = malformed.filter((m) => m.problem === problem).map((m) => m.annotation);
      this.#log.warn(
        { namespace, pod: name, uid, annotations, problem },
        problem === 'above-u64'
          ? 'pod annotation is beyond an unsigned 64-bit counter: ignored, keeping the previous value'
          : 'pod annotation is not an unsigned decimal integer: ignored, keeping the previous value',
      );
    }
  }
}
