/**
 * podmeter's (and passthrough's) BPF objects loaded for a test or benchmark.
 *
 *   loadPodmeter(t?): Loaded   bpf/podmeter.bpf.c: programs podmeter_ingress/egress, maps podmeter_stats, podmeter_peers, podmeter_gen
 *   loadPassthrough(t?): Loaded  bpf/passthrough.bpf.c: passthrough_ingress/egress (let every packet pass)
 *   loadLegacy(t?): Loaded     bpf/legacy.bpf.c: programs counting without peer classes (one 16-byte counter;
 *                              benchmarks compare against it, tests use it as a map of another shape;
 *                              counters()/classes() do not apply)
 *
 *   Loaded: {
 *     programs: { ingress, egress }        Program per direction
 *     stats: StatsMap | undefined         podmeter_stats (podmeter only)
 *     peers: BpfMap | undefined            podmeter_peers, the peer trie (podmeter only)
 *     flows: FlowTables | undefined        the Service flow tables and units (podmeter only; no table is
 *                                          active until flows.activate(): Service packets count in the slot)
 *     attach(cgroup, directions?): Links   bpf_link per direction (default both), closed by close()
 *     counters(cgroup): { ingress, egress } network traffic: the Traffic of every class but
 *                                          loopback, as the agent reports it (undefined: no entry)
 *     classes(cgroup): { ingress, egress } ClassTraffic by built-in class name (classes with packets only)
 *     setPeer(cidr, cls)                   puts a prefix in the peer trie: cls a built-in class or a slot number
 *     close()                              closes links (detaching them) and every fd
 *   }
 *
 *   attachMeter(meter, cgroup)           Meter.attach() of a test cgroup, opened for the attach only (as
 *                                          the agent's tracker holds each pod cgroup open while it attaches)
 *
 * With `t` the object is closed after the test; unpinned links die with the
 * process anyway, so nothing is left attached on a crash or Ctrl-C.
 */
import {
  attachCgroup,
  BpfObject,
  bpfObjectPath,
  Cgroup,
  cgroupId,
  DIRECTIONS,
  type Direction,
  type Link,
  type Program,
  type StatsMap,
} from '../../agent/kernel/bpf.ts';
import type { Meter } from '../../agent/counting/meter.ts';
import { SlotNames, SLOT, type BuiltinClass } from '../../agent/peers/classes.ts';
import { networkTotal, type ClassTraffic, type Traffic } from '../../common/contract/counts.ts';
import { parsePrefix } from '../../agent/peers/cidr.ts';
import { PeerTrie } from '../../agent/peers/trie.ts';
import type { BpfMap } from '../../agent/kernel/bpf.ts';
import { FlowTables, type FlowMaps } from '../../agent/services/tables.ts';
import type { AfterHook } from './cleanup.ts';
import type { CgroupRef } from './traffic.ts';

export interface Loaded {
  obj: BpfObject;
  programs: Record<Direction, Program>;
  stats: StatsMap | undefined;
  peers: BpfMap | undefined;
  flows: FlowTables | undefined;
  attach(cgroup: CgroupRef, directions?: readonly Direction[]): Partial<Record<Direction, Link>>;
  counters(cgroup: CgroupRef | bigint): Record<Direction, Traffic | undefined>;
  classes(cgroup: CgroupRef | bigint): Record<Direction, ClassTraffic | undefined>;
  setPeer(cidr: string, cls: BuiltinClass | number): void;
  close(): void;
}

function load(name: 'podmeter' | 'passthrough' | 'legacy', t?: AfterHook): Loaded {
  const obj = BpfObject.load(bpfObjectPath(name));
  const stats = name === 'podmeter' ? obj.takeStatsMap('podmeter_stats') : undefined;
  const peers = name === 'podmeter' ? obj.takeMap('podmeter_peers') : undefined;
  const generation = name === 'podmeter' ? obj.takeMap('podmeter_gen') : undefined;
  const trie = peers && generation && new PeerTrie(peers, generation);
  const flowMaps =
    name === 'podmeter'
      ? (Object.fromEntries(
          (['flows', 'flows_a', 'flows_b', 'flow_epochs', 'flow_misses', 'units'] as const).map((key) => [
            key,
            obj.takeMap(`podmeter_${key}`),
          ]),
        ) as unknown as FlowMaps)
      : undefined;
  const names = new SlotNames([]);
  const idOf = (cgroup: CgroupRef | bigint): bigint =>
    typeof cgroup === 'bigint' ? cgroup : cgroupId(typeof cgroup === 'string' ? cgroup : cgroup.path);
  const classesOf = (cgroup: CgroupRef | bigint): Record<Direction, ClassTraffic | undefined> => {
    if (stats === undefined) throw new Error(`${name} has no podmeter_stats`);
    const id = idOf(cgroup);
    const read = (d: Direction) => {
      const sums = stats.read(id, d);
      return sums && names.byClass(sums);
    };
    return { ingress: read('ingress'), egress: read('egress') };
  };
  const prefix = name === 'legacy' ? 'podmeter' : name;
  const programs = { ingress: obj.program(`${prefix}_ingress`), egress: obj.program(`${prefix}_egress`) };
  const links: Link[] = [];
  const loaded: Loaded = {
    obj,
    programs,
    stats,
    peers,
    flows: flowMaps && new FlowTables(flowMaps),
    attach(cgroup, directions = DIRECTIONS) {
      const cgroupPath = typeof cgroup === 'string' ? cgroup : cgroup.path;
      const out: Partial<Record<Direction, Link>> = {};
      for (const d of directions) {
        const link = attachCgroup({ cgroupPath, program: programs[d] });
        links.push(link);
        out[d] = link;
      }
      return out;
    },
    counters(cgroup) {
      const c = classesOf(cgroup);
      return { ingress: c.ingress && networkTotal(c.ingress), egress: c.egress && networkTotal(c.egress) };
    },
    classes: classesOf,
    setPeer(cidr, cls) {
      if (trie === undefined) throw new Error(`${name} has no peer trie`);
      trie.set(parsePrefix(cidr), typeof cls === 'number' ? cls : SLOT[cls]);
    },
    close() {
      for (const l of links.splice(0)) l.close();
      stats?.close();
      peers?.close();
      generation?.close();
      for (const map of flowMaps === undefined ? [] : (Object.values(flowMaps) as BpfMap[])) map.close();
      obj.close();
    },
  };
  t?.after(() => loaded.close());
  return loaded;
}

export function loadPodmeter(t?: AfterHook): Loaded {
  return load('podmeter', t);
}

export function loadPassthrough(t?: AfterHook): Loaded {
  return load('passthrough', t);
}

export function loadLegacy(t?: AfterHook): Loaded {
  return load('legacy', t);
}

/** Meter.attach() of a test cgroup: opened for the attach only, closed even when it fails. */
export function attachMeter(meter: Pick<Meter, 'attach'>, cgroup: { path: string }): void {
  const open = Cgroup.open(cgroup.path);
  try {
    meter.attach(open);
  } finally {
    open.close();
  }
}
