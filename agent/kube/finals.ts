/**
 * Which finals this agent publishes on its Node (`podmeter.io/finals`, the
 * format in common/contract/finals.ts): terminated pod units with traffic,
 * within the window, newest first, at most MAX_FINALS.
 */
import { contractCounts, isZero } from '../../common/contract/counts.ts';
import { encodeFinal, FINALS_WINDOW_MS, MAX_FINALS, type NodeFinal } from '../../common/contract/finals.ts';
import type { Unit } from '../counting/unit.ts';
import type { PodRef } from './pods.ts';

const POD_UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The finals to publish: terminated pod units with traffic, within the
 * window, newest first, at most MAX_FINALS. `podOf` names the Pod of a
 * cgroup uid (also a Pod deleted a little while ago).
 */
export function nodeFinals(
  units: Iterable<Unit>,
  podOf: (cgroupUid: string) => PodRef | undefined,
  now: number,
): NodeFinal[] {
  const picked: { at: number; final: NodeFinal }[] = [];
  for (const unit of units) {
    if (unit.kind !== 'pod' || unit.state !== 'terminated' || unit.uid === undefined || unit.terminatedAt === undefined)
      continue;
    const counts = contractCounts(unit);
    if (now - unit.terminatedAt > FINALS_WINDOW_MS || isZero(counts)) continue;
    const pod = podOf(unit.uid);
    // Without the Pod, only a cgroup named by the pod uid itself can be named (a static pod's is a config hash).
    const uid = pod?.uid ?? (POD_UID.test(unit.uid) ? unit.uid : undefined);
    if (uid === undefined) continue;
    picked.push({ at: unit.terminatedAt, final: encodeFinal(uid, pod, unit.terminatedAt, counts) });
  }
  return picked
    .sort((a, b) => b.at - a.at)
    .slice(0, MAX_FINALS)
    .map((p) => p.final);
}
