/**
 * The kernel side of Service flows (bpf/podmeter.h: Service flows): the two
 * flow tables, the one the programs count into (podmeter_flows, slot 0),
 * each table's drain number (podmeter_flow_epochs), the counted cgroups the
 * programs find a flow's unit in (podmeter_units), and the Service traffic
 * the programs could not count per flow (podmeter_flow_misses).
 *
 * A table is read only while inactive: swap() makes the other one active
 * and returns once no program run can still write to the old one (the
 * kernel waits for an RCU grace period on a map-in-map write).
 */
import { NO_TRAFFIC, type Direction, type Traffic } from '../../common/contract/counts.ts';
import type { BpfMap } from '../kernel/bpf.ts';
import { HOST_LE, readU32, readU64, u32Bytes, u64Bytes } from '../kernel/bytes.ts';
import {
  PODMETER_DIRECTIONS,
  PODMETER_MISS_NO_UNIT,
  PODMETER_MISS_NOT_A_FLOW,
  PODMETER_MISS_TABLE_FULL,
  PODMETER_STRUCTS,
} from '../kernel/contract.generated.ts';

const KEY = PODMETER_STRUCTS.podmeter_flow_key;
const FLOW = PODMETER_STRUCTS.podmeter_flow;
const COUNTERS = PODMETER_STRUCTS.podmeter_counters;
const ZERO_U32 = new Uint8Array(4);
/** Why Service traffic counted in the `service` slot, as the programs report it (enum podmeter_flow_miss). */
const KERNEL_MISSES = {
  'not-a-flow': PODMETER_MISS_NOT_A_FLOW,
  'no-unit': PODMETER_MISS_NO_UNIT,
  'table-full': PODMETER_MISS_TABLE_FULL,
} as const;
export type KernelMiss = keyof typeof KERNEL_MISSES;
export type Table = 0 | 1;

/** One entry of a flow table, decoded. */
export interface FlowEntry {
  /** The key's bytes as the kernel has them (hex): the flow's identity across drains. */
  readonly id: string;
  /** The counted cgroup (unit id) the flow counts for. */
  readonly unit: bigint;
  readonly protocol: number;
  /** 16 bytes; IPv4 as IPv4-mapped. */
  readonly local: Uint8Array;
  readonly localPort: number;
  readonly remote: Uint8Array;
  readonly remotePort: number;
  readonly traffic: Readonly<Record<Direction, Traffic>>;
}

/** An inactive table's entries as read in one call, decoded a slice at a time (what a drain does per event-loop turn). */
export interface FlowBatch {
  readonly length: number;
  /** The keys laid end to end, as the kernel has them (clear() deletes these). */
  readonly keys: Uint8Array;
  /** Entries `from` to `to` (exclusive), decoded. */
  entries(from: number, to: number): FlowEntry[];
}

export interface FlowMaps {
  flows: BpfMap;
  flows_a: BpfMap;
  flows_b: BpfMap;
  flow_epochs: BpfMap;
  flow_misses: BpfMap;
  units: BpfMap;
}

export class FlowTables {
  readonly #maps: FlowMaps;
  readonly #tables: readonly [BpfMap, BpfMap];

  constructor(maps: FlowMaps) {
    this.#maps = maps;
    this.#tables = [maps.flows_a, maps.flows_b];
  }

  /** The table the programs count into; undefined before the agent first set one. */
  active(): Table | undefined {
    const value = this.#maps.flows.lookup(ZERO_U32, 4);
    if (value === undefined) return undefined;
    const id = readU32(value);
    const at = this.#tables.findIndex((t) => t.id === id);
    if (at < 0) throw new Error(`podmeter_flows holds map id ${id}, which is neither flow table`);
    return at as Table;
  }

  /** The drain number each table was last made active at. */
  epoch(table: Table): bigint {
    const value = this.#maps.flow_epochs.lookup(u32Bytes(table), 8);
    return value === undefined ? 0n : readU64(value, 0);
  }

  /**
   * Makes `table` (empty) the active one at drain number `epoch`; returns
   * once no program writes the other (the kernel waits out an RCU grace
   * period, milliseconds, blocking the event loop: for start-up, before any
   * program is attached; drains use swapTo).
   */
  activate(table: Table, epoch: bigint): void {
    this.#maps.flow_epochs.update(u32Bytes(table), u64Bytes(epoch));
    this.#maps.flows.update(ZERO_U32, u32Bytes(this.#tables[table].fd));
  }

