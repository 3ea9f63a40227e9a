/**
 * Layout of podmeter's bpffs directory. Pins keep programs, the storage map
 * and every cgroup link alive when the agent exits, so a restarted agent
 * adopts them and counters continue where they were:
 *
 *   <bpffs>/prog_ingress, prog_egress   the two cgroup_skb programs
 *   <bpffs>/map_counters                the per-CPU cgroup storage map (a slot per peer class)
 *   <bpffs>/map_peers                   the peer trie (prefix -> class slot)
 *   <bpffs>/map_generation              the trie's generation (invalidates the programs' cached classes)
 *   <bpffs>/map_slot_names              which configured class holds each named slot
 *   <bpffs>/links/<cgroup id>_<direction>
 *
 * Agents before peer classes pinned their 16-byte storage map as map_stats;
 * while it exists, links still using it are upgraded (agent/counting/meter.ts).
 *
 * Anyone who can write the bpffs mount can put anything at these paths: what
 * is adopted is first checked against the BPF object podmeter would load
 * (adopt()), and a pin of another shape is refused, never read or written.
 */
import { readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { CollectionSpec, Direction } from '../kernel/bpf.ts';
import { assertBpffsDir, BpfMap, closingOnThrow, Program, StorageMap } from '../kernel/bpf.ts';
import { ensureDir } from '../files.ts';

/** The programs and maps of podmeter.bpf.c, as pinned in a PinDir. */
export interface PinnedObjects {
  programs: Record<Direction, Program>;
  maps: { counters: StorageMap; peers: BpfMap; generation: BpfMap; slotNames: BpfMap };
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
    return join(this.root, `prog_${direction}`);
  }

  get map(): string {
    return join(this.root, 'map_counters');
  }

  get peers(): string {
    return join(this.root, 'map_peers');
  }

  get generation(): string {
    return join(this.root, 'map_generation');
  }

  get slotNames(): string {
    return join(this.root, 'map_slot_names');
  }

  /** The storage map of agents before peer classes (one 16-byte slot). */
  get legacyMap(): string {
    return join(this.root, 'map_stats');
  }

  /**
   * Opens the pinned programs and maps, each checked against `spec` (the
   * object podmeter would load: map type, key and value size, max entries;
   * program type and name, and that both programs use the pinned counters,
   * peer trie and generation maps). A pin of another shape is a BpfError
   * (ErrorCodes.pinShape) naming it and both shapes; nothing stays open.
   */
  adopt(spec: CollectionSpec): PinnedObjects {
    return closingOnThrow((open) => {
      const maps = {
        counters: open(StorageMap.adopt(this.map, spec.map('podmeter_stats'))),
        peers: open(BpfMap.adopt(this.peers, spec.map('podmeter_peers'))),
        generation: open(BpfMap.adopt(this.generation, spec.map('podmeter_gen'))),
        slotNames: open(BpfMap.adopt(this.slotNames, spec.map('podmeter_names'))),
      };
      const used = [
        { map: maps.counters, what: 'map_counters' },
        { map: maps.peers, what: 'map_peers' },
        { map: maps.generation, what: 'map_generation' },
      ];
      const programs = {
        ingress: open(Program.adopt(this.program('ingress'), spec.program('podmeter_ingress'), used)),
        egress: open(Program.adopt(this.program('egress'), spec.program('podmeter_egress'), used)),
      };
      return { programs, maps };
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
    for (const path of [
      this.program('ingress'),
      this.program('egress'),
      this.map,
      this.peers,
      this.generation,
      this.slotNames,
      this.legacyMap,
    ])
      PinDir.unpin(path);
    for (const dir of [this.linksDir, this.root]) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty (someone else's files) or already gone: leave it
      }
    }
  }
}
