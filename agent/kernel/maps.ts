/**
 * Maps: MapObject (an fd with the map's id and sizes), StatsMap (podmeter_stats,
 * the per-CPU cgroup storage of counter slots) and BpfMap (hash, array, LPM
 * trie: raw bytes). Sizes are checked before the addon sees a buffer.
 */
import type { Direction, Traffic } from '../../common/contract/counts.ts';
import { PODMETER_DIRECTIONS, PODMETER_SLOTS } from './contract.generated.ts';
import { closedUnless, FdObject } from './fd.ts';
import { native, type MapInfo } from './native.ts';
import { checkPinnedMap, type MapSpec } from './spec.ts';

/** enum bpf_attach_type values of the two cgroup_skb hooks. */
export const ATTACH_TYPE: Readonly<Record<Direction, number>> = { ingress: 0, egress: 1 };

export function directionOf(attachType: number): Direction | undefined {
  return attachType === 0 ? 'ingress' : attachType === 1 ? 'egress' : undefined;
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
 * podmeter_stats, podmeter's per-CPU cgroup storage: {cgroup id, attach
 * type} -> per CPU, one Traffic per peer class slot (struct podmeter_slots:
 * PODMETER_SLOTS slots, then the programs' own peer cache, which readers
 * skip).
 */
export class StatsMap extends MapObject {
  static fromPin(path: string): StatsMap {
    return new StatsMap(native.objGet(path));
  }

  /** Per-CPU slots of one cgroup and direction (perCpu[cpu][slot]), or undefined when there is no such entry. */
  lookup(cgroupId: bigint, direction: Direction): Traffic[][] | undefined {
    const raw = this.#lookup(cgroupId, direction);
    if (raw === undefined) return undefined;
    const words = this.valueSize / 8;
    const perCpu: Traffic[][] = [];
    for (let cpu = 0; cpu < raw.length; cpu += words) {
      const slots: Traffic[] = [];
      for (let i = cpu; i < cpu + SLOT_WORDS; i += 2) slots.push({ bytes: raw[i]!, packets: raw[i + 1]! });
      perCpu.push(slots);
    }
    return perCpu;
  }

  /** One direction's slots summed over CPUs, as readUnit's half for it; undefined when there is no such entry. */
  read(cgroupId: bigint, direction: Direction): BigUint64Array | undefined {
    const raw = this.#lookup(cgroupId, direction);
    if (raw === undefined) return undefined;
    const sums = new BigUint64Array(SLOT_WORDS);
    const words = this.valueSize / 8;
    for (let cpu = 0; cpu < raw.length; cpu += words) for (let i = 0; i < SLOT_WORDS; i++) sums[i]! += raw[cpu + i]!;
    return sums;
  }

  /**
   * What the agent reads for every unit on each scrape, in one call: both
   * directions' slots summed over CPUs as [bytes, packets] of slot 0, slot
   * 1, ... for each direction in PODMETER_DIRECTIONS order (the addon's),
   * (a missing direction reads as zeros); undefined when neither direction
   * has an entry. `previous` itself comes back when nothing changed since it
   * was read (an idle cgroup costs no new BigInts).
   */
  readUnit(cgroupId: bigint, previous?: BigUint64Array): BigUint64Array | undefined {
    return native.storageSums(this.fd, checkCgroupId(cgroupId), this.valueSize, SLOT_WORDS, previous, this.id);
  }

  /**
   * readUnit() of many cgroups in one native call (the agent's refresh of
   * every unit), `previous[i]` for `cgroupIds[i]`: the fd is checked against
   * the map once, not once per cgroup (a syscall each, a third of a read).
   */
  readUnits(
    cgroupIds: readonly bigint[],
    previous: readonly (BigUint64Array | undefined)[],
  ): (BigUint64Array | undefined)[] {
    for (const id of cgroupIds) checkCgroupId(id);
    return native.storageSumsMany(this.fd, cgroupIds, this.valueSize, SLOT_WORDS, previous, this.id);
  }

  keys(): { cgroupId: bigint; direction: Direction }[] {
    const keys: { cgroupId: bigint; direction: Direction }[] = [];
    for (const k of native.storageKeys(this.fd, this.id)) {
      const direction = directionOf(k.attachType);
      if (direction !== undefined) keys.push({ cgroupId: k.cgroupId, direction });
    }
    return keys;
  }

  #lookup(cgroupId: bigint, direction: Direction): BigUint64Array | undefined {
    return native.storageLookup(this.fd, checkCgroupId(cgroupId), ATTACH_TYPE[direction], this.valueSize, this.id);
  }
}

/** Words (u64) of the counter slots in one value: bytes and packets per slot. */
const SLOT_WORDS = 2 * PODMETER_SLOTS;

/** Where each direction's words are in StatsMap.readUnit's sums (the addon's order, enum podmeter_direction). */
export function unitHalf(sums: BigUint64Array, direction: Direction): BigUint64Array {
  const half = sums.length / PODMETER_DIRECTIONS.length;
  const i = PODMETER_DIRECTIONS.indexOf(direction);
  return sums.subarray(i * half, (i + 1) * half);
}

const U64_END = 1n << 64n;

function checkCgroupId(id: unknown): bigint {
  if (typeof id !== 'bigint') throw new TypeError('a cgroup id must be a bigint');
  if (id < 0n || id >= U64_END) throw new RangeError(`cgroup id ${id} is not a u64`);
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

  /**
   * update() off the event loop (libuv's thread pool), for a write the kernel
   * makes wait: a map-in-map slot waits out an RCU grace period (milliseconds).
   */
  updateAsync(key: Uint8Array, value: Uint8Array): Promise<void> {
    this.checkBytes('updateAsync', 'key', key, this.keySize);
    this.checkBytes('updateAsync', 'value', value, this.valueBytes);
    return native.mapUpdateAsync(this.fd, key, value, this.id);
  }

  /** Every key, or the first `limit`. */
  keys(keySize: number, limit?: number): Uint8Array[] {
    this.checkSize('keys', 'key', keySize, this.keySize);
    return native.mapKeys(this.fd, keySize, this.id, limit);
  }

  /**
   * Every entry in one native call (a batch lookup where the map type has
   * one): entry i's key is keys[i * keySize ..], its value values[i * valueSize ..].
   * Entries written meanwhile may or may not be in it.
   */
  entries(keySize: number, valueSize: number): { count: number; keys: Uint8Array; values: Uint8Array } {
    this.checkSize('entries', 'key', keySize, this.keySize);
    this.checkSize('entries', 'value', valueSize, this.valueBytes);
    return native.mapEntries(this.fd, keySize, valueSize, this.id);
  }

  /** Deletes keys laid end to end (as entries() gives them) in one native call; returns how many were there. */
  deleteKeys(keys: Uint8Array): number {
    if (!(keys instanceof Uint8Array)) throw new TypeError('deleteKeys: the keys must be a Uint8Array');
    if (keys.length % this.keySize !== 0)
      throw new TypeError(
        `deleteKeys: keys of ${keys.length} bytes for ${this.describe()}, not a whole number of its ${this.keySize}-byte keys`,
      );
    return native.mapDeleteKeys(this.fd, keys, this.id);
  }
}
