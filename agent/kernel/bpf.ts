/**
 * Typed facade over the native addon, in cilium/ebpf's vocabulary: an object
 * (collection) of Programs and Maps, Links from attaching a program to a
 * cgroup, pins in bpffs. Arguments are checked here, before the kernel sees
 * them, so bad input fails with a message naming the path and what is wrong.
 * Each class owns one fd and releases it in close().
 */
import { closeSync, statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from './errors.ts';
import { native, type LinkInfo, type MapInfo, type ProgInfo } from './native.ts';
import { PODMETER_SLOTS } from './layout.ts';
import { checkPinnedMap, checkPinnedProgram, type MapSpec, type ProgramSpec } from './spec.ts';

export type { LinkInfo, MapInfo, ProgInfo } from './native.ts';
export { CollectionSpec, type MapSpec, type ProgramSpec } from './spec.ts';

export type Direction = 'ingress' | 'egress';
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

/** enum bpf_attach_type values of the two cgroup_skb hooks. */
export const ATTACH_TYPE: Readonly<Record<Direction, number>> = { ingress: 0, egress: 1 };

export function directionOf(attachType: number): Direction | undefined {
  return attachType === 0 ? 'ingress' : attachType === 1 ? 'egress' : undefined;
}

export interface Counters {
  bytes: bigint;
  packets: bigint;
}

const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

export { bpfObjectPath } from '../paths.ts';

/** The sum of several Counters (e.g. one slot over CPUs). */
export function sumCounters(perCpu: readonly Counters[]): Counters {
  let bytes = 0n;
  let packets = 0n;
  for (const c of perCpu) {
    bytes += c.bytes;
    packets += c.packets;
  }
  return { bytes, packets };
}

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

/** A cgroup's id is the inode number of its cgroup2 directory. */
export function cgroupId(cgroupPath: string): bigint {
  return statSync(cgroupPath, { bigint: true }).ino;
}

function fsType(path: string): number | undefined {
  try {
    return statfsSync(path).type;
  } catch {
    return undefined;
  }
}

export function assertCgroup2Dir(path: string, what: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? 'ENOENT';
    throw new BpfError({ code, message: `${what} '${path}': no such cgroup directory (${code})`, path }, { cause });
  }
  if (!isDir || fsType(path) !== CGROUP2_SUPER_MAGIC) {
    throw new BpfError({
      code: ErrorCodes.notCgroup2,
      message: `${what} '${path}': not a cgroup2 directory (cgroup_skb programs attach to cgroup v2 only)`,
      path,
    });
  }
}

/** Pins must be created inside a mounted bpffs; the kernel's own answer (EPERM) says nothing of why. */
export function assertBpffsDir(dir: string, what: string): void {
  const type = fsType(dir);
  if (type === undefined) {
    throw new BpfError({
      code: 'ENOENT',
      message: `${what} '${dir}': directory does not exist (it must be on a bpffs, e.g. under /sys/fs/bpf)`,
      path: dir,
    });
  }
  if (type !== BPF_FS_MAGIC) {
    throw new BpfError({
      code: ErrorCodes.notBpffs,
      message: `${what} '${dir}': not on a bpffs (mount one with: mount -t bpf bpffs /sys/fs/bpf)`,
      path: dir,
    });
  }
}

