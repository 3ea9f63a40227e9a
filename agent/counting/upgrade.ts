/**
 * In-place upgrade of the programs an earlier agent pinned: when they are not
 * the ones this agent loads (another version of podmeter.bpf.c), every pinned
 * cgroup link is moved onto the new program with BPF_LINK_UPDATE (5.7+), and
 * then the program pins are replaced (load.ts drives it). The new programs use
 * the pinned maps (the object was loaded reusing them), and a link keeps its
 * per-CPU cgroup storage element across the update (the kernel allocates
 * none then: the element, keyed by cgroup id and attach type, is the one of
 * the pinned storage map both programs use), so the new program counts on
 * into the same counters: nothing is lost, nothing counted twice.
 *
 * A link is moved only from a program that is podmeter's for its direction
 * and counts into the pinned storage (the pinned program, or one an earlier
 * upgrade stopped part-way moved it to); BPF_F_REPLACE with that program
 * makes a change someone else made meanwhile fail (EPERM) instead of being
 * undone. A link whose cgroup is gone needs nothing (the tracker releases it
 * after the start). Any other failure leaves that link on its program, still
 * counting, and the program pins as they were, so the next start finishes
 * the job.
 */
import type { Logger } from '../../common/log.ts';
import {
  directionOf,
  DIRECTIONS,
  Link,
  Program,
  programMismatch,
  type CollectionSpec,
  type Direction,
  type ProgInfo,
} from '../kernel/bpf.ts';
import { BpfError, errorReason } from '../kernel/errors.ts';
import { PODMETER_PROGRAMS } from '../kernel/contract.generated.ts';
import type { PinDir } from './pins.ts';

/** A map the programs must use, by kernel id, and its pin (named in messages). */
export interface UsedMap {
  id: number;
  what: string;
}

export interface LinkMoves {
  /** Links moved onto the new program. */
  moved: number;
  /** Links already on it (moved by an earlier start that stopped part-way). */
  already: number;
  /** Links whose cgroup is gone: nothing runs through them. */
  gone: number;
  /** Links left on their program, and why. */
  failed: { link: string; reason: string }[];
}

/** Same code (the kernel's tag) and the same maps: the pinned program is the one this agent would load. */
export function sameProgram(pinned: ProgInfo, loaded: ProgInfo): boolean {
  const ids = (info: ProgInfo) => [...info.mapIds].sort((a, b) => a - b).join(',');
  return pinned.tag === loaded.tag && ids(pinned) === ids(loaded);
}

/**
 * Moves every pinned link of `directions` not yet on `to[direction]` onto it
 * (see the file comment). `from`: the programs pinned now, by direction;
 * `storage`: the pinned cgroup storage maps, which a program a link is moved
 * from must use.
 */
export function moveLinks(
  pins: PinDir,
  spec: CollectionSpec,
  directions: readonly Direction[],
  to: Readonly<Record<Direction, Program>>,
  from: Readonly<Partial<Record<Direction, Program>>>,
  storage: readonly UsedMap[],
): LinkMoves {
  const moves: LinkMoves = { moved: 0, already: 0, gone: 0, failed: [] };
  const targetIds = Object.fromEntries(DIRECTIONS.map((d) => [d, to[d].info().id])) as Record<Direction, number>;
  // By program id: the program to move links from, or why links on it stay.
  const sources = new Map<number, Program | string>();
  for (const d of DIRECTIONS) {
    const program = from[d];
    if (program !== undefined) sources.set(program.info().id, program);
  }
  const opened: Program[] = [];
  const source = (id: number, direction: Direction): Program | string => {
    let found = sources.get(id);
    if (found === undefined) {
      const { name } = PODMETER_PROGRAMS[direction];
      const programSpec = spec.program(name);
      try {
        const program = Program.fromId(id, name, programSpec.attachType);
        opened.push(program);
        const mismatch = programMismatch(program.info(), programSpec, storage);
        found = mismatch === undefined ? program : `runs program ${id}, not podmeter's: ${mismatch}`;
      } catch (err) {
        found = `runs program ${id}, which cannot be opened (${errorReason(err)})`;
      }
      sources.set(id, found);
    }
    return found;
  };
  try {
    for (const pin of pins.listLinks()) {
      if (!directions.includes(pin.direction)) continue;
      let link: Link | undefined;
      try {
        link = Link.fromPin(pin.path);
        const info = link.info();
        if (info.cgroupId === 0n) {
          moves.gone++;
          continue;
        }
        const direction = directionOf(info.attachType ?? -1);
        if (direction !== pin.direction) {
          moves.failed.push({ link: pin.path, reason: `attach type ${info.attachType} is not ${pin.direction}` });
          continue;
        }
        if (info.progId === targetIds[direction]) {
          moves.already++;
          continue;
        }
        const old = source(info.progId, direction);
        if (typeof old === 'string') {
          moves.failed.push({ link: pin.path, reason: old });
          continue;
        }
        link.update(to[direction], old);
        moves.moved++;
      } catch (err) {
        // ENOENT: the pin went meanwhile (released); ENOLINK: the cgroup went after the check above.
        if (err instanceof BpfError && (err.code === 'ENOENT' || err.code === 'ENOLINK')) moves.gone++;
        else moves.failed.push({ link: pin.path, reason: err instanceof Error ? err.message : String(err) });
      } finally {
        link?.close();
      }
    }
  } finally {
    for (const program of opened) program.close();
  }
  return moves;
}

/** The one log line of an upgrade: the tags each direction had and has, the links moved, the maps made. */
export function logUpgrade(
  log: Logger,
  bpffs: string,
  tags: Record<Direction, { from: string | undefined; to: string }>,
  moves: LinkMoves,
  mapsCreated: readonly string[],
): void {
  const complete = moves.failed.length === 0;
  const fields = {
    bpffs,
    programs: tags,
    links: { moved: moves.moved, already: moves.already, gone: moves.gone, failed: moves.failed.length },
    mapsCreated,
    ...(complete ? {} : { failed: moves.failed.slice(0, 10) }),
  };
  if (complete) log.info(fields, "pins upgraded in place to this version's programs and maps: counts continue");
  else
    log.warn(
      fields,
      'pins upgraded in part: some links stay on their program (counting on) and the program pins are kept; the next start moves them',
    );
}
