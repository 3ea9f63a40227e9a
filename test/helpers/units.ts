/**
 * Tracker units for unit tests of what reads them (the annotator, Node
 * finals): a pod unit of its own uid and cgroup path, live, no traffic,
 * unless `over` says otherwise.
 */
import type { Unit } from '../../agent/counting/unit.ts';
import { NO_COUNTS } from '../../common/contract/counts.ts';

/** A pod uid numbered `i` (valid UUID form). */
export const uidOf = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

export function podUnit(i: number, over: Partial<Unit> = {}): Unit {
  return {
    id: BigInt(i),
    relPath: `kubepods/pod${uidOf(i)}`,
    path: `/x/kubepods/pod${uidOf(i)}`,
    kind: 'pod',
    uid: uidOf(i),
    attachedAt: 0,
    state: 'live',
    ...NO_COUNTS,
    ...over,
  };
}