abstract class FdObject {
  #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
  }

  get fd(): number {
    if (this.#fd < 0) throw new BpfError({ code: 'EBADF', message: `${this.constructor.name} is closed` });
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Pins the object at `path` (its directory must be on a bpffs). */
  pin(path: string): void {
    try {
      native.objPin(this.fd, path);
    } catch (err) {
      assertBpffsDir(dirname(path), 'pin'); // says why when the kernel's answer (EPERM, ENOENT) does not
      throw err;
    }
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
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

  /**
   * Opens the program pinned at `path` if it is `spec`'s (type and name) and
   * uses every map of `maps`; otherwise a BpfError (ErrorCodes.pinShape)
   * naming the pin and both shapes, with nothing left open.
   */
  static adopt(path: string, spec: ProgramSpec, maps: readonly { map: MapObject; what: string }[]): Program {
    return closedUnless(Program.fromPin(path, spec.name, spec.attachType), (program) =>
      checkPinnedProgram(
        path,
        program.info(),
        spec,
        maps.map((m) => ({ id: m.map.id, what: m.what })),
      ),
    );
  }

  info(): ProgInfo {
    return native.progInfo(this.fd);
  }
}

/**
 * Runs `make`, handing it `keep` to record each fd object it opens; when
 * `make` throws, everything kept is closed before the error goes on: a step
 * that fails part-way leaves nothing open.
 */
export function closingOnThrow<T>(make: (keep: <O extends { close(): void }>(object: O) => O) => T): T {
  const kept: { close(): void }[] = [];
  try {
    return make((object) => (kept.push(object), object));
  } catch (err) {
    for (const object of kept) object.close();
    throw err;
  }
}

/** `object` once `check` passes on it; closed (nothing left open) when it throws. */
function closedUnless<T extends { close(): void }>(object: T, check: (object: T) => void): T {
  return closingOnThrow((keep) => {
    check(keep(object));
    return object;
  });
}

/**
 * A map fd with what the kernel said of it when it was opened: its id (every
 * element call names it, so an fd that came to refer to another map is
 * refused by the addon) and the sizes every key and value buffer must have.
 */
export abstract class MapObject extends FdObject {
  readonly id: number;
  readonly name: string;
  readonly keySize: number;
  /** Bytes of one value as the map declares it. */
  readonly valueSize: number;
  /** Bytes of a value as lookup and update move it (per-CPU maps: one rounded-up value per possible CPU). */
  readonly valueBytes: number;

  /** Takes ownership of `fd`: closed here if it is not a map. */
  constructor(fd: number) {
    super(fd);
    let info: MapInfo;
    try {
      info = native.mapInfo(fd);
    } catch (err) {
      this.close();
      throw err;
    }
    this.id = info.id;
    this.name = info.name;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.valueBytes = info.valueBytes;
  }

  /**
   * Opens the map pinned at `path` if its type, key size, value size and max
   * entries are `spec`'s; otherwise a BpfError (ErrorCodes.pinShape)
   * naming the pin and both shapes, with nothing left open.
   */
  static adopt<T extends MapObject>(this: new (fd: number) => T, path: string, spec: MapSpec): T {
    return closedUnless(new this(native.objGet(path)), (map) => checkPinnedMap(path, map.info(), spec));
  }

  info(): MapInfo {
    return native.mapInfo(this.fd);
  }

  /** "map 'podmeter_peers' (id 42)" */
  describe(): string {
    return `map '${this.name}' (id ${this.id})`;
  }

  /** Throws a TypeError unless `bytes` is a Uint8Array of `want` bytes. */
  protected checkBytes(
    method: string,
    what: 'key' | 'value',
    bytes: unknown,
    want: number,
  ): asserts bytes is Uint8Array {
    if (!(bytes instanceof Uint8Array)) throw new TypeError(`${method}: the ${what} must be a Uint8Array`);
    this.checkSize(method, what, bytes.length, want);
  }

  protected checkSize(method: string, what: 'key' | 'value', got: number, want: number): void {
    if (got !== want)
      throw new TypeError(
        `${method}: ${what} of ${got} bytes for ${this.describe()}, whose ${what}s are ${want} bytes`,
      );
  }
}

/**
 * podmeter's per-CPU cgroup storage: {cgroup id, attach type} -> per CPU, one
 * Counters per slot (bpf/podmeter.h: PODMETER_SLOTS slots, then the programs'
 * own peer cache, which readers skip; the storage of agents before peer
 * classes had one slot, 16 bytes).
 */
export class StorageMap extends MapObject {
  static fromPin(path: string): StorageMap {
    return new StorageMap(native.objGet(path));
  }

  /** Counter slots per value: 1 for the old 16-byte layout, PODMETER_SLOTS for the current one. */
  get slots(): number {
    return this.valueSize === 16 ? 1 : PODMETER_SLOTS;
  }

  /** Per-CPU slots of one cgroup and direction (perCpu[cpu][slot]), or undefined when there is no such entry. */
  lookup(cgroupId: bigint, direction: Direction): Counters[][] | undefined {
    const raw = native.storageLookup(this.fd, checkCgroupId(cgroupId), ATTACH_TYPE[direction], this.valueSize, this.id);
    if (raw === undefined) return undefined;
    const words = this.valueSize / 8;
    const counterWords = 2 * this.slots;
    const perCpu: Counters[][] = [];
    for (let cpu = 0; cpu < raw.length; cpu += words) {
      const slots: Counters[] = [];
      for (let i = cpu; i < cpu + counterWords; i += 2) slots.push({ bytes: raw[i]!, packets: raw[i + 1]! });
      perCpu.push(slots);
    }
    return perCpu;
  }

  /** Each slot summed over CPUs (readUnit's half for this direction); undefined when there is no such entry. */
  read(cgroupId: bigint, direction: Direction): Counters[] | undefined {
    if (
      native.storageLookup(this.fd, checkCgroupId(cgroupId), ATTACH_TYPE[direction], this.valueSize, this.id) ===
      undefined
    )
      return undefined;
    const sums = this.readUnit(cgroupId);
    if (sums === undefined) return undefined;
    const half = direction === 'ingress' ? sums.subarray(0, sums.length / 2) : sums.subarray(sums.length / 2);
    const slots: Counters[] = [];
    for (let i = 0; i < half.length; i += 2) slots.push({ bytes: half[i]!, packets: half[i + 1]! });
    return slots;
  }

  /**
   * What the agent reads for every unit on each scrape, in one call: both
   * directions' slots summed over CPUs as [bytes, packets] of slot 0, slot
   * 1, ... for ingress, then the same for egress (a missing direction reads
   * as zeros); undefined when neither direction has an entry. `previous`
   * itself comes back when nothing changed since it was read (an idle
   * cgroup costs no new BigInts).
   */
  readUnit(cgroupId: bigint, previous?: BigUint64Array): BigUint64Array | undefined {
    return native.storageSums(this.fd, checkCgroupId(cgroupId), this.valueSize, 2 * this.slots, previous, this.id);
  }

  keys(): { cgroupId: bigint; direction: Direction }[] {
    const keys: { cgroupId: bigint; direction: Direction }[] = [];
    for (const k of native.storageKeys(this.fd, this.id)) {
      const direction = directionOf(k.attachType);
      if (direction !== undefined) keys.push({ cgroupId: k.cgroupId, direction });
    }
    return keys;
  }
}

function checkCgroupId(id: unknown): bigint {
  if (typeof id !== 'bigint') throw new TypeError('a cgroup id must be a bigint');
  if (id < 0n || id >= 1n << 64n) throw new RangeError(`cgroup id ${id} is not a u64`);
  return id;
}

/** An ordinary map (hash, array, LPM trie) with keys and values as raw bytes of the map's own key and value sizes. */
export class BpfMap extends MapObject {
  static fromPin(path: string): BpfMap {
    return new BpfMap(native.objGet(path));
  }

  update(key: Uint8Array, value: Uint8Array): void {
    this.checkBytes('update', 'key', key, this.keySize);
    this.checkBytes('update', 'value', value, this.valueBytes);
    native.mapUpdate(this.fd, key, value, this.id);
  }

  /** false when there was no such key. */
  delete(key: Uint8Array): boolean {
    this.checkBytes('delete', 'key', key, this.keySize);
    return native.mapDelete(this.fd, key, this.id);
  }

  /** The value (valueSize bytes), or undefined when there is no such key (for an LPM trie: no prefix matches). */
  lookup(key: Uint8Array, valueSize: number): Uint8Array | undefined {
    this.checkBytes('lookup', 'key', key, this.keySize);
    this.checkSize('lookup', 'value', valueSize, this.valueBytes);
    return native.mapLookup(this.fd, key, valueSize, this.id);
  }

  keys(keySize: number): Uint8Array[] {
    this.checkSize('keys', 'key', keySize, this.keySize);
    return native.mapKeys(this.fd, keySize, this.id);
  }
}

export class Link extends FdObject {
  static fromPin(path: string): Link {
    return new Link(native.objGet(path));
  }

  info(): LinkInfo {
    return native.linkInfo(this.fd);
  }

  /** Detaches the program from its cgroup now (even while other fds or pins hold the link). */
  detach(): void {
    native.linkDetach(this.fd);
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

  static load(path: string): BpfObject {
    const raw = native.openObject(path);
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

  /** Takes a map out of the object: the caller owns its fd from then on. */
  takeStorageMap(name: string): StorageMap {
    return new StorageMap(this.#take(name));
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

/**
 * Attaches `program` to a cgroup through a bpf_link, which leaves other
 * programs on the cgroup alone and detaches when its last fd or pin goes.
 * Kernels without cgroup links (< 5.7) get a LegacyAttachment instead.
 */
export function attachCgroup(options: { cgroupPath: string; program: Program }): Link {
  try {
    if (linksSupported()) {
      return new Link(native.attachCgroupLink(options.program.fd, options.cgroupPath, options.program.attachType));
    }
    attachCgroupMulti(options);
    return new LegacyAttachment(options.cgroupPath, options.program);
  } catch (err) {
    assertCgroup2Dir(options.cgroupPath, `attach ${options.program.name} to`); // the reason, when it is the path
    throw err;
  }
}

let linkSupport: boolean | undefined;

/** BPF_LINK_CREATE with a bad fd fails EBADF where the command exists, EINVAL where it does not. */
function linksSupported(): boolean {
  if (linkSupport === undefined) {
    try {
      native.attachCgroupLink(-1, '/', 0);
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
