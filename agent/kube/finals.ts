/**
 * The Node annotation `podmeter.io/finals`: the final counts of the node's
 * pods whose cgroups went in the last 10 minutes (at most 50, newest first).
 *
 * A Pod's own annotations can miss its final counts (the Pod object may be
 * deleted before the agent's last write, which waits for the kernel to
 * release the cgroup and for the write budget), and an operator that was not
 * running when a Pod was deleted never sees its last annotations. The Node
 * outlives its pods, so the operator reads the finals from here: it counts
 * a pod with the larger of its last annotations and its final here, once.
 *
 * Written by the agent (one value, JSON), read by the operator.
 */
import type { DirectionCounters } from '../counting/meter.ts';
import type { Unit } from '../counting/tracker.ts';
import type { PodRef } from './pods.ts';

export const FINALS_WINDOW_MS = 10 * 60_000;
export const MAX_FINALS = 50;

/** One pod's final counts as they travel in the annotation (decimal strings: counters pass 2^53). */
export interface NodeFinal {
  /** The Pod's uid (the mirror Pod's for a static pod). */
  uid: string;
  /** Namespace, name and controller: absent when the agent restarted after the Pod object went. */
  namespace?: string;
  name?: string;
  owner?: { kind: string; name: string };
  /** When the agent read the final counts (RFC 3339). */
  terminated: string;
  ingressBytes: string;
  egressBytes: string;
  ingressPackets: string;
  egressPackets: string;
}

const POD_UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The finals to publish: terminated pod units with traffic, within the
 * window, newest first, at most MAX_FINALS. `podOf` names the Pod of a
 * cgroup uid (also a Pod deleted a little while ago).
 */
export function nodeFinals(units: Iterable<Unit>, podOf: (cgroupUid: string) => PodRef | undefined, now: number): NodeFinal[] {
  const picked: { at: number; final: NodeFinal }[] = [];
  for (const unit of units) {
    if (unit.kind !== 'pod' || unit.state !== 'terminated' || unit.uid === undefined || unit.terminatedAt === undefined) continue;
    if (now - unit.terminatedAt > FINALS_WINDOW_MS || isZero(unit.counters)) continue;
    const pod = podOf(unit.uid);
    // Without the Pod, only a cgroup named by the pod uid itself can be named (a static pod's is a config hash).
    const uid = pod?.uid ?? (POD_UID.test(unit.uid) ? unit.uid : undefined);
    if (uid === undefined) continue;
    const c = unit.counters;
    picked.push({
      at: unit.terminatedAt,
      final: {
        uid,
        ...(pod ? { namespace: pod.namespace, name: pod.name, ...(pod.owner ? { owner: pod.owner } : {}) } : {}),
        terminated: new Date(unit.terminatedAt).toISOString(),
        ingressBytes: String(c.ingress.bytes),
        egressBytes: String(c.egress.bytes),
        ingressPackets: String(c.ingress.packets),
        egressPackets: String(c.egress.packets),
      },
    });
  }
  return picked
    .sort((a, b) => b.at - a.at)
    .slice(0, MAX_FINALS)
    .map((p) => p.final);
}

function isZero(c: DirectionCounters): boolean {
  return c.ingress.bytes === 0n && c.egress.bytes === 0n && c.ingress.packets === 0n && c.egress.packets === 0n;
}
