/**
 * The pinned links that attach podmeter's two programs to each counted
 * cgroup. The pins keep them attached while no agent runs; the running agent
 * also holds an fd of every link (held()), so that pins removed under it
 * (rm -r of --bpffs, the bpffs unmounted) detach nothing, and PinRepair can
 * pin them again. A held link can still be detached by another tool
 * (BPF_LINK_DETACH, `bpftool link detach`): detached() finds those cgroups,
 * reattach() gives them new links in place of the old.
 */
import { existsSync } from 'node:fs';
import { DIRECTIONS, Link, reserveFds, type Cgroup, type Direction, type Program } from '../kernel/bpf.ts';
import { BpfError } from '../kernel/errors.ts';
import { PinDir } from './pins.ts';

/**
 * The fd table is sized at start for the link fds held (two per counted
 * cgroup) of this many more cgroups than have pins then: 2,048 (a 32 KiB
 * table) covers any node's pods.
 */
const CGROUPS_AHEAD = 2048;

export class Links {
  readonly #pins: PinDir;
  readonly #programs: Readonly<Record<Direction, Program>>;
  /** Cgroup ids with link pins when the agent started (to adopt); a new cgroup cannot have pins. */
  readonly #pinnedAtOpen: Set<bigint>;
  readonly #attachedHere = new Set<bigint>();
  /** The fds of each counted cgroup's links (in DIRECTIONS order): they keep the links attached if the pins go. */
  readonly #held = new Map<bigint, Link[]>();

  constructor(pins: PinDir, programs: Readonly<Record<Direction, Program>>) {
    this.#pins = pins;
    this.#programs = programs;
    this.#pinnedAtOpen = new Set(pins.listLinks().map((p) => p.cgroupId));
    // Every counted cgroup's two link fds are held: grown one doubling at a
    // time (at 256, 512, 1024 fds, ...), the fd table would stall a burst of
    // attaches at each step for an RCU grace period (see reserveFds), which
    // doubled a 500-pod burst's attach latency. One step, now, before any
    // cgroup waits. (Best effort: without it attaching works as before.)
    reserveFds(2 * (this.#pinnedAtOpen.size + CGROUPS_AHEAD));
  }

  /**
   * Attaches both directions to a cgroup and pins the links; the pins, not
   * this process, keep them attached. All or nothing: if the second attach or
   * a pin fails, what was made is undone.
   */
  attach(cgroup: Cgroup): void {
    const cgroupId = cgroup.id;
    const made: Link[] = [];
    try {
      for (const direction of DIRECTIONS) {
        const link = cgroup.attach(this.#programs[direction]);
        made.push(link);
        link.pin(this.#pins.link(cgroupId, direction));
      }
      this.#attachedHere.add(cgroupId);
      this.#hold(cgroupId, made);
    } catch (err) {
      abandon(made);
      for (const direction of DIRECTIONS) PinDir.unpin(this.#pins.link(cgroupId, direction));
      throw err;
    }
  }

  /**
   * 'attached': both links pinned and attached to this cgroup (their fds are
   * then held); 'none': no pins; 'stale': anything else (half a pair, or
   * links of a cgroup gone).
   */
  state(cgroupId: bigint): 'attached' | 'none' | 'stale' {
    if (!this.#pinnedAtOpen.has(cgroupId)) return this.#attachedHere.has(cgroupId) ? 'attached' : 'none';
    const paths = DIRECTIONS.map((d) => this.#pins.link(cgroupId, d));
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
    if (live) this.#hold(cgroupId, links);
    else for (const link of links) link.close();
    return live ? 'attached' : 'stale';
  }

  /** Detaches (if still attached) and unpins a cgroup's links. */
  release(cgroupId: bigint): void {
    this.#attachedHere.delete(cgroupId);
    this.#pinnedAtOpen.delete(cgroupId);
    const held = this.#held.get(cgroupId);
    this.#held.delete(cgroupId);
    for (const [i, direction] of DIRECTIONS.entries()) {
      const path = this.#pins.link(cgroupId, direction);
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
  }

  /**
   * Cgroups one of whose held links is no longer attached to them: detached
   * by another tool, or the cgroup is gone (its links then report cgroup id
   * 0 too; the caller tells the two apart). Every held link asked in one
   * native call (Link.cgroupIds; bench/link-check.bench.ts). Kernels without
   * links (< 5.7) hold LegacyAttachments, which have no fd to ask: never
   * reported.
   */
  detached(): bigint[] {
    const owners: bigint[] = [];
    const links: Link[] = [];
    for (const [cgroupId, held] of this.#held) {
      for (const link of held) {
        owners.push(cgroupId);
        links.push(link);
      }
    }
    const ids: bigint[] = [];
    for (const [i, attachedTo] of Link.cgroupIds(links).entries()) {
      const owner = owners[i]!;
      if (attachedTo !== undefined && attachedTo !== owner && ids.at(-1) !== owner) ids.push(owner);
    }
    return ids;
  }

  /**
   * New links for the directions of a cgroup whose links were detached
   * under the agent (detached()); a link still attached is kept (a second
   * one would count its packets twice until the old one's release). All or
   * nothing: if an attach fails, those made are undone, the old fds stay
   * held and detached() reports the cgroup again. Each new link is pinned in
   * place of the old pin (removed first: pinned beside it, a link outliving
   * this agent would count twice) and held instead of the old fd, which is
   * closed. A pin that cannot be made is left to PinRepair, which pins held
   * links whose pins are missing.
   */
  reattach(cgroup: Cgroup): void {
    const held = this.#held.get(cgroup.id) ?? [];
    const made: [number, Link][] = [];
    try {
      for (const [i, direction] of DIRECTIONS.entries()) {
        const old = held[i];
        if (old === undefined || detachedFrom(old, cgroup.id)) made.push([i, cgroup.attach(this.#programs[direction])]);
      }
    } catch (err) {
      abandon(made.map(([, link]) => link));
      throw err;
    }
    const links = [...held];
    for (const [i, link] of made) {
      held[i]?.close();
      links[i] = link;
      const path = this.#pins.link(cgroup.id, DIRECTIONS[i]!);
      try {
        PinDir.unpin(path);
        link.pin(path);
      } catch {
        // the bpffs went too: PinRepair says so and pins it when it can
      }
    }
    this.#held.set(cgroup.id, links);
  }

  /** The held link fds by cgroup id, in DIRECTIONS order. */
  held(): ReadonlyMap<bigint, readonly Link[]> {
    return this.#held;
  }

  close(): void {
    for (const links of this.#held.values()) for (const link of links) link.close();
    this.#held.clear();
  }

  /** Keeps a cgroup's link fds (closing any it held before). */
  #hold(cgroupId: bigint, links: Link[]): void {
    for (const link of this.#held.get(cgroupId) ?? []) link.close();
    this.#held.set(cgroupId, links);
  }
}

/** The link reports another cgroup than `cgroupId` (0n once detached); false when the kernel cannot say, or for a LegacyAttachment. */
function detachedFrom(link: Link, cgroupId: bigint): boolean {
  const [attachedTo] = Link.cgroupIds([link]);
  return attachedTo !== undefined && attachedTo !== cgroupId;
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
