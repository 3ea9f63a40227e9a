/**
 * Typed facade over the native addon, in cilium/ebpf's vocabulary: an object
 * (collection) of Programs and Maps, Links from attaching a program to a
 * cgroup, pins in bpffs. Arguments are checked here, before the kernel sees
 * them, so bad input fails with a message naming the path and what is wrong.
 * Each class owns one fd and releases it in close().
 */
import { closeSync, statSync } from 'node:fs';
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from './errors.ts';
import { native, type LinkInfo, type MapInfo, type ProgInfo } from './native.ts';
import { DIRECTIONS, type Direction } from '../../common/contract/counts.ts';
import { assertCgroup2Dir, FdObject, OwnedFd } from './fd.ts';
import { ATTACH_TYPE, BpfMap, StatsMap, type MapObject } from './maps.ts';

export type { LinkInfo, MapInfo, ProgInfo } from './native.ts';
export {
  checkPinnedProgram,
  CollectionSpec,
  isCgroupStorage,
  programMismatch,
  type MapSpec,
  type ProgramSpec,
} from './spec.ts';

export { DIRECTIONS, type Direction };
export { assertBpffsDir, assertCgroup2Dir, closingOnThrow } from './fd.ts';
export { ATTACH_TYPE, BpfMap, directionOf, MapObject, StatsMap, unitHalf } from './maps.ts';

export { bpfObjectPath } from '../paths.ts';

export function possibleCpus(): number {
  return native.possibleCpus();
}

/** Raises RLIMIT_MEMLOCK as far as this process may; returns the soft limit in bytes (undefined: unlimited). */
export function raiseMemlockLimit(): number | undefined {
  const limit = native.raiseMemlockLimit();
  return limit < 0 ? undefined : limit;
}

/**
 * Sizes this process's fd table for `count` fds now, in one step (capped at
 * RLIMIT_NOFILE); returns the slots reserved (0: could not). The kernel grows
 * the table by doubling as fds are allocated, and in a multithreaded process
 * (Node) each growth waits for an RCU grace period: the call that allocates
 * the fd (at 256, 512, 1024, ... open fds) blocks for several milliseconds.
 */
export function reserveFds(count: number): number {
  return native.reserveFds(count);
}

/** A cgroup's id is the inode number of its cgroup2 directory (Cgroup.open() gives it too, with the directory held open). */
export function cgroupId(cgroupPath: string): bigint {
  return statSync(cgroupPath, { bigint: true }).ino;
}

/**
 * A cgroup2 directory held open, so that its id and every attach to it cost
 * one path walk (the kernel's lookup of each component), not one each: in a
 * burst of pod cgroups the walks were much of each pod's attach time. Closed
 * by its owner.
 */
export class Cgroup extends OwnedFd {
  readonly path: string;
  /** The cgroup's id: the inode number of its cgroup2 directory. */
  readonly id: bigint;

  private constructor(fd: number, path: string, id: bigint) {
    super(fd);
    this.path = path;
    this.id = id;
  }

  /** Opens the directory at `path` (a BpfError when it cannot: ENOENT once the cgroup is gone). */
  static open(path: string): Cgroup {
    const { fd, id } = native.openCgroup(path);
    return new Cgroup(fd, path, id);
  }

  /**
   * Attaches `program` to this cgroup through a bpf_link, which leaves other
   * programs on the cgroup alone and detaches when its last fd or pin goes.
   * Kernels without cgroup links (< 5.7) get a LegacyAttachment instead.
   */
  attach(program: Program): Link {
    try {
      if (linksSupported())
        return new Link(native.attachCgroupLink(program.fd, this.fd, program.attachType, this.path));
      attachCgroupMulti({ cgroupPath: this.path, program });
      return new LegacyAttachment(this.path, program);
    } catch (err) {
      assertCgroup2Dir(this.path, `attach ${program.name} to`); // the reason, when it is the path
      throw err;
    }
  }
}

export class Program extends FdObject {
  readonly name: string;
  readonly attachType: number;

  constructor(fd: number, name: string, attachType: number) {
    super(fd);
    this.name = name;
    this.attachType = attachType;
  }

  /** `name` is the program's full name: the kernel keeps only 15 characters of it. */
  static fromPin(path: string, name: string, attachType: number): Program {
    return new Program(native.objGet(path), name, attachType);
  }

  /** The loaded program of kernel id `id` (needs CAP_SYS_ADMIN): a link's program, which may have no pin. */
  static fromId(id: number, name: string, attachType: number): Program {
    return new Program(native.progFdById(id), name, attachType);
  }

  info(): ProgInfo {
    return native.progInfo(this.fd);
  }
}

export class Link extends FdObject {
  static fromPin(path: string): Link {
    return new Link(native.objGet(path));
  }

  info(): LinkInfo {
    return native.linkInfo(this.fd);
  }

  /**
   * The cgroup each link is attached to, asked of the kernel in one native
   * call (the agent's check at every interval: bench/link-check.bench.ts):
   * its id, 0n once detached or its cgroup gone; undefined where the kernel
   * cannot say (a link closed, a LegacyAttachment: no fd to ask).
   */
  static cgroupIds(links: readonly Link[]): (bigint | undefined)[] {
    const { cgroupIds, errnos } = native.linkCgroupIds(Int32Array.from(links, (l) => (l.closed ? -1 : l.fd)));
    return links.map((_, i) => (errnos[i] === 0 ? cgroupIds[i] : undefined));
  }

  /** Detaches the program from its cgroup now (even while other fds or pins hold the link). */
  detach(): void {
    native.linkDetach(this.fd);
  }

