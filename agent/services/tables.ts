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
import { endianness } from 'node:os';
import { NO_TRAFFIC, type Direction, type Traffic } from '../../common/contract/counts.ts';
import type { BpfMap } from '../kernel/bpf.ts';
import {
  PODMETER_DIRECTIONS,
  PODMETER_MISS_NO_UNIT,
  PODMETER_MISS_NOT_A_FLOW,
  PODMETER_MISS_TABLE_FULL,
  PODMETER_STRUCTS,
} from '../kernel/contract.generated.ts';

const LE = endianness() === 'LE';
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
  /** The socket's cgroup (the unit's or one below it). */
  readonly cgroup: bigint;
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
    const id = u32(value);
    const at = this.#tables.findIndex((t) => t.id === id);
    if (at < 0) throw new Error(`podmeter_flows holds map id ${id}, which is neither flow table`);
    return at as Table;
  }

  /** The drain number each table was last made active at. */
  epoch(table: Table): bigint {
    const value = this.#maps.flow_epochs.lookup(u32Bytes(table), 8);
    return value === undefined ? 0n : readU64(value, 0);
  }

  /** Makes `table` (empty) the active one at drain number `epoch`; returns once no program writes the other. */
  activate(table: Table, epoch: bigint): void {
    const value = new Uint8Array(8);
    new DataView(value.buffer).setBigUint64(0, epoch, LE);
    this.#maps.flow_epochs.update(u32Bytes(table), value);
    this.#maps.flows.update(ZERO_U32, u32Bytes(this.#tables[table].fd));
  }

  /** Every entry of a table (inactive: nothing writes to it). */
  read(table: Table): FlowEntry[] {
    const map = this.#tables[table];
    const out: FlowEntry[] = [];
    for (const key of map.keys(KEY.size)) {
      const value = map.lookup(key, FLOW.size);
      if (value !== undefined) out.push(decode(key, value));
    }
    return out;
  }

  /** Empties a table: the keys of `entries` (what read() gave), then any other left. */
  clear(table: Table, entries: readonly FlowEntry[] = []): void {
    const map = this.#tables[table];
    for (const e of entries) map.delete(Buffer.from(e.id, 'hex'));
    for (const key of map.keys(KEY.size)) map.delete(key);
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

function decode(key: Uint8Array, value: Uint8Array): FlowEntry {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  const f = KEY.fields;
  const traffic = (d: number): Traffic => {
    const at = FLOW.fields.traffic.offset + d * COUNTERS.size;
    return {
      bytes: readU64(value, at + COUNTERS.fields.bytes.offset),
      packets: readU64(value, at + COUNTERS.fields.packets.offset),
    };
  };
  return {
    id: Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex'),
    cgroup: view.getBigUint64(f.cgroup.offset, LE),
    unit: readU64(value, FLOW.fields.unit.offset),
    protocol: view.getUint8(f.protocol.offset),
    local: key.slice(f.local.offset, f.local.offset + f.local.size),
    localPort: view.getUint16(f.local_port.offset, LE),
    remote: key.slice(f.remote.offset, f.remote.offset + f.remote.size),
    remotePort: view.getUint16(f.remote_port.offset, LE),
    traffic: {
      ingress: traffic(PODMETER_DIRECTIONS.indexOf('ingress')),
      egress: traffic(PODMETER_DIRECTIONS.indexOf('egress')),
    },
  };
}

function readU64(bytes: Uint8Array, at: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at, LE);
}

function u32(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, LE);
}

function u32Bytes(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, LE);
  return out;
}

function u64Bytes(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, LE);
  return out;
}
