/**
 * The kernel side of counting: podmeter's two programs and its storage map,
 * loaded once and pinned (or adopted from pins left by an earlier agent), and
 * the pinned links that attach them to each counted cgroup.
 */
import { existsSync } from 'node:fs';
import type { Logger } from '../../common/log.ts';
import {
  attachCgroup,
  BpfObject,
  bpfObjectPath,
  DIRECTIONS,
  Link,
  Program,
  StorageMap,
  ATTACH_TYPE,
  type Counters,
  type Direction,
} from '../kernel/bpf.ts';
import { BpfError } from '../kernel/errors.ts';
import { PinDir } from './pins.ts';

export type DirectionCounters = Record<Direction, Counters>;

export const ZERO: Readonly<Counters> = Object.freeze({ bytes: 0n, packets: 0n });

export class Meter {
  readonly pins: PinDir;
  readonly map: StorageMap;
  readonly programs: Readonly<Record<Direction, Program>>;
  readonly adopted: boolean;
  /** Cgroup ids with link pins when the agent started (to adopt); a new cgroup cannot have pins. */
  readonly #pinnedAtOpen: Set<bigint>;
  readonly #attachedHere = new Set<bigint>();

  private constructor(pins: PinDir, map: StorageMap, programs: Record<Direction, Program>, adopted: boolean) {
    this.pins = pins;
    this.map = map;
    this.programs = programs;
    this.adopted = adopted;
    this.#pinnedAtOpen = new Set(pins.listLinks().map((p) => p.cgroupId));
  }

  /**
   * Adopts the programs and map pinned by an earlier agent, so existing links
   * keep counting into the same storage; loads and pins them otherwise.
   */
  static open(bpffs: string, log: Logger): Meter {
    const pins = new PinDir(bpffs);
    pins.ensure();
    const pinned = [pins.program('ingress'), pins.program('egress'), pins.map];
    if (pinned.every((p) => existsSync(p))) {
      const programs = {
        ingress: Program.fromPin(pins.program('ingress'), 'podmeter_ingress', ATTACH_TYPE.ingress),
        egress: Program.fromPin(pins.program('egress'), 'podmeter_egress', ATTACH_TYPE.egress),
      };
      log.info({ bpffs }, 'adopted pinned programs and counter map');
      return new Meter(pins, StorageMap.fromPin(pins.map), programs, true);
    }
    for (const p of pinned) PinDir.unpin(p); // a partial set is useless: start clean
    const object = BpfObject.load(bpfObjectPath('podmeter'));
    try {
      const programs = { ingress: object.program('podmeter_ingress'), egress: object.program('podmeter_egress') };
      const map = object.takeStorageMap('podmeter_stats');
      programs.ingress.pin(pins.program('ingress'));
      programs.egress.pin(pins.program('egress'));
      map.pin(pins.map);
      log.info({ bpffs }, 'loaded and pinned programs and counter map');
      return new Meter(pins, map, programs, false);
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
    } catch (err) {
      for (const link of made) {
        try {
          link.detach();
        } catch {
          // the cgroup went away meanwhile: nothing left to detach
        }
      }
      for (const direction of DIRECTIONS) PinDir.unpin(this.pins.link(cgroupId, direction));
      throw err;
    } finally {
      for (const link of made) link.close();
    }
  }

  /**
   * 'attached': both links pinned and attached to this cgroup; 'none': no
   * pins; 'stale': anything else (half a pair, or links of a cgroup gone).
   */
  linkState(cgroupId: bigint): 'attached' | 'none' | 'stale' {
    if (!this.#pinnedAtOpen.has(cgroupId)) return this.#attachedHere.has(cgroupId) ? 'attached' : 'none';
    const paths = DIRECTIONS.map((d) => this.pins.link(cgroupId, d));
    const present = paths.filter((p) => existsSync(p)).length;
    if (present === 0) return 'none';
    if (present === 1) return 'stale';
    const live = paths.every((path) => {
      let link: Link | undefined;
      try {
        link = Link.fromPin(path);
        return link.info().cgroupId === cgroupId;
      } catch {
        return false;
      } finally {
        link?.close();
      }
    });
    return live ? 'attached' : 'stale';
  }

  /** Detaches (if still attached) and unpins a cgroup's links. */
  release(cgroupId: bigint): void {
    this.#attachedHere.delete(cgroupId);
    this.#pinnedAtOpen.delete(cgroupId);
    for (const direction of DIRECTIONS) {
      const path = this.pins.link(cgroupId, direction);
      let link: Link | undefined;
      try {
        link = Link.fromPin(path);
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

  /** Current counters of a cgroup; undefined once the kernel has released its storage. */
  read(cgroupId: bigint): DirectionCounters | undefined {
    const ingress = this.map.read(cgroupId, 'ingress');
    const egress = this.map.read(cgroupId, 'egress');
    if (ingress === undefined && egress === undefined) return undefined;
    return { ingress: ingress ?? ZERO, egress: egress ?? ZERO };
  }

  close(): void {
    this.map.close();
    this.programs.ingress.close();
    this.programs.egress.close();
  }
}