  /**
   * Runs `program` from now on instead of `old` (BPF_LINK_UPDATE, kernel
   * 5.7+), in one step: no packet passes uncounted or counted twice. Fails
   * (EPERM) when the link no longer runs `old`, ENOLINK once its cgroup is gone.
   */
  update(program: Program, old: Program): void {
    native.linkUpdate(this.fd, program.fd, old.fd);
  }
}

/** A loaded BPF ELF object: its programs and maps by name. */
export class BpfObject {
  readonly programs: ReadonlyMap<string, Program>;
  readonly mapFds: ReadonlyMap<string, number>;

  private constructor(programs: Map<string, Program>, mapFds: Map<string, number>) {
    this.programs = programs;
    this.mapFds = mapFds;
  }

  /**
   * Loads the object at `path`; each map named in `reuse` is not created:
   * the programs use that map (whose shape the caller checked) instead.
   */
  static load(path: string, reuse: ReadonlyMap<string, MapObject> = new Map()): BpfObject {
    const raw = native.openObject(path, Object.fromEntries([...reuse].map(([name, map]) => [name, map.fd])));
    const programs = new Map(raw.programs.map((p) => [p.name, new Program(p.fd, p.name, p.attachType)]));
    return new BpfObject(programs, new Map(raw.maps.map((m) => [m.name, m.fd])));
  }

  program(name: string): Program {
    const p = this.programs.get(name);
    if (p === undefined) {
      throw new BpfError({ code: ErrorCodes.badBpfObject, message: `BPF object has no program '${name}'` });
    }
    return p;
  }

  /** Takes a program out of the object: the caller owns (and closes) it from then on. */
  takeProgram(name: string): Program {
    const p = this.program(name);
    (this.programs as Map<string, Program>).delete(name);
    return p;
  }

  /** Takes podmeter_stats out of the object: the caller owns its fd from then on. */
  takeStatsMap(name: string): StatsMap {
    return new StatsMap(this.#take(name));
  }

  /** Takes an ordinary map out of the object: the caller owns its fd from then on. */
  takeMap(name: string): BpfMap {
    return new BpfMap(this.#take(name));
  }

  #take(name: string): number {
    const fd = this.mapFds.get(name);
    if (fd === undefined)
      throw new BpfError({ code: ErrorCodes.badBpfObject, message: `BPF object has no map '${name}'` });
    (this.mapFds as Map<string, number>).delete(name);
    return fd;
  }

  close(): void {
    for (const p of this.programs.values()) p.close();
    for (const fd of this.mapFds.values()) closeSync(fd);
    (this.mapFds as Map<string, number>).clear();
  }
}

/** Cgroup.attach() for a cgroup not held open: opened for this attach only. */
export function attachCgroup(options: { cgroupPath: string; program: Program }): Link {
  let dir: Cgroup;
  try {
    dir = Cgroup.open(options.cgroupPath);
  } catch (err) {
    assertCgroup2Dir(options.cgroupPath, `attach ${options.program.name} to`); // the reason, when it is the path
    throw err;
  }
  try {
    return dir.attach(options.program);
  } finally {
    dir.close();
  }
}

let linkSupport: boolean | undefined;

/** BPF_LINK_CREATE with a bad fd fails EBADF where the command exists, EINVAL where it does not. */
function linksSupported(): boolean {
  if (linkSupport === undefined) {
    try {
      native.attachCgroupLink(-1, -1, 0, '');
      linkSupport = true;
    } catch (err) {
      linkSupport = (err as BpfError).code !== 'EINVAL';
    }
  }
  return linkSupport;
}

/**
 * A BPF_F_ALLOW_MULTI attachment standing in for a link on old kernels. It
 * persists without a pin (so pin() has nothing to do) until detach().
 */
export class LegacyAttachment extends Link {
  readonly cgroupPath: string;
  readonly program: Program;

  constructor(cgroupPath: string, program: Program) {
    super(-1);
    this.cgroupPath = cgroupPath;
    this.program = program;
  }

  override pin(): void {}

  override detach(): void {
    detachCgroupMulti(this);
  }

  override close(): void {}
}

/**
 * The pre-link way (BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI): for kernels
 * without cgroup links (< 5.7) and for other tools' programs in tests. The
 * attachment outlives every fd; detachCgroupMulti removes it.
 */
export function attachCgroupMulti(options: { cgroupPath: string; program: Program }): void {
  try {
    native.attachCgroupMulti(options.program.fd, options.cgroupPath, options.program.attachType);
  } catch (err) {
    assertCgroup2Dir(options.cgroupPath, `attach ${options.program.name} to`);
    throw err;
  }
}

export function detachCgroupMulti(options: { cgroupPath: string; program: Program }): void {
  native.detachCgroupMulti(options.program.fd, options.cgroupPath, options.program.attachType);
}

/** Ids of the programs attached to a cgroup for one direction. */
export function queryCgroup(cgroupPath: string, direction: Direction): number[] {
  return native.queryCgroup(cgroupPath, ATTACH_TYPE[direction]);
}

/** Every BPF map on the node; or those with an id above `afterId`, at most `limit` (a slice of a long walk). */
export function listMaps(afterId?: number, limit?: number): MapInfo[] {
  return native.listMaps(afterId, limit);
}

/** Every BPF program on the node; or those with an id above `afterId`, at most `limit`. */
export function listPrograms(afterId?: number, limit?: number): ProgInfo[] {
  return native.listPrograms(afterId, limit);
}

/** Turns on the kernel's per-program run_time_ns/run_cnt accounting until close(). */
export function enableRunTimeStats(): { close(): void } {
  const fd = native.enableRunTimeStats();
  return { close: () => closeSync(fd) };
}
