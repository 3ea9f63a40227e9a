/**
 * One read of a counted cgroup: both directions' slots summed over CPUs in
 * one call (StatsMap.readUnit), by class and in total (UnitCounts). The
 * caller keeps its last read and hands it back: while the cgroup is idle the
 * addon returns the same sums and this the same read, so an idle unit costs
 * no BigInt, no object, and nothing downstream is rebuilt (its counts are
 * the same objects from round to round).
 */
import { unitCounts, type UnitCounts } from '../../common/contract/counts.ts';
import { unitHalf, type StatsMap } from '../kernel/bpf.ts';
import type { SlotNames } from '../peers/classes.ts';

export interface KernelRead {
  readonly sums: BigUint64Array;
  readonly counts: UnitCounts;
}

/** The cgroup's counts; `last` itself while nothing changed; undefined once the kernel has released its storage. */
export function readCgroup(
  stats: StatsMap,
  slots: SlotNames,
  cgroupId: bigint,
  last: KernelRead | undefined,
): KernelRead | undefined {
  return fromSums(slots, stats.readUnit(cgroupId, last?.sums), last);
}

/** readCgroup() of many cgroups in one native call (StatsMap.readUnits), `lasts[i]` for `cgroupIds[i]`. */
export function readCgroups(
  stats: StatsMap,
  slots: SlotNames,
  cgroupIds: readonly bigint[],
  lasts: readonly (KernelRead | undefined)[],
): (KernelRead | undefined)[] {
  const sums = stats.readUnits(
    cgroupIds,
    lasts.map((last) => last?.sums),
  );
  return sums.map((s, i) => fromSums(slots, s, lasts[i]));
}

function fromSums(
  slots: SlotNames,
  sums: BigUint64Array | undefined,
  last: KernelRead | undefined,
): KernelRead | undefined {
  if (sums === undefined) return undefined;
  if (sums === last?.sums) return last;
  const byClass = (d: 'ingress' | 'egress') => slots.byClass(unitHalf(sums, d));
  return { sums, counts: unitCounts({ ingress: byClass('ingress'), egress: byClass('egress') }) };
}
