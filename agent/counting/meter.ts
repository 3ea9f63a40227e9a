/**
 * The kernel side of counting: podmeter's two programs, its storage map (a
 * counter slot per peer class), the peer trie and the slot names, loaded once
 * and pinned (or adopted from pins left by an earlier agent), and the pinned
 * links that attach the programs to each counted cgroup.
 *
 * Upgrade from an agent without peer classes: its pins (programs, the 16-byte
 * storage map `map_stats`, links) are found at start. New programs and maps
 * are loaded and pinned beside them; each old pair of links is replaced when
 * its cgroup is found (upgrade()): the new links are attached first, then the
 * old ones detached and their final counts read, which the caller keeps as
 * the unit's base (class `unclassified`). Packets in the microseconds between
 * the two steps are counted by both. map_stats stays pinned until no old link
 * is left, so an agent stopped midway upgrades the rest on its next start.
 *
 * Pins and fds: the pins keep everything attached and counting while no
 * agent runs; the running agent also holds an fd of every object and link, so
 * that pins removed under it (rm -r of --bpffs, the bpffs unmounted) detach
 * nothing. checkPins() puts missing pins back from those fds.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { endianness, release } from 'node:os';
import type { Logger } from '../../common/log.ts';
import {
  attachCgroup,
  BpfMap,
  BpfObject,
  bpfObjectPath,
  closingOnThrow,
  CollectionSpec,
  DIRECTIONS,
  Link,
  Program,
  raiseMemlockLimit,
  reserveFds,
  StorageMap,
  type Counters,
  type Direction,
} from '../kernel/bpf.ts';
import { BpfError } from '../kernel/errors.ts';
import {
  assignSlots,
  networkTotal,
  NAME_BYTES,
  SLOTS,
  SlotNames,
  MAX_NAMED_CLASSES,
  type DirectionPeerCounts,
} from '../peers/classes.ts';
import { PinDir } from './pins.ts';
import { kernelChargesMemlock } from '../maps/estimate.ts';

export type DirectionCounters = Record<Direction, Counters>;

export const ZERO: Readonly<Counters> = Object.freeze({ bytes: 0n, packets: 0n });

/** What one read of a unit gives: totals (every class but loopback) and counts by class. */
export interface UnitCounts {
  counters: DirectionCounters;
  peers: DirectionPeerCounts;
}

/**
 * The fd table is sized at start for the link fds held (two per counted
 * cgroup) of this many more cgroups than have pins then (see Meter's
 * constructor): 2,048 (a 32 KiB table) covers any node's pods.
 */
const CGROUPS_AHEAD = 2048;

/** checkPins lists the pins at least this often, even when their directories look unchanged. */
const FULL_PIN_CHECK_EVERY = 30;

export class Meter {
  readonly pins: PinDir;
  readonly map: StorageMap;
  /** The peer trie (agent/peers/table.ts keeps it current). */
  readonly peers: BpfMap;
  /** The trie's generation: bumped after each change, so the programs' cached classes go stale. */
  readonly generation: BpfMap;
  readonly programs: Readonly<Record<Direction, Program>>;
  readonly adopted: boolean;
  /** Which class each slot counts. */
  readonly slots: SlotNames;
  readonly #slotNames: BpfMap;
  /** Cgroup ids with link pins when the agent started (to adopt); a new cgroup cannot have pins. */
  readonly #pinnedAtOpen: Set<bigint>;
  readonly #attachedHere = new Set<bigint>();
  /** The fds of each counted cgroup's links (ingress, egress): they keep the links attached if the pins go. */
  readonly #held = new Map<bigint, Link[]>();
  readonly #log: Logger;
  /** Pins were found missing and could not all be put back yet (logged once until they are). */
  #pinsMissing = false;
  /** #pinsStamp() after the last check that found every pin in place. */
  #checkedStamp: string | undefined;
  #checksSkipped = 0;
  /** Each counted cgroup's last read, so an idle one is not converted again (read()). */
  readonly #lastRead = new Map<bigint, { sums: BigUint64Array; counts: UnitCounts }>();
  /** The old agent's storage map while some cgroups still have its links (see the header). */
  #legacy: StorageMap | undefined;
  readonly #legacyIds = new Set<bigint>();

