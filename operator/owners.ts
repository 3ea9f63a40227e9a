/**
 * Which workload a pod belongs to, from its controller owner reference and
 * the owners of ReplicaSets and Jobs (kept from metadata-only watches: for
 * each, only its own controller's kind and name).
 *
 *   Pod -> ReplicaSet -> Deployment (or any controller of the ReplicaSet)
 *   Pod -> Job -> CronJob
 *   Pod -> StatefulSet | DaemonSet | any other controller kind
 *   Pod without a controller (or owned by a Node: a static pod's mirror) -> the Pod itself
 *
 * A missing intermediate owner (not watched yet, or deleted) falls back to
 * the nearest owner known, e.g. the ReplicaSet; a cycle of owner references
 * stops at the pod's own controller. Each fallback is logged once.
 *
 * Owner references are written by whoever creates the pod: a kind or name
 * longer than the usage objects hold (or a kind that is not an identifier)
 * is fitted when read (workloadKind, workloadName in common/contract/workloads.ts),
 * so the same owner is always the same workload, two owners never share
 * one, and a huge name is not kept.
 */
import type { Logger } from '../common/log.ts';
import type { KubeObject, ObjectMeta } from '../common/kube/api.ts';
import type { Owner } from '../common/contract/finals.ts';
import { workloadKind, workloadName, type Workload } from '../common/contract/workloads.ts';

export interface Resolution {
  workload: Workload;
  /** True when an owner in the chain was not known (yet): the caller may ask again later. */
  missing: boolean;
}

/** Kinds whose own controller is looked up (the others end the chain). */
const CHAINED = new Set(['ReplicaSet', 'Job']);
const MAX_DEPTH = 8;
/** Strings and workloads kept for sharing: at most this many of each in a generation. */
const MAX_CACHED = 20_000;
/** A cached string or workload not used for one to two of these is let go (gone Jobs leave theirs behind). */
const GENERATION_MS = 2 * 60_000;

/**
 * A cache of what was used lately, in two generations: a lookup finds an
 * entry in the current one, or moves it there from the previous one; every
 * GENERATION_MS (or when the current one is full) the previous generation is
 * dropped and the current one becomes it. So an entry unused for two
 * generations goes, and memory comes back down after churn (gone Jobs' names
 * and workloads stayed until 20,000 had piled up: test/operator/retention).
 * Dropping an entry costs only sharing: whoever holds the value keeps it.
 */
class RecentlyUsed<V> {
  #current = new Map<string, V>();
  #previous = new Map<string, V>();
  #since = Date.now();

  get(key: string, make: () => V, now = Date.now()): V {
    this.age(now);
    let v = this.#current.get(key);
    if (v !== undefined) return v;
    v = this.#previous.get(key) ?? make();
    this.#current.set(key, v);
    return v;
  }

  /** Starts a generation; called by get() and on the operator's timer (so churn that ended still lets go). */
  age(now = Date.now()): void {
    if (now - this.#since < GENERATION_MS && this.#current.size < MAX_CACHED) return;
    this.#previous = this.#current;
    this.#current = new Map();
    this.#since = now;
  }
}

/** One copy of each repeated string (namespaces, kinds, owner names), so 150,000 pods do not hold 150,000 copies. */
export class Interner {
  readonly #strings = new RecentlyUsed<string>();
  get(s: string): string {
    return this.#strings.get(s, () => s);
  }

  /** Lets go of strings not used for two generations (the operator's timer). */
  age(now = Date.now()): void {
    this.#strings.age(now);
  }
}

export class OwnerIndex {
  /** `kind/namespace/name` -> its controller (null: it has none). */
  readonly #owners = new Map<string, Owner | null>();
  readonly #workloads = new RecentlyUsed<Workload>();
  readonly #logged = new Set<string>();
  readonly #log: Logger;
  readonly #intern: Interner;

  constructor(log: Logger, intern: Interner) {
    this.#log = log;
    this.#intern = intern;
  }

  /** A ReplicaSet or Job seen (list or watch). */
  put(kind: string, object: KubeObject): void {
    const m = object.metadata;
    if (!m?.name || !m.namespace) return;
    this.#owners.set(`${kind}/${m.namespace}/${m.name}`, this.#controllerOf(m.ownerReferences));
  }

  remove(kind: string, object: KubeObject): void {
    const m = object.metadata;
    if (m?.name && m.namespace) this.#owners.delete(`${kind}/${m.namespace}/${m.name}`);
  }

  /** Replaces every object of `kind` (a complete list). */
  sync(kind: string, objects: KubeObject[]): void {
    for (const key of [...this.#owners.keys()]) if (key.startsWith(`${kind}/`)) this.#owners.delete(key);
    for (const o of objects) this.put(kind, o);
  }

  get size(): number {
    return this.#owners.size;
  }

  /** The controller reference of an object's owner references (kind and name, interned). */
  controllerOf(refs: ObjectMeta['ownerReferences']): Owner | null {
    return this.#controllerOf(refs);
  }

  resolve(namespace: string, podName: string, controller: Owner | null): Resolution {
    if (controller === null || controller.kind === 'Node')
      return { workload: this.workload(namespace, 'Pod', podName), missing: false };
    let current = controller;
    const seen = new Set<string>();
    for (let depth = 0; depth < MAX_DEPTH && CHAINED.has(current.kind); depth++) {
      const key = `${current.kind}/${namespace}/${current.name}`;
      if (seen.has(key)) {
        this.#once(
          `cycle ${key}`,
          { namespace, pod: podName, owner: key },
          'owner references form a cycle: counting the pod under its own controller',
        );
        return { workload: this.workload(namespace, controller.kind, controller.name), missing: false };
      }
      seen.add(key);
      const owner = this.#owners.get(key);
      if (owner === undefined) {
        return { workload: this.workload(namespace, current.kind, current.name), missing: true };
      }
      if (owner === null) break;
      current = owner;
    }
    return { workload: this.workload(namespace, current.kind, current.name), missing: false };
  }

  /** Logs the fallback of a pod whose owner stayed unknown (once per owner). */
  reportMissing(namespace: string, podName: string, workload: Workload): void {
    this.#once(
      `missing ${workload.key}`,
      { namespace, pod: podName, owner: `${workload.kind}/${workload.name}` },
      'owner not found: counting the pod under the nearest known owner',
    );
  }

  workload(namespace: string, kind: string, name: string): Workload {
    kind = workloadKind(kind);
    name = workloadName(name);
    const key = `${namespace}/${kind}/${name}`;
    return this.#workloads.get(key, () => ({
      namespace: this.#intern.get(namespace),
      kind: this.#intern.get(kind),
      name: this.#intern.get(name),
      key,
    }));
  }

  /** Lets go of the workloads and strings not used for two generations (the operator's timer). */
  age(now = Date.now()): void {
    this.#workloads.age(now);
    this.#intern.age(now);
  }

  #controllerOf(refs: { kind?: string; name?: string; controller?: boolean }[] | undefined): Owner | null {
    const ref = refs?.find((r) => r.controller === true);
    if (!ref?.kind || !ref.name) return null;
    return { kind: this.#intern.get(workloadKind(ref.kind)), name: this.#intern.get(workloadName(ref.name)) };
  }

  #once(key: string, fields: Record<string, string>, msg: string): void {
    if (this.#logged.has(key)) return;
    if (this.#logged.size > 10_000) this.#logged.clear(); // bounded; at worst a line repeats
    this.#logged.add(key);
    this.#log.warn(fields, msg);
  }
}
