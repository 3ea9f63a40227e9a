/**
 * This node's pods, from a metadata-only list+watch of the API restricted
 * to spec.nodeName (never the whole cluster), on the one reflector
 * (common/kube/reflector.ts: relists on 410 Gone, retries with backoff,
 * drops a silent connection). Maps the uid in a pod cgroup's path to the
 * Pod: the pod uid, or for static pods the config hash that the mirror pod
 * carries in `kubernetes.io/config.hash`.
 *
 * Any tenant who may create a Pod may write that annotation, and a cgroup
 * named by a claimed value would bill its bytes (and its final) to the
 * claimant. So a claim counts only from a mirror pod (`kubernetes.io/
 * config.mirror`, controlled by this Node as the kubelet makes it), only
 * for exactly 32 lowercase hex digits (never a pod uid's shape), and a
 * pod's own uid always wins; a hash two pods claim names neither. A
 * rejected claim is logged once per pod and reported (`onRejectedClaim`).
 */
import type { Logger } from '../../common/log.ts';
import type { Owner } from '../../common/contract/finals.ts';
import type { KubeApi, KubeObject, ObjectMeta } from '../../common/kube/api.ts';
import { Reflector } from '../../common/kube/reflector.ts';

/** Namespace and pod name for a pod uid, once the Kubernetes side knows them. */
export type PodNamer = (uid: string) => { namespace: string; pod: string } | undefined;

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  /** The Pod's controller (its owner reference with controller: true), if any. */
  owner?: Owner;
}

export const CONFIG_HASH = 'kubernetes.io/config.hash';
export const CONFIG_MIRROR = 'kubernetes.io/config.mirror';
/** What the kubelet names a static pod's cgroup by (podPath.ts lower-cases it; the kubelet writes it so). */
const CONFIG_HASH_VALUE = /^[0-9a-f]{32}$/;
/** How long a deleted Pod stays known by its cgroup uid (its final counts are published after it went). */
const DEPARTED_MS = 15 * 60_000;

/** Why a Pod's config hash names no cgroup: not a mirror pod of this node, not 32 lowercase hex digits, or claimed by two pods. */
export type ClaimRejection = 'not_mirror' | 'malformed' | 'contested';

/** The config hash a Pod's metadata may stand for on `nodeName`, the reason it may not, or undefined (no claim). */
export function configHashClaim(
  meta: ObjectMeta,
  nodeName: string,
): { hash: string } | { rejected: Exclude<ClaimRejection, 'contested'> } | undefined {
  const hash = meta.annotations?.[CONFIG_HASH];
  if (hash === undefined) return undefined;
  const mirror =
    meta.annotations?.[CONFIG_MIRROR] !== undefined &&
    (meta.ownerReferences ?? []).some(
      (o) => o.apiVersion === 'v1' && o.kind === 'Node' && o.name === nodeName && o.controller === true,
    );
  if (!mirror) return { rejected: 'not_mirror' };
  return CONFIG_HASH_VALUE.test(hash) ? { hash } : { rejected: 'malformed' };
}

/** The pods known now, by uid and by accepted config hash, from complete lists and watch events (no API: PodDirectory feeds it). */
export class PodIndex {
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #onRejectedClaim: (reason: ClaimRejection) => void;
  readonly #pods = new Map<string, { ref: PodRef; hash: string | undefined }>();
  /** Accepted config hash claims: hash -> the uids of the pods claiming it (more than one: contested, nobody's). */
  readonly #claims = new Map<string, Set<string>>();
  /** Pods whose rejected claim was logged (once per pod). */
  readonly #reported = new Set<string>();
  /** Deleted Pods by cgroup uid, oldest first. */
  readonly #departed = new Map<string, { ref: PodRef; at: number }>();

  constructor(options: { nodeName: string; log: Logger; onRejectedClaim?: (reason: ClaimRejection) => void }) {
    this.#nodeName = options.nodeName;
    this.#log = options.log;
    this.#onRejectedClaim = options.onRejectedClaim ?? (() => {});
  }

  /** The Pod for the uid in a pod cgroup path: the Pod of that uid, else the one Pod whose claim of that config hash stands. */
  byCgroupUid(uid: string): PodRef | undefined {
    const own = this.#pods.get(uid);
    if (own !== undefined) return own.ref;
    const claimants = this.#claims.get(uid);
    if (claimants?.size !== 1) return undefined;
    const [claimant] = claimants;
    return this.#pods.get(claimant!)?.ref;
  }

  /** The Pod for the uid in a pod cgroup path, also if it was deleted in the last 15 minutes. */
  lastKnown(uid: string): PodRef | undefined {
    return this.byCgroupUid(uid) ?? this.#departed.get(uid)?.ref;
  }