  /** activate() with the wait for the grace period on libuv's thread pool: the event loop goes on meanwhile. */
  async swapTo(table: Table, epoch: bigint): Promise<void> {
    this.#maps.flow_epochs.update(u32Bytes(table), u64Bytes(epoch));
    await this.#maps.flows.updateAsync(ZERO_U32, u32Bytes(this.#tables[table].fd));
  }

  /** Every entry of a table (inactive: nothing writes to it), in one native call. */
  read(table: Table): FlowBatch {
    const { count, keys, values } = this.#tables[table].entries(KEY.size, FLOW.size);
    return new TableBatch(count, keys, values);
  }

  /** Empties a table: the keys `read` gave (one native call), then any other left. */
  clear(table: Table, read?: FlowBatch): void {
    const map = this.#tables[table];
    if (read !== undefined && read.keys.length > 0) map.deleteKeys(read.keys);
    const rest = map.entries(KEY.size, FLOW.size);
    if (rest.count > 0) map.deleteKeys(rest.keys);
  }

  isEmpty(table: Table): boolean {
    return this.#tables[table].keys(KEY.size, 1).length === 0;
  }

  /** A cgroup is counted: its flows (and those of cgroups below it) count for it. Before its programs attach. */
  addUnit(cgroupId: bigint): void {
    this.#maps.units.update(u64Bytes(cgroupId), ZERO_U32);
  }

  removeUnit(cgroupId: bigint): void {
    this.#maps.units.delete(u64Bytes(cgroupId));
  }

  /** Service traffic the programs counted in the `service` slot, by reason (summed over CPUs, since load). */
  misses(): Record<KernelMiss, Traffic> {
    const out = {} as Record<KernelMiss, Traffic>;
    for (const [reason, index] of Object.entries(KERNEL_MISSES) as [KernelMiss, number][]) {
      const value = this.#maps.flow_misses.lookup(u32Bytes(index), this.#maps.flow_misses.valueBytes);
      let bytes = 0n;
      let packets = 0n;
      if (value !== undefined)
        for (let at = 0; at < value.length; at += COUNTERS.size) {
          bytes += readU64(value, at + COUNTERS.fields.bytes.offset);
          packets += readU64(value, at + COUNTERS.fields.packets.offset);
        }
      out[reason] = value === undefined ? NO_TRAFFIC : { bytes, packets };
    }
    return out;
  }
}

const INGRESS = FLOW.fields.traffic.offset + PODMETER_DIRECTIONS.indexOf('ingress') * COUNTERS.size;
const EGRESS = FLOW.fields.traffic.offset + PODMETER_DIRECTIONS.indexOf('egress') * COUNTERS.size;

/** A table's keys and values as the kernel gave them, decoded on demand. */
class TableBatch implements FlowBatch {
  readonly length: number;
  readonly keys: Uint8Array;
  readonly #keys: Buffer;
  readonly #keyView: DataView;
  readonly #values: DataView;

  constructor(count: number, keys: Uint8Array, values: Uint8Array) {
    this.length = count;
    this.keys = keys;
    this.#keys = Buffer.from(keys.buffer, keys.byteOffset, keys.byteLength);
    this.#keyView = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    this.#values = new DataView(values.buffer, values.byteOffset, values.byteLength);
  }

  entries(from: number, to: number): FlowEntry[] {
    const out = new Array<FlowEntry>(to - from);
    const f = KEY.fields;
    const v = this.#values;
    for (let i = from; i < to; i++) {
      const k = i * KEY.size;
      const at = i * FLOW.size;
      out[i - from] = {
        id: this.#keys.toString('hex', k, k + KEY.size),
        unit: v.getBigUint64(at + FLOW.fields.unit.offset, HOST_LE),
        protocol: this.#keys[k + f.protocol.offset]!,
        local: this.keys.subarray(k + f.local.offset, k + f.local.offset + f.local.size),
        localPort: this.#keyView.getUint16(k + f.local_port.offset, HOST_LE),
        remote: this.keys.subarray(k + f.remote.offset, k + f.remote.offset + f.remote.size),
        remotePort: this.#keyView.getUint16(k + f.remote_port.offset, HOST_LE),
        traffic: {
          ingress: {
            bytes: v.getBigUint64(at + INGRESS + COUNTERS.fields.bytes.offset, HOST_LE),
            packets: v.getBigUint64(at + INGRESS + COUNTERS.fields.packets.offset, HOST_LE),
          },
          egress: {
            bytes: v.getBigUint64(at + EGRESS + COUNTERS.fields.bytes.offset, HOST_LE),
            packets: v.getBigUint64(at + EGRESS + COUNTERS.fields.packets.offset, HOST_LE),
          },
        },
      };
    }
    return out;
  }
}
