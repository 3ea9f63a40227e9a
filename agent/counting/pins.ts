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
 *   <bpffs>/map_flows, map_flows_a, map_flows_b, map_flow_epochs, map_flow_misses, map_units
 *                                       Service flows (agent/services/tables.ts)
 *   <bpffs>/links/<cgroup id>_<direction>
 *
 * Anyone who can write the bpffs mount can put anything at these paths: what
 * is adopted is first checked against the BPF object podmeter would load
 * (adopt()), and a pin of another shape is refused, never read or written.
 */
import { readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { CollectionSpec, Direction } from '../kernel/bpf.ts';
import { assertBpffsDir, BpfMap, closingOnThrow, DIRECTIONS, Program, StatsMap } from '../kernel/bpf.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../kernel/contract.generated.ts';
import { ensureDir } from '../files.ts';

/** A map of podmeter.bpf.c by its key (its name without `podmeter_`). */
export type MapKey = keyof typeof PODMETER_MAPS;
export const MAP_KEYS = Object.keys(PODMETER_MAPS) as MapKey[];

/** The maps of podmeter.bpf.c by key: the per-CPU cgroup storage, and ordinary maps. */
export type PodmeterMaps = { stats: StatsMap } & Record<Exclude<MapKey, 'stats'>, BpfMap>;

/** The programs and maps of podmeter.bpf.c, by key. */
export interface PodmeterObjects {
  programs: Record<Direction, Program>;
  maps: PodmeterMaps;
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

  map(key: MapKey): string {
    return join(this.root, PODMETER_MAPS[key].pin);
  }

  /** Every program and map pin (not the links). */
  objects(): string[] {
    return [...DIRECTIONS.map((d) => this.program(d)), ...MAP_KEYS.map((key) => this.map(key))];
  }

  /**
   * Opens the pinned programs and maps, each checked against `spec` (the
   * object podmeter would load: map type, key and value size, max entries;
   * program type and name, and that both programs use the pinned counters,
   * peer trie and generation maps). A pin of another shape is a BpfError
   * (ErrorCodes.pinShape) naming it and both shapes; nothing stays open.
   */
  adopt(spec: CollectionSpec): PodmeterObjects {
    return closingOnThrow((open) => {
      const maps = {
        stats: open(StatsMap.adopt(this.map('stats'), spec.map(PODMETER_MAPS.stats.name))),
      } as PodmeterMaps;
      for (const key of MAP_KEYS)
        if (key !== 'stats') maps[key] = open(BpfMap.adopt(this.map(key), spec.map(PODMETER_MAPS[key].name)));
      // The maps both programs use (names, flows' tables and epochs: only the agent reads and writes them).
      const used = (['stats', 'peers', 'gen', 'flows', 'flow_misses', 'units'] as const).map((key) => ({
        map: maps[key],
        what: PODMETER_MAPS[key].pin,
      }));
      const adoptProgram = (d: Direction) =>
        open(Program.adopt(this.program(d), spec.program(PODMETER_PROGRAMS[d].name), used));
      return { programs: { ingress: adoptProgram('ingress'), egress: adoptProgram('egress') }, maps };
    });
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
    for (const dir of [this.linksDir, this.root]) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty (someone else's files) or already gone: leave it
      }
    }
  }
}
