/**
 * podmeter's programs and maps: loaded from build/bpf/podmeter.bpf.o with
 * every map an earlier agent pinned reused (so existing links keep counting
 * into the same storage), then either the pinned programs adopted (they are
 * the ones just loaded: same code, same maps) or the links moved onto the
 * new ones (upgrade.ts). Maps of the object that had no pin are pinned now.
 */
import type { Logger } from '../../common/log.ts';
import {
  BpfObject,
  bpfObjectPath,
  checkPinnedProgram,
  closingOnThrow,
  CollectionSpec,
  DIRECTIONS,
  isCgroupStorage,
  type Direction,
  type MapObject,
  type Program,
} from '../kernel/bpf.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../kernel/contract.generated.ts';
import { memlockExplained, raiseMemlock } from './memlock.ts';
import { MAP_KEYS, PinDir, takeMap, type MapKey, type PodmeterMaps, type PodmeterObjects } from './pins.ts';
import { logUpgrade, moveLinks, sameProgram, type UsedMap } from './upgrade.ts';

/** The objects, and whether they were adopted from pins (else loaded now with nothing to keep). */
export function loadObjects(
  pins: PinDir,
  log: Logger,
  objectPath = bpfObjectPath('podmeter'),
): { objects: PodmeterObjects; adopted: boolean } {
  const memlock = raiseMemlock(log);
  pins.ensure();
  pins.removeStaging();
  const spec = CollectionSpec.load(objectPath);
  // Checked against the object this agent would load: a pin of another shape is refused.
  let pinned = pins.openMaps(spec);
  const counters = MAP_KEYS.filter((key) => isCgroupStorage(spec.map(PODMETER_MAPS[key].name)));
  if (counters.some((key) => pinned[key] === undefined)) {
    // Without the counters' pin there are no counts to keep: start clean.
    for (const map of Object.values(pinned)) map.close();
    for (const p of pins.objects()) PinDir.unpin(p);
    pinned = {};
  }
  let object: BpfObject;
  try {
    const reuse = new Map<string, MapObject>();
    for (const key of MAP_KEYS) {
      const map = pinned[key];
      if (map !== undefined) reuse.set(PODMETER_MAPS[key].name, map);
    }
    object = BpfObject.load(objectPath, reuse);
  } catch (err) {
    throw memlockExplained(err, memlock);
  } finally {
    // The object holds its own fds of the maps it reused.
    for (const map of Object.values(pinned)) map.close();
  }
  const created = MAP_KEYS.filter((key) => pinned[key] === undefined);
  const fresh = created.length === MAP_KEYS.length;
  try {
    const objects = closingOnThrow((keep): PodmeterObjects => {
      const maps = Object.fromEntries(MAP_KEYS.map((key) => [key, keep(takeMap(object, key))])) as PodmeterMaps;
      const loaded = programsOf((d) => keep(object.takeProgram(PODMETER_PROGRAMS[d].name)));
      if (fresh) {
        for (const d of DIRECTIONS) loaded[d].pin(pins.program(d));
        for (const key of MAP_KEYS) maps[key].pin(pins.map(key));
        log.info({ bpffs: pins.root }, 'loaded and pinned programs and counter map');
        return { programs: loaded, maps };
      }
      const current: Partial<Record<Direction, Program>> = {};
      for (const d of DIRECTIONS) {
        const program = pins.openProgram(d, spec);
        if (program !== undefined) current[d] = keep(program);
      }
      const upgrade = DIRECTIONS.filter((d) => !keepPinned(pins, spec, d, current[d], loaded[d], maps, created));
      const programs = programsOf((d) => (upgrade.includes(d) ? loaded[d] : current[d]!));
      if (upgrade.length === 0 && created.length === 0) {
        log.info({ bpffs: pins.root }, 'adopted pinned programs and counter map');
      } else {
        for (const key of created) maps[key].pin(pins.map(key));
        const storage = counters.map((key) => usedMap(maps, key));
        const moves = moveLinks(pins, spec, upgrade, programs, current, storage);
        // Only once every link runs the new program: else the next start (seeing the old pins) finishes the job.
        if (moves.failed.length === 0) for (const d of upgrade) pins.replaceProgram(d, programs[d]);
        logUpgrade(
          log,
          pins.root,
          tagsOf(current, programs),
          moves,
          created.map((key) => PODMETER_MAPS[key].pin),
        );
      }
      // The programs not chosen are closed: a replaced one lives on only in links not moved (and its pin, if kept).
      for (const d of DIRECTIONS) for (const p of [loaded[d], current[d]]) if (p !== programs[d]) p?.close();
      return { programs, maps };
    });
    return { objects, adopted: !fresh };
  } catch (err) {
    if (fresh) for (const p of pins.objects()) PinDir.unpin(p);
    throw err;
  } finally {
    object.close();
  }
}

/**
 * Whether direction `d`'s pinned program stays: it is the one just loaded
 * (same code and maps). Otherwise it is an earlier version's, which must be
 * podmeter's and count into the pinned storage to be upgraded; the same code
 * that does not use a pinned map (one put at its path since) is refused, as
 * any pin of another shape.
 */
function keepPinned(
  pins: PinDir,
  spec: CollectionSpec,
  d: Direction,
  pinned: Program | undefined,
  loaded: Program,
  maps: PodmeterMaps,
  created: readonly MapKey[],
): boolean {
  if (pinned === undefined) return false;
  const was = pinned.info();
  const now = loaded.info();
  if (sameProgram(was, now)) return true;
  const programSpec = spec.program(PODMETER_PROGRAMS[d].name);
  const reused = MAP_KEYS.filter((key) => !created.includes(key) && now.mapIds.includes(maps[key].id));
  const mustUse =
    was.tag === now.tag ? reused : reused.filter((key) => isCgroupStorage(spec.map(PODMETER_MAPS[key].name)));
  checkPinnedProgram(
    pins.program(d),
    was,
    programSpec,
    mustUse.map((key) => usedMap(maps, key)),
  );
  return false;
}

function usedMap(maps: PodmeterMaps, key: MapKey): UsedMap {
  return { id: maps[key].id, what: PODMETER_MAPS[key].pin };
}

function programsOf(make: (d: Direction) => Program): Record<Direction, Program> {
  return { ingress: make('ingress'), egress: make('egress') };
}

function tagsOf(
  from: Partial<Record<Direction, Program>>,
  to: Record<Direction, Program>,
): Record<Direction, { from: string | undefined; to: string }> {
  const tags = (d: Direction) => ({ from: from[d]?.info().tag, to: to[d].info().tag });
  return { ingress: tags('ingress'), egress: tags('egress') };
}

export function closeObjects(objects: PodmeterObjects): void {
  for (const o of [...Object.values(objects.programs), ...Object.values(objects.maps)]) o.close();
}