  private constructor(
    pins: PinDir,
    maps: { counters: StorageMap; peers: BpfMap; generation: BpfMap; slotNames: BpfMap },
    programs: Record<Direction, Program>,
    adopted: boolean,
    configuredClasses: readonly string[],
    log: Logger,
  ) {
    this.pins = pins;
    this.map = maps.counters;
    this.peers = maps.peers;
    this.generation = maps.generation;
    this.#slotNames = maps.slotNames;
    this.programs = programs;
    this.adopted = adopted;
    this.#log = log;
    this.#pinnedAtOpen = new Set(pins.listLinks().map((p) => p.cgroupId));
    // Every counted cgroup's two link fds are held: grown one doubling at a
    // time (at 256, 512, 1024 fds, ...), the fd table would stall a burst of
    // attaches at each step for an RCU grace period (see reserveFds), which
    // doubled a 500-pod burst's attach latency. One step, now, before any
    // cgroup waits. (Best effort: without it attaching works as before.)
    reserveFds(2 * (this.#pinnedAtOpen.size + CGROUPS_AHEAD));
    this.slots = this.#assignSlots(configuredClasses, log);
    this.#openLegacy(log);
  }

  /**
   * Adopts the programs and maps pinned by an earlier agent, so existing links
   * keep counting into the same storage; loads and pins them otherwise.
   * `configuredClasses`: the named peer classes, each given a slot for good.
   */
  static open(bpffs: string, log: Logger, configuredClasses: readonly string[] = []): Meter {
    // Before 5.11 every attach is charged to RLIMIT_MEMLOCK (its cgroup
    // storage, in whole pages): an agent that adopts pins loads nothing, so
    // libbpf never raises it, and attaching stopped at ENOMEM after ~70 pods
    // (test/faults/agent-oom.test.ts on 5.10). Raised here on every start.
    const memlock = raiseMemlockLimit();
    const kernel = release();
    if (memlock !== undefined && kernelChargesMemlock(kernel)) {
      log.warn(
        { memlockBytes: memlock, kernel },
        'RLIMIT_MEMLOCK cannot be raised to unlimited (needs CAP_SYS_RESOURCE, or a higher limit from the container runtime): this kernel charges every attached cgroup to it, so attaching may fail with ENOMEM once it is used up',
      );
    }
    const pins = new PinDir(bpffs);
    pins.ensure();
    const pinned = [
      pins.program('ingress'),
      pins.program('egress'),
      pins.map,
      pins.peers,
      pins.generation,
      pins.slotNames,
    ];
    if (pinned.every((p) => existsSync(p))) {
      // Checked against the object this agent would load: a pin of another shape is refused.
      const { programs, maps } = pins.adopt(CollectionSpec.load(bpfObjectPath('podmeter')));
      log.info({ bpffs }, 'adopted pinned programs and counter map');
      try {
        return new Meter(pins, maps, programs, true, configuredClasses, log);
      } catch (err) {
        for (const fdObject of [...Object.values(programs), ...Object.values(maps)]) fdObject.close();
        throw err;
      }
    }
    // A partial set is useless: start clean. (prog_* may be an older agent's
    // programs: its links keep them loaded, and map_stats stays for upgrade().)
    for (const p of pinned) PinDir.unpin(p);
    let object: BpfObject;
    try {
      object = BpfObject.load(bpfObjectPath('podmeter'));
    } catch (err) {
      throw memlockExplained(err, memlock, kernel);
    }
    try {
      // Maps taken out of the object are closed here if a later step fails; the object closes the rest.
      return closingOnThrow((take) => {
        const programs = { ingress: object.program('podmeter_ingress'), egress: object.program('podmeter_egress') };
        const maps = {
          counters: take(object.takeStorageMap('podmeter_stats')),
          peers: take(object.takeMap('podmeter_peers')),
          generation: take(object.takeMap('podmeter_gen')),
          slotNames: take(object.takeMap('podmeter_names')),
        };
        programs.ingress.pin(pins.program('ingress'));
        programs.egress.pin(pins.program('egress'));
        maps.counters.pin(pins.map);
        maps.peers.pin(pins.peers);
        maps.generation.pin(pins.generation);
        maps.slotNames.pin(pins.slotNames);
        log.info({ bpffs }, 'loaded and pinned programs and counter map');
        return new Meter(pins, maps, programs, false, configuredClasses, log);
      });
    } catch (err) {
      object.close();
      for (const p of pinned) PinDir.unpin(p);
      throw err;
    }
  }

  /**
   * Attaches both directions to a cgroup and pins the links; the pins, not
   * this process, keep them attached. All or nothing: if the second attach or
   * a pin fails, what was made is undone.
   */
  attach(cgroupPath: string, cgroupId: bigint): void {
    const made: Link[] = [];
    try {
      for (const direction of DIRECTIONS) {
        const link = attachCgroup({ cgroupPath, program: this.programs[direction] });
        made.push(link);
        link.pin(this.pins.link(cgroupId, direction));
      }
      this.#attachedHere.add(cgroupId);
      this.#hold(cgroupId, made);
    } catch (err) {
      abandon(made);
      for (const direction of DIRECTIONS) PinDir.unpin(this.pins.link(cgroupId, direction));
      throw err;
    }
  }

  /**
   * 'attached': both links pinned and attached to this cgroup (their fds are
   * then held, see the header); 'legacy': the same, but an older agent's
   * programs (see upgrade()); 'none': no pins; 'stale': anything else (half a
   * pair, or links of a cgroup gone).
   */
  linkState(cgroupId: bigint): 'attached' | 'legacy' | 'none' | 'stale' {
    if (!this.#pinnedAtOpen.has(cgroupId)) return this.#attachedHere.has(cgroupId) ? 'attached' : 'none';
    const paths = DIRECTIONS.map((d) => this.pins.link(cgroupId, d));
    const present = paths.filter((p) => existsSync(p)).length;
    if (present === 0) return 'none';
    if (present === 1) return 'stale';
    const links: Link[] = [];
    const live = paths.every((path) => {
      try {
        const link = Link.fromPin(path);
        links.push(link);
        return link.info().cgroupId === cgroupId;
      } catch {
        return false;
      }
    });
    const state = !live ? 'stale' : this.#legacyIds.has(cgroupId) ? 'legacy' : 'attached';
    if (state === 'attached') this.#hold(cgroupId, links);
    else for (const link of links) link.close();
    return state;
  }

  /**
   * Replaces an older agent's links on a live cgroup with links to this
   * agent's programs; returns the old links' final counts (the unit's base).
   */
  upgrade(cgroupPath: string, cgroupId: bigint): DirectionCounters {
    const old: Link[] = [];
    const made: Link[] = [];
    try {
      for (const direction of DIRECTIONS) old.push(Link.fromPin(this.pins.link(cgroupId, direction)));
      for (const direction of DIRECTIONS) made.push(attachCgroup({ cgroupPath, program: this.programs[direction] }));
      for (const link of old) link.detach();
      const base = this.#readLegacy(cgroupId);
      DIRECTIONS.forEach((direction, i) => {
        const path = this.pins.link(cgroupId, direction);
        PinDir.unpin(path);
        made[i]!.pin(path);
      });
      this.#attachedHere.add(cgroupId);
      this.#pinnedAtOpen.delete(cgroupId);
      this.#legacyDone(cgroupId);
      this.#hold(cgroupId, made);
      return base;
    } catch (err) {
      abandon(made);
      throw err;
    } finally {
      for (const link of old) link.close();
    }
  }

  /** Detaches (if still attached) and unpins a cgroup's links. */
  release(cgroupId: bigint): void {
    this.#attachedHere.delete(cgroupId);
    this.#lastRead.delete(cgroupId);
    this.#pinnedAtOpen.delete(cgroupId);
    const held = this.#held.get(cgroupId);
    this.#held.delete(cgroupId);
    for (const [i, direction] of DIRECTIONS.entries()) {
      const path = this.pins.link(cgroupId, direction);
      let link: Link | undefined = held?.[i];
      try {
        link ??= Link.fromPin(path);
        if (link.info().cgroupId !== 0n) link.detach();
      } catch (err) {
        // pin already gone, or the link auto-detached with its cgroup
        if (!(err instanceof BpfError)) throw err;
      } finally {
        link?.close();
      }
      PinDir.unpin(path);
    }
    this.#legacyDone(cgroupId);
  }

  /** Current counts of a cgroup; undefined once the kernel has released its storage. */
  read(cgroupId: bigint): UnitCounts | undefined {
    if (this.#legacyIds.has(cgroupId)) return this.#readLegacyUnit(cgroupId);
    return this.#countsOf(cgroupId, this.map.readUnit(cgroupId, this.#lastRead.get(cgroupId)?.sums));
  }

  /** read() of many cgroups, in their order: one native call for all (StorageMap.readUnits). */
  readMany(cgroupIds: readonly bigint[]): (UnitCounts | undefined)[] {
    const counts = new Array<UnitCounts | undefined>(cgroupIds.length);
    const current: bigint[] = [];
    const at: number[] = [];
    cgroupIds.forEach((id, i) => {
      if (this.#legacyIds.has(id)) {
        counts[i] = this.#readLegacyUnit(id);
      } else {
        current.push(id);
        at.push(i);
      }
    });
    const sums = this.map.readUnits(
      current,
      current.map((id) => this.#lastRead.get(id)?.sums),
    );
    sums.forEach((s, j) => (counts[at[j]!] = this.#countsOf(current[j]!, s)));
    return counts;
  }

  #readLegacyUnit(cgroupId: bigint): UnitCounts | undefined {
    const old =
      this.#legacy?.read(cgroupId, 'ingress') !== undefined || this.#legacy?.read(cgroupId, 'egress') !== undefined;
    if (!old) return undefined;
    const base = this.#readLegacy(cgroupId);
    return {
      counters: base,
      peers: { ingress: { unclassified: base.ingress }, egress: { unclassified: base.egress } },
    };
  }

  /** A cgroup's counts from its sums as readUnit gives them (the previous counts while they are unchanged). */
  #countsOf(cgroupId: bigint, sums: BigUint64Array | undefined): UnitCounts | undefined {
    if (sums === undefined) return undefined;
    const last = this.#lastRead.get(cgroupId);
    if (sums === last?.sums) return last.counts; // idle since the last read
    const half = sums.length / 2;
    const peers = {
      ingress: this.slots.countsOfSums(sums.subarray(0, half)),
      egress: this.slots.countsOfSums(sums.subarray(half)),
    };
    const counts = { counters: { ingress: networkTotal(peers.ingress), egress: networkTotal(peers.egress) }, peers };
    this.#lastRead.set(cgroupId, { sums, counts });
    return counts;
  }

  /**
   * Puts back pins removed under the running agent (from the fds it holds):
   * logged once when some are missing, once when all are back, or once that
   * they cannot be made (e.g. --bpffs is no longer on a bpffs), retried at
   * every call. Meanwhile the held fds keep every link counting; if the agent
   * stopped then, its links would detach.
   * Cheap when nothing changed: removing or adding a pin changes its
   * directory's modification time, so while both directories have the
   * identity and times of the last complete check, the pins are not listed
   * (except every FULL_PIN_CHECK_EVERY calls, whatever the times say).
   */
  checkPins(): void {
    const stamp = this.#pinsStamp();
    if (stamp !== undefined && stamp === this.#checkedStamp && ++this.#checksSkipped < FULL_PIN_CHECK_EVERY) return;
    if (this.#repin()) {
      this.#checkedStamp = this.#pinsStamp();
      this.#checksSkipped = 0;
    }
  }

  /** Device, inode and modification time of the pin directories, or undefined when one is missing. */
  #pinsStamp(): string | undefined {
    try {
      return [this.pins.root, this.pins.linksDir]
        .map((dir) => {
          const st = statSync(dir, { bigint: true });
          return `${st.dev}:${st.ino}:${st.mtimeNs}`;
        })
        .join(' ');
    } catch {
      return undefined;
    }
  }

  /** Pins what is missing; true when every pin is in place afterwards. */
  #repin(): boolean {
    const objects: [string, { pin(path: string): void }][] = [
      [this.pins.program('ingress'), this.programs.ingress],
      [this.pins.program('egress'), this.programs.egress],
      [this.pins.map, this.map],
      [this.pins.peers, this.peers],
      [this.pins.generation, this.generation],
      [this.pins.slotNames, this.#slotNames],
    ];
    let names: Set<string>;
    try {
      names = new Set(readdirSync(this.pins.linksDir));
    } catch {
      names = new Set();
    }
    for (const [cgroupId, links] of this.#held) {
      DIRECTIONS.forEach((direction, i) => {
        if (!names.has(`${cgroupId}_${direction}`)) objects.push([this.pins.link(cgroupId, direction), links[i]!]);
      });
    }
    const missing = objects.filter(([path]) => !existsSync(path));
    if (missing.length === 0) return true;
    const wasMissing = this.#pinsMissing;
    if (!wasMissing) {
      this.#pinsMissing = true;
      this.#log.warn(
        { bpffs: this.pins.root, missing: missing.length },
        'pins removed under the running agent; its fds keep every link counting: pinning them again',
      );
    }
    try {
      this.pins.ensure();
      for (const [path, object] of missing) object.pin(path);
    } catch (err) {
      if (!wasMissing) {
        this.#log.error(
          { err, bpffs: this.pins.root },
          'cannot pin again (retrying at every interval): counting goes on while this agent runs, but if it stops before the pins are back its links detach and nothing is counted until the next start',
        );
      }
      return false;
    }
    this.#pinsMissing = false;
    this.#log.info({ bpffs: this.pins.root, pinned: missing.length }, 'pins made again');
    return true;
  }

  /** The fds of the links held (see the header): the map inventory's /proc scan need not look at them. */
  heldLinkFds(): Set<number> {
    const fds = new Set<number>();
    for (const links of this.#held.values()) for (const link of links) if (!link.closed) fds.add(link.fd);
    return fds;
  }

  close(): void {
    for (const links of this.#held.values()) for (const link of links) link.close();
    this.#held.clear();
    this.map.close();
    this.peers.close();
    this.generation.close();
    this.#slotNames.close();
    this.#legacy?.close();
    this.programs.ingress.close();
    this.programs.egress.close();
  }

  /** Keeps a cgroup's link fds (closing any it held before). */
  #hold(cgroupId: bigint, links: Link[]): void {
    for (const link of this.#held.get(cgroupId) ?? []) link.close();
    this.#held.set(cgroupId, links);
  }

  /** Keeps the recorded slot of every class and records new ones (see assignSlots). */
  #assignSlots(configured: readonly string[], log: Logger): SlotNames {
    const decoder = new TextDecoder();
    const recorded: (string | undefined)[] = [];
    for (let i = 0; i < MAX_NAMED_CLASSES; i++) {
      const raw = this.#slotNames.lookup(slotKey(SLOTS - MAX_NAMED_CLASSES + i), NAME_BYTES);
      const end = raw?.indexOf(0) ?? -1;
      const name = raw === undefined ? '' : decoder.decode(raw.subarray(0, end < 0 ? raw.length : end));
      recorded.push(name === '' ? undefined : name);
    }
    const named = assignSlots(recorded, configured);
    const encoder = new TextEncoder();
    named.forEach((name, i) => {
      if (name === undefined || name === recorded[i]) return;
      const value = new Uint8Array(NAME_BYTES);
      value.set(encoder.encode(name).subarray(0, NAME_BYTES - 1));
      this.#slotNames.update(slotKey(SLOTS - MAX_NAMED_CLASSES + i), value);
      log.info({ peerClass: name, slot: SLOTS - MAX_NAMED_CLASSES + i }, 'peer class given a counter slot');
    });
    return new SlotNames(named);
  }

  /** Finds an older agent's storage map and which pinned links still count into it. */
  #openLegacy(log: Logger): void {
    if (!existsSync(this.pins.legacyMap)) return;
    const legacy = StorageMap.adopt(
      this.pins.legacyMap,
      CollectionSpec.load(bpfObjectPath('legacy')).map('podmeter_stats'),
    );
    const programIds = new Set([this.programs.ingress.info().id, this.programs.egress.info().id]);
    for (const pin of this.pins.listLinks()) {
      let link: Link | undefined;
      try {
        link = Link.fromPin(pin.path);
        if (!programIds.has(link.info().progId)) this.#legacyIds.add(pin.cgroupId);
      } catch {
        // unreadable pin: linkState() calls it stale
      } finally {
        link?.close();
      }
    }
    this.#legacy = legacy;
    log.info(
      { cgroups: this.#legacyIds.size },
      'found the pins of an agent without peer classes: its links are replaced as their cgroups are found',
    );
    this.#legacyDone(undefined);
  }

  #readLegacy(cgroupId: bigint): DirectionCounters {
    const one = (d: Direction): Counters => this.#legacy?.read(cgroupId, d)?.[0] ?? ZERO;
    return { ingress: one('ingress'), egress: one('egress') };
  }

  /** Forgets an upgraded or released legacy cgroup; with none left, the old map goes. */
  #legacyDone(cgroupId: bigint | undefined): void {
    if (cgroupId !== undefined) this.#legacyIds.delete(cgroupId);
    if (this.#legacy === undefined || this.#legacyIds.size > 0) return;
    this.#legacy.close();
    this.#legacy = undefined;
    PinDir.unpin(this.pins.legacyMap);
  }
}

function slotKey(slot: number): Uint8Array {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, slot, endianness() === 'LE');
  return key;
}

/** Undoes links made by a step that failed half way: detached (unless their cgroup went away meanwhile) and closed. */
function abandon(links: readonly Link[]): void {
  for (const link of links) {
    try {
      link.detach();
    } catch {
      // the cgroup went away meanwhile: nothing left to detach
    }
    link.close();
  }
}

/**
 * Before 5.11 a memlock limit too small for the maps fails the load with
 * EPERM, which reads like a missing capability: the error says so, on its
 * first line (libbpf's log follows it).
 */
function memlockExplained(err: unknown, memlock: number | undefined, kernel: string): unknown {
  if (!(err instanceof BpfError) || err.code !== 'EPERM' || memlock === undefined || !kernelChargesMemlock(kernel))
    return err;
  const hint = `RLIMIT_MEMLOCK is ${memlock} bytes and kernel ${kernel} charges BPF maps to it: give the agent CAP_SYS_RESOURCE (the chart adds it) or a higher memlock limit`;
  const [first, ...log] = err.message.split('\n');
  return new BpfError(
    {
      message: [`${first}; ${hint}`, ...log].join('\n'),
      code: err.code,
      errno: err.errno,
      syscall: err.syscall,
      path: err.path,
    },
    { cause: err },
  );
}
