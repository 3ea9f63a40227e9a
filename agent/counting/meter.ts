/**
 * The kernel side of counting, wired together: podmeter's programs and maps
 * (load.ts: adopted from pins or loaded), the links to each counted cgroup
 * (links.ts), the slot each configured peer class counts in (slotNames.ts),
 * reads of a cgroup's counts (read.ts), and pins put back when removed under
 * the running agent (repair.ts); links detached under it are found here and
 * attached again through the tracker (relink.ts).
 */
import type { Logger } from '../../common/log.ts';
import type { Cgroup, Direction, Program } from '../kernel/bpf.ts';
import { FlowTables } from '../services/tables.ts';
import type { SlotNames } from '../peers/classes.ts';
import { Links } from './links.ts';
import { closeObjects, loadObjects } from './load.ts';
import { PinDir, type PodmeterMaps, type PodmeterObjects } from './pins.ts';
import { readCgroup, readCgroups, type KernelRead } from './read.ts';
import { PinRepair } from './repair.ts';
import { recordSlotNames } from './slotNames.ts';

export type { KernelRead } from './read.ts';

export class Meter {
  readonly pins: PinDir;
  readonly programs: Readonly<Record<Direction, Program>>;
  /** podmeter_stats, podmeter_peers (agent/peers/table.ts keeps it current), podmeter_gen, podmeter_names, and the Service flow maps (agent/services/tables.ts). */
  readonly maps: Readonly<PodmeterMaps>;
  /** The Service flow tables, and the counted cgroups they find a flow's unit in. */
  readonly flows: FlowTables;
  /** The programs and maps were adopted from an earlier agent's pins (else loaded now). */
  readonly adopted: boolean;
  /** Which class each slot counts. */
  readonly slots: SlotNames;
  readonly #links: Links;
  readonly #repair: PinRepair;

  private constructor(pins: PinDir, objects: PodmeterObjects, adopted: boolean, slots: SlotNames, log: Logger) {
    this.pins = pins;
    this.programs = objects.programs;
    this.maps = objects.maps;
    this.flows = new FlowTables(objects.maps);
    this.adopted = adopted;
    this.slots = slots;
    this.#links = new Links(pins, objects.programs);
    this.#repair = new PinRepair(pins, objects, this.#links, log);
  }

  /**
   * Adopts the programs and maps pinned by an earlier agent, so existing links
   * keep counting into the same storage (upgrading its programs in place when
   * they are not this version's); loads and pins them otherwise.
   * `configuredClasses`: the named peer classes, each given a slot for good.
   * `objectPath`: the BPF object (tests load other builds of it).
   */
  static open(bpffs: string, log: Logger, configuredClasses: readonly string[] = [], objectPath?: string): Meter {
    const pins = new PinDir(bpffs);
    const { objects, adopted } = loadObjects(pins, log, objectPath);
    try {
      return new Meter(pins, objects, adopted, recordSlotNames(objects.maps.names, configuredClasses, log), log);
    } catch (err) {
      closeObjects(objects);
      if (!adopted) for (const p of pins.objects()) PinDir.unpin(p);
      throw err;
    }
  }

  /** Attaches both programs to a cgroup and pins the links (all or nothing); its Service flows count for it from the first packet. */
  attach(cgroup: Cgroup): void {
    this.flows.addUnit(cgroup.id);
    this.#links.attach(cgroup);
  }

  /** 'attached' (pinned, attached to this cgroup; adopted now), 'none', or 'stale' (see Links.state). */
  linkState(cgroupId: bigint): 'attached' | 'none' | 'stale' {
    const state = this.#links.state(cgroupId);
    if (state === 'attached') this.flows.addUnit(cgroupId); // an earlier agent's: kept (a pinned map), or put back
    return state;
  }

  /** Counted cgroups whose links no longer report them: detached by another tool, or the cgroup is gone (Links.detached). */
  detachedLinks(): bigint[] {
    return this.#links.detached();
  }

  /** New links for the directions of a cgroup detached under the agent, pinned in place of the old (Links.reattach). */
  relink(cgroup: Cgroup): void {
    this.#links.reattach(cgroup);
  }

  /** Detaches (if still attached) and unpins a cgroup's links. */
  release(cgroupId: bigint): void {
    this.#links.release(cgroupId);
    this.flows.removeUnit(cgroupId);
  }

  /** Current counts of a cgroup (`last` itself while idle); undefined once the kernel has released its storage. */
  read(cgroupId: bigint, last?: KernelRead): KernelRead | undefined {
    return readCgroup(this.maps.stats, this.slots, cgroupId, last);
  }

  /** read() of many cgroups, `lasts[i]` for `cgroupIds[i]`: one native call for all. */
  readMany(cgroupIds: readonly bigint[], lasts: readonly (KernelRead | undefined)[]): (KernelRead | undefined)[] {
    return readCgroups(this.maps.stats, this.slots, cgroupIds, lasts);
  }

  /** The fds of the links held (links.ts): the map inventory's /proc scan need not look at them. */
  heldLinkFds(): Set<number> {
    const fds = new Set<number>();
    for (const links of this.#links.held().values()) for (const link of links) if (!link.closed) fds.add(link.fd);
    return fds;
  }

  /** Puts back pins removed under the running agent (repair.ts); cheap when nothing changed. */
  checkPins(): void {
    this.#repair.check();
  }

  close(): void {
    this.#links.close();
    closeObjects(this);
  }
}
