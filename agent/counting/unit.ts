/**
 * A counted unit as the tracker (tracker.ts) holds it: the state file's
 * record of it (state.ts UnitRecord) with its place in the lifecycle and its
 * cgroup directory; and the steps that make its counts, which need no
 * kernel: a unit made from the previous run's record, counts of an earlier
 * cgroup carried on as the base of fresh links, a vanished cgroup's last
 * counts, and a kernel read taken into the counts.
 */
import { join } from 'node:path';
import type { UnitIdentity } from '../cgroups/units.ts';
import { addUnitCounts, NO_COUNTS, unitWentBack, type UnitCounts } from '../../common/contract/counts.ts';
import type { UnitRecord } from './state.ts';

export interface Unit extends UnitRecord {
  state: 'live' | 'draining' | 'terminated';
  /** Absolute cgroup directory. */
  path: string;
}

/** False for the ids keyApart() gives the records of an earlier boot. */
export const ofThisBoot = (id: bigint): boolean => id > 0n;

/**
 * The state file's records, keyed for this boot. After a reboot the kernel
 * gives the same cgroup ids out again: the records of the earlier boot are
 * keyed apart (negative ids, which no cgroup has), so no cgroup of this boot
 * is taken for one of them; a pod carries on from its earlier cgroup by uid
 * only.
 */
export function keyApart(
  records: { live: UnitRecord[]; finals: UnitRecord[] },
  earlierBoot: boolean,
): { live: UnitRecord[]; finals: UnitRecord[] } {
  if (!earlierBoot) return records;
  let apart = 0n;
  const key = (r: UnitRecord): UnitRecord => ({ ...r, id: --apart });
  const live = records.live.map(key);
  return { live, finals: records.finals.map(key) };
}

/** A live unit of the cgroup `id` at `path`, with what the previous run's record of that cgroup counted (links adopted). */
export function openedUnit(identity: UnitIdentity, id: bigint, path: string, previous: UnitRecord | undefined): Unit {
  const unit: Unit = {
    ...identity,
    id,
    path,
    state: 'live',
    attachedAt: previous?.attachedAt ?? Date.now(),
    network: previous?.network ?? NO_COUNTS.network,
    byClass: previous?.byClass ?? NO_COUNTS.byClass,
  };
  if (previous?.base !== undefined) unit.base = previous.base;
  return unit;
}

/**
 * Fresh links count from zero: what `earlier` counted (this cgroup, whose
 * pins went while no agent ran, or an earlier cgroup of the same pod)
 * carries on as the unit's base, and its counts start there. Where the
 * cgroup's storage outlived its links (`storageKept`), the new links count
 * on into it: only the base it was read on carries on.
 */
export function countFrom(unit: Unit, earlier: UnitRecord | undefined, storageKept: boolean): void {
  delete unit.base;
  if (earlier !== undefined) {
    const carried = storageKept ? earlier.base : earlier;
    if (carried !== undefined) unit.base = { network: carried.network, byClass: carried.byClass };
    unit.attachedAt = earlier.attachedAt;
  } else {
    unit.attachedAt = Date.now();
  }
  unit.network = unit.base?.network ?? NO_COUNTS.network;
  unit.byClass = unit.base?.byClass ?? NO_COUNTS.byClass;
}

/**
 * A vanished cgroup's last counts (draining): `read`, what its links still
 * read, on top of the previous run's record's base; else that record's counts.
 */
export function vanishedUnit(
  id: bigint,
  record: UnitRecord | undefined,
  root: string,
  read: UnitCounts | undefined,
): Unit {
  const unit: Unit = {
    id,
    relPath: record?.relPath ?? `cgroup-id:${id}`,
    kind: record?.kind ?? 'cgroup',
    attachedAt: record?.attachedAt ?? Date.now(),
    network: record?.network ?? NO_COUNTS.network,
    byClass: record?.byClass ?? NO_COUNTS.byClass,
    path: join(root, record?.relPath ?? ''),
    state: 'draining',
  };
  if (record?.base !== undefined) unit.base = record.base;
  if (record?.uid !== undefined) unit.uid = record.uid;
  if (read !== undefined) Object.assign(unit, addUnitCounts(unit.base, read)); // network and byClass
  return unit;
}

/**
 * Sets a unit's counts from a read of the kernel (on top of its base);
 * false when they stay as they were. A removed cgroup's storage can read as
 * zeros while the kernel tears it down: a draining unit's counts never go back.
 */
export function takeRead(unit: Unit, read: UnitCounts): boolean {
  const counts = addUnitCounts(unit.base, read);
  if (unit.state === 'draining' && unitWentBack(counts, unit)) return false;
  Object.assign(unit, counts); // network and byClass
  return true;
}
