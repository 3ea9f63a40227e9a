/**
 * A tenant's flood of Service flows, written straight into a stopped
 * agent's active flow table (its pins in `bpffs`): `count` UDP flows from
 * the pod's address to the Service address (topology.ts ADDRESSES), each
 * with its own source port, none known to conntrack, each 100 bytes and one
 * packet of egress, for the counted cgroup at `unitPath`. The agent started
 * again over the pins drains them on its first drain. Throws when either
 * table holds flows already (an agent still running, or not drained).
 * flowTablesEmpty(bpffs): whether an agent's two flow tables are empty.
 */
import { join } from 'node:path';
import { BpfMap, cgroupId } from '../../agent/kernel/bpf.ts';
import { HOST_LE, u64Bytes } from '../../agent/kernel/bytes.ts';
import { PODMETER_DIRECTIONS, PODMETER_MAPS, PODMETER_STRUCTS } from '../../agent/kernel/contract.generated.ts';
import { FlowTables } from '../../agent/services/tables.ts';

/** Bytes (egress, one packet) each flood flow carries. */
export const FLOOD_FLOW_BYTES = 100;

const NAMES = ['flows', 'flows_a', 'flows_b', 'flow_epochs', 'flow_misses', 'units'] as const;

/** An agent's flow maps opened from its pins, for `use`, then closed. */
function withFlowTables<T>(
  bpffs: string,
  use: (tables: FlowTables, maps: Record<(typeof NAMES)[number], BpfMap>) => T,
): T {
  const pinned = NAMES.map((key) => BpfMap.fromPin(join(bpffs, PODMETER_MAPS[key].pin)));
  try {
    const maps = Object.fromEntries(NAMES.map((key, i) => [key, pinned[i]!])) as Record<(typeof NAMES)[number], BpfMap>;
    return use(new FlowTables(maps), maps);
  } finally {
    for (const m of pinned) m.close();
  }
}

export function flowTablesEmpty(bpffs: string): boolean {
  return withFlowTables(bpffs, (tables) => tables.isEmpty(0) && tables.isEmpty(1));
}

export function writeFlowFlood(bpffs: string, unitPath: string, count: number): void {
  withFlowTables(bpffs, (tables, maps) => {
    const active = tables.active();
    if (active === undefined || !tables.isEmpty(0) || !tables.isEmpty(1))
      throw new Error('writeFlowFlood: the flow tables must be set up and empty (a stopped agent, drained)');
    const table = active === 0 ? maps.flows_a : maps.flows_b;
    const KEY = PODMETER_STRUCTS.podmeter_flow_key;
    const FLOW = PODMETER_STRUCTS.podmeter_flow;
    const COUNTERS = PODMETER_STRUCTS.podmeter_counters;
    const unit = u64Bytes(cgroupId(unitPath));
    const mapped = (a: number, b: number, c: number, d: number) => [
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0xff,
      0xff,
      a,
      b,
      c,
      d,
    ];
    const egress = FLOW.fields.traffic.offset + PODMETER_DIRECTIONS.indexOf('egress') * COUNTERS.size;
    const value = new Uint8Array(FLOW.size);
    value.set(unit, FLOW.fields.unit.offset);
    value.set(u64Bytes(BigInt(FLOOD_FLOW_BYTES)), egress + COUNTERS.fields.bytes.offset);
    value.set(u64Bytes(1n), egress + COUNTERS.fields.packets.offset);
    for (let i = 0; i < count; i++) {
      const key = new Uint8Array(KEY.size);
      const view = new DataView(key.buffer);
      key.set(unit, KEY.fields.cgroup.offset);
      key.set(mapped(10, 244, 1, 2), KEY.fields.local.offset); // ADDRESSES.pod
      key.set(mapped(10, 96, 0, 10), KEY.fields.remote.offset); // ADDRESSES.service
      view.setUint16(KEY.fields.local_port.offset, 1024 + (i % 64_000), HOST_LE);
      view.setUint16(KEY.fields.remote_port.offset, 53 + Math.floor(i / 64_000), HOST_LE);
      key[KEY.fields.protocol.offset] = 17;
      table.update(key, value);
    }
  });
}
