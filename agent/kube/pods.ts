/**
 * This node's pods, from a metadata-only list+watch of the API restricted
 * to spec.nodeName (never the whole cluster), on the one reflector
 * (common/kube/reflector.ts: relists on 410 Gone, retries with backoff,
 * drops a silent connection). Maps the uid in a pod cgroup's path to the
 * Pod: the pod uid, or for static pods the config hash that the mirror pod
 * carries in `kubernetes.io/config.hash`.
 */
import type { Logger } from '../../common/log.ts';
import type { Owner } from '../../common/contract/finals.ts';
import type { KubeApi, KubeObject } from '../../common/kube/api.ts';
import { Reflector } from '../../common/kube/reflector.ts';

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  /** The Pod's controller (its owner reference with controller: true), if any. */
  owner?: Owner;
}

const CONFIG_HASH = 'kubernetes.io/config.hash';
/** How long a deleted Pod stays known by its cgroup uid (its final counts are published after it went). */
const DEPARTED_MS = 15 * 60_000;

export class PodDirectory {
  readonly #reflector: Reflector;
  readonly #byCgroupUid = new Map<string, PodRef>();
  /** Deleted Pods by cgroup uid, oldest first. */
  readonly #departed = new Map<string, { ref: PodRef; at: number }>();

  constructor(options: { api: KubeApi; nodeName: string; idleMs: number; log: Logger; onError: (err: unknown) => void }) {
    this.#reflector = new Reflector({
      api: options.api,
      path: '/api/v1/pods',
      shape: 'metadata',
      query: { fieldSelector: `spec.nodeName=${options.nodeName}` },
      idleMs: options.idleMs,
      log: options.log,
      sync: (items) => this.#sync(items),
      event: (type, pod) => (type === 'DELETED' ? this.#remove(pod) : this.#put(pod)),
      onError: options.onError,
    });
  }

  /** Starts watching; resolves after the first list (retrying in the background until it succeeds). */
  start(): Promise<void> {
    return this.#reflector.start();
  }

  /** The Pod for the uid in a pod cgroup path. */
  byCgroupUid(uid: string): PodRef | undefined {
    return this.#byCgroupUid.get(uid);
  }

  /** The Pod for the uid in a pod cgroup path, also if it was deleted in the last 15 minutes. */
  lastKnown(uid: string): PodRef | undefined {
    return this.#byCgroupUid.get(uid) ?? this.#departed.get(uid)?.ref;
  }

  stop(): Promise<void> {
    return this.#reflector.stop();
  }

  /** A complete list: Pods missing from it were deleted while the watch was away. */
  #sync(items: KubeObject[]): void {
    const listed = new Set(items.map((pod) => pod.metadata?.uid));
    for (const [key, ref] of [...this.#byCgroupUid]) {
      if (!listed.has(ref.uid)) this.#depart(key, ref, Date.now());
    }
    for (const pod of items) this.#put(pod);
  }

  #put(pod: KubeObject): void {
    const m = pod.metadata;
    if (!m?.uid || !m.name || !m.namespace) return;
    const controller = m.ownerReferences?.find((o) => o.controller === true);
    const owner = controller?.kind && controller.name ? { owner: { kind: controller.kind, name: controller.name } } : {};
    const ref: PodRef = { namespace: m.namespace, name: m.name, uid: m.uid, ...owner };
    this.#byCgroupUid.set(m.uid, ref);
    const hash = m.annotations?.[CONFIG_HASH];
    if (hash) this.#byCgroupUid.set(hash, ref);
  }

  #remove(pod: KubeObject): void {
    const m = pod.metadata;
    if (!m?.uid) return;
    const now = Date.now();
    for (const key of [m.uid, m.annotations?.[CONFIG_HASH]]) {
      const ref = key === undefined ? undefined : this.#byCgroupUid.get(key);
      if (key !== undefined && ref !== undefined) this.#depart(key, ref, now);
    }
  }

  #depart(key: string, ref: PodRef, now: number): void {
    this.#byCgroupUid.delete(key);
    this.#departed.delete(key); // (re-inserted: the map stays oldest first)
    this.#departed.set(key, { ref, at: now });
    for (const [k, d] of this.#departed) {
      if (now - d.at <= DEPARTED_MS) break;
      this.#departed.delete(k);
    }
  }
}
