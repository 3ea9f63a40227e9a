/**
 * Layout of podmeter's bpffs directory. Pins keep programs, maps and every
 * cgroup link alive when the agent exits, so a restarted agent adopts them
 * and counters continue where they were. Each map and program of
 * podmeter.bpf.c has the pin bpf/podmeter.h names (PODMETER_<name>_PIN,
 * in contract.generated.ts):
 *
 *   <bpffs>/prog_ingress, prog_egress   the two cgroup_skb programs
 *   <bpffs>/map_counters                podmeter_stats: the per-CPU cgroup storage (a slot per peer class)
 *   <bpffs>/map_peers                   podmeter_peers: the peer trie (prefix -> class slot)
 *   <bpffs>/map_generation              podmeter_gen: the trie's generation (invalidates the programs' cached classes)
 *   <bpffs>/map_slot_names              podmeter_names: which configured class holds each named slot
 *   <bpffs>/links/<cgroup id>_<direction>
 *
 * Anyone who can write the bpffs mount can put anything at these paths: what
 * is adopted is first checked against the BPF object podmeter would load
 * (openMaps(), load.ts), and a pin of another shape is refused, never read
 * or written. A new version's programs replace the pinned ones in place
 * (upgrade.ts): each is pinned at <pin>_next, then renamed over <pin> (bpffs
 * refuses dots in names).
 */
import { readdirSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { BpfObject, CollectionSpec, Direction } from '../kernel/bpf.ts';
import { assertBpffsDir, BpfMap, closingOnThrow, DIRECTIONS, Program, StatsMap } from '../kernel/bpf.ts';
import { BpfError } from '../kernel/errors.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../kernel/contract.generated.ts';
import { ensureDir } from '../files.ts';

/** A map of podmeter.bpf.c by its key (its name without `podmeter_`). */
export type MapKey = keyof typeof PODMETER_MAPS;
export const MAP_KEYS = Object.keys(PODMETER_MAPS) as MapKey[];

/** The maps of podmeter.bpf.c by key: podmeter_stats read as counters, every other as raw bytes. */
export type PodmeterMaps = { stats: StatsMap } & { [K in Exclude<MapKey, 'stats'>]: BpfMap };

/** The programs and maps of podmeter.bpf.c, by key. */
export interface PodmeterObjects {
  programs: Record<Direction, Program>;
  maps: PodmeterMaps;
}

/** Takes map `key` out of a loaded object (the caller owns it from then on). */
export function takeMap(object: BpfObject, key: MapKey): PodmeterMaps[MapKey] {
  const name = PODMETER_MAPS[key].name;
  return key === 'stats' ? object.takeStatsMap(name) : object.takeMap(name);
}

export interface LinkPin {
  cgroupId: bigint;
  direction: Direction;
  path: string;
}

export class PinDir {
  readonly root: string;
  readonly linksDir: string;

  constructor(root: string) {
    this.root = root;
    this.linksDir = join(root, 'links');
  }

  /** Creates the directories; the parent must already be a mounted bpffs. */
  ensure(): void {
    const parent = join(this.root, '..');
    assertBpffsDir(parent, 'bpffs directory (--bpffs) parent');
    ensureDir(this.linksDir);
    assertBpffsDir(this.root, 'bpffs directory (--bpffs)');
  }

  program(direction: Direction): string {
    return join(this.root, PODMETER_PROGRAMS[direction].pin);
  }

  /** Where a new program is pinned before it is renamed over program(direction) (replaceProgram). */
  staging(direction: Direction): string {
    return `${this.program(direction)}_next`;
  }

  map(key: MapKey): string {
    return join(this.root, PODMETER_MAPS[key].pin);
  }

  /** Every program and map pin (not the links). */
  objects(): string[] {
    return [...DIRECTIONS.map((d) => this.program(d)), ...MAP_KEYS.map((key) => this.map(key))];
  }

  /**
   * Opens the maps that have pins, each checked against `spec` (the object
   * podmeter would load: map type, key and value size, max entries); a map
   * without a pin is absent. A pin of another shape is a BpfError
   * (ErrorCodes.pinShape) naming it and both shapes; nothing stays open.
   */
  openMaps(spec: CollectionSpec): Partial<PodmeterMaps> {
    return closingOnThrow((open) => {
      const maps: Partial<Record<MapKey, PodmeterMaps[MapKey]>> = {};
      for (const key of MAP_KEYS) {
        const path = this.map(key);
        const mapSpec = spec.map(PODMETER_MAPS[key].name);
        const map = pinned(() => (key === 'stats' ? StatsMap.adopt(path, mapSpec) : BpfMap.adopt(path, mapSpec)));
        if (map !== undefined) maps[key] = open(map);
      }
      return maps as Partial<PodmeterMaps>;
    });
  }

  /** The program pinned for `direction` (not yet checked: load.ts compares it with the object's), or undefined. */
  openProgram(direction: Direction, spec: CollectionSpec): Program | undefined {
    const { name } = PODMETER_PROGRAMS[direction];
    return pinned(() => Program.fromPin(this.program(direction), name, spec.program(name).attachType));
  }

  /**
   * Pins `program` as direction's program, over the pin there in one step: a
   * rename, so the path always holds one of the two (a stop in between
   * leaves the staging pin, which the next start removes: removeStaging()).
   */
  replaceProgram(direction: Direction, program: Program): void {
    const staging = this.staging(direction);
    PinDir.unpin(staging);
    program.pin(staging);
    renameSync(staging, this.program(direction));
  }

  /** Removes staging pins a stopped replaceProgram() left (their program runs only in the links moved to it, if any). */
  removeStaging(): void {
    for (const d of DIRECTIONS) PinDir.unpin(this.staging(d));
  }

  /** Made for every attach and release: no join() (linksDir is normal already; see Tracker's #count). */
  link(cgroupId: bigint, direction: Direction): string {
    return `${this.linksDir}/${cgroupId}_${direction}`;
  }

  listLinks(): LinkPin[] {
    const pins: LinkPin[] = [];
    let names: string[];
    try {
      names = readdirSync(this.linksDir);
    } catch {
      return pins;
    }
    for (const name of names) {
      const m = /^(\d+)_(ingress|egress)$/.exec(name);
      if (m) pins.push({ cgroupId: BigInt(m[1]!), direction: m[2] as Direction, path: join(this.linksDir, name) });
    }
    return pins;
  }

  /** Removes a pin; a pin already gone is fine. */
  static unpin(path: string): void {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Removes every pin and the directories (used by `podmeter agent --uninstall` and tests). */
  removeAll(): void {
    for (const pin of this.listLinks()) PinDir.unpin(pin.path);
    for (const path of this.objects()) PinDir.unpin(path);
    this.removeStaging();
    for (const dir of [this.linksDir, this.root]) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty (someone else's files) or already gone: leave it
      }
    }
  }
}

/** What `open` opens, or undefined when there is no pin at its path. */
function pinned<T>(open: () => T): T | undefined {
  try {
    return open();
  } catch (err) {
    if (err instanceof BpfError && err.code === 'ENOENT') return undefined;
    throw err;
  }
}
