/**
 * podmeter's programs and maps, adopted from the pins an earlier agent left
 * (so existing links keep counting into the same storage) or loaded from
 * build/bpf/podmeter.bpf.o and pinned.
 */
import { existsSync } from 'node:fs';
import type { Logger } from '../../common/log.ts';
import { BpfObject, bpfObjectPath, closingOnThrow, CollectionSpec, DIRECTIONS } from '../kernel/bpf.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../kernel/contract.generated.ts';
import { memlockExplained, raiseMemlock } from './memlock.ts';
import { MAP_KEYS, PinDir, type PodmeterMaps, type PodmeterObjects } from './pins.ts';

/** The objects, and whether they were adopted from pins (else loaded now). */
export function loadObjects(pins: PinDir, log: Logger): { objects: PodmeterObjects; adopted: boolean } {
  const memlock = raiseMemlock(log);
  pins.ensure();
  const pinned = pins.objects();
  if (pinned.every((p) => existsSync(p))) {
    // Checked against the object this agent would load: a pin of another shape is refused.
    const objects = pins.adopt(CollectionSpec.load(bpfObjectPath('podmeter')));
    log.info({ bpffs: pins.root }, 'adopted pinned programs and counter map');
    return { objects, adopted: true };
  }
  // A partial set is useless: start clean.
  for (const p of pinned) PinDir.unpin(p);
  let object: BpfObject;
  try {
    object = BpfObject.load(bpfObjectPath('podmeter'));
  } catch (err) {
    throw memlockExplained(err, memlock);
  }
  try {
    // Maps taken out of the object are closed here if a later step fails; the object closes the rest.
    const objects = closingOnThrow((take): PodmeterObjects => {
      const maps = { stats: take(object.takeStatsMap(PODMETER_MAPS.stats.name)) } as PodmeterMaps;
      for (const key of MAP_KEYS) if (key !== 'stats') maps[key] = take(object.takeMap(PODMETER_MAPS[key].name));
      const programs = {
        ingress: object.program(PODMETER_PROGRAMS.ingress.name),
        egress: object.program(PODMETER_PROGRAMS.egress.name),
      };
      for (const d of DIRECTIONS) programs[d].pin(pins.program(d));
      for (const key of MAP_KEYS) maps[key].pin(pins.map(key));
      return { programs, maps };
    });
    log.info({ bpffs: pins.root }, 'loaded and pinned programs and counter map');
    return { objects, adopted: false };
  } catch (err) {
    object.close();
    for (const p of pinned) PinDir.unpin(p);
    throw err;
  }
}

export function closeObjects(objects: PodmeterObjects): void {
  for (const o of [...Object.values(objects.programs), ...Object.values(objects.maps)]) o.close();
}