  /** A complete list: Pods missing from it were deleted while the watch was away. */
  sync(items: KubeObject[]): void {
    const listed = new Set(items.map((pod) => pod.metadata?.uid));
    const now = Date.now();
    for (const uid of [...this.#pods.keys()]) {
      if (!listed.has(uid)) this.#remove(uid, now);
    }
    for (const pod of items) this.put(pod);
  }

  /** An added or modified Pod. */
  put(pod: KubeObject): void {
    const m = pod.metadata;
    if (!m?.uid || !m.name || !m.namespace) return;
    const controller = m.ownerReferences?.find((o) => o.controller === true);
    const owner =
      controller?.kind && controller.name ? { owner: { kind: controller.kind, name: controller.name } } : {};
    const ref: PodRef = { namespace: m.namespace, name: m.name, uid: m.uid, ...owner };
    const previous = this.#pods.get(m.uid);
    const claim = configHashClaim(m, this.#nodeName);
    const hash = claim !== undefined && 'hash' in claim ? claim.hash : undefined;
    if (previous?.hash !== undefined && previous.hash !== hash) this.#unclaim(previous.hash, m.uid);
    this.#pods.set(m.uid, { ref, hash });
    if (claim === undefined) return;
    if ('rejected' in claim) return this.#reject(ref, claim.rejected, m.annotations?.[CONFIG_HASH]);
    let claimants = this.#claims.get(claim.hash);
    if (claimants === undefined) this.#claims.set(claim.hash, (claimants = new Set()));
    claimants.add(m.uid);
    if (claimants.size > 1)
      this.#reject(
        ref,
        'contested',
        claim.hash,
        [...claimants].filter((u) => u !== m.uid).map((u) => this.#pods.get(u)!.ref),
      );
  }

  /** A deleted Pod. */
  delete(pod: KubeObject): void {
    if (pod.metadata?.uid) this.#remove(pod.metadata.uid, Date.now());
  }

  #remove(uid: string, now: number): void {
    const known = this.#pods.get(uid);
    if (known === undefined) return;
    this.#depart(uid, known.ref, now);
    // Its hash leaves with it only if the cgroup was named to it (the sole claimant).
    if (known.hash !== undefined && this.byCgroupUid(known.hash) === known.ref)
      this.#depart(known.hash, known.ref, now);
    if (known.hash !== undefined) this.#unclaim(known.hash, uid);
    this.#pods.delete(uid);
    this.#reported.delete(uid);
  }

  #unclaim(hash: string, uid: string): void {
    const claimants = this.#claims.get(hash);
    claimants?.delete(uid);
    if (claimants?.size === 0) this.#claims.delete(hash);
  }

  #reject(pod: PodRef, reason: ClaimRejection, value: string | undefined, others: PodRef[] = []): void {
    if (this.#reported.has(pod.uid)) return;
    this.#reported.add(pod.uid);
    this.#onRejectedClaim(reason);
    const contested = others.map((o) => `${o.namespace}/${o.name}`);
    this.#log.warn(
      {
        namespace: pod.namespace,
        pod: pod.name,
        uid: pod.uid,
        configHash: value,
        reason,
        ...(contested.length > 0 ? { alsoClaimedBy: contested } : {}),
      },
      `Pod's ${CONFIG_HASH} names no cgroup: ${REJECTION_TEXT[reason]}`,
    );
  }

  #depart(key: string, ref: PodRef, now: number): void {
    this.#departed.delete(key); // (re-inserted: the map stays oldest first)
    this.#departed.set(key, { ref, at: now });
    for (const [k, d] of this.#departed) {
      if (now - d.at <= DEPARTED_MS) break;
      this.#departed.delete(k);
    }
  }
}

const REJECTION_TEXT: Record<ClaimRejection, string> = {
  not_mirror: `only a static pod's mirror pod (${CONFIG_MIRROR}, controlled by this Node) may claim one`,
  malformed: 'not 32 lowercase hex digits',
  contested: 'another pod claims the same hash, so neither is given its counts',
};

/** PodIndex fed by the node-scoped pod watch. */
export class PodDirectory extends PodIndex {
  readonly #reflector: Reflector;

  constructor(options: {
    api: KubeApi;
    nodeName: string;
    idleMs: number;
    log: Logger;
    onError: (err: unknown) => void;
    onRejectedClaim?: (reason: ClaimRejection) => void;
  }) {
    super(options);
    this.#reflector = new Reflector({
      api: options.api,
      path: '/api/v1/pods',
      shape: 'metadata',
      query: { fieldSelector: `spec.nodeName=${options.nodeName}` },
      idleMs: options.idleMs,
      log: options.log,
      sync: (items) => this.sync(items),
      event: (type, pod) => (type === 'DELETED' ? this.delete(pod) : this.put(pod)),
      onError: options.onError,
    });
  }

  /** Starts watching; resolves after the first list (retrying in the background until it succeeds). */
  start(): Promise<void> {
    return this.#reflector.start();
  }

  stop(): Promise<void> {
    return this.#reflector.stop();
  }
}
