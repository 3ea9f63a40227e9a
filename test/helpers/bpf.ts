/**
 * podmeter's (and passthrough's) BPF objects loaded for a test or benchmark.
 *
 *   loadPodmeter(t?): Loaded   bpf/podmeter.bpf.c: programs podmeter_ingress/egress, map podmeter_stats
 *   loadPassthrough(t?): Loaded  bpf/passthrough.bpf.c: passthrough_ingress/egress (let every packet pass)
 *
 *   Loaded: {
 *     programs: { ingress, egress }        Program per direction
 *     map: StorageMap | undefined          podmeter_stats (podmeter only)
 *     attach(cgroup, directions?): Links   bpf_link per direction (default both), closed by close()
 *     counters(cgroup): { ingress, egress } summed Counters (undefined: no entry)
 *     close()                              closes links (detaching them) and every fd
 *   }
 *
 * With `t` the object is closed after the test; unpinned links die with the
 * process anyway, so nothing is left attached on a crash or Ctrl-C.
 */
import {
  attachCgroup,
  BpfObject,
  bpfObjectPath,
  cgroupId,
  DIRECTIONS,
  type Counters,
  type Direction,
  type Link,
  type Program,
  type StorageMap,
} from '../../agent/kernel/bpf.ts';
import type { AfterHook } from './cleanup.ts';
import type { CgroupRef } from './traffic.ts';

export interface Loaded {
  obj: BpfObject;
  programs: Record<Direction, Program>;
  map: StorageMap | undefined;
  attach(cgroup: CgroupRef, directions?: readonly Direction[]): Partial<Record<Direction, Link>>;
  counters(cgroup: CgroupRef | bigint): Record<Direction, Counters | undefined>;
  close(): void;
}

function load(name: 'podmeter' | 'passthrough', t?: AfterHook): Loaded {
  const obj = BpfObject.load(bpfObjectPath(name));
  const map = name === 'podmeter' ? obj.takeStorageMap('podmeter_stats') : undefined;
  const programs = { ingress: obj.program(`${name}_ingress`), egress: obj.program(`${name}_egress`) };
  const links: Link[] = [];
  const loaded: Loaded = {
    obj,
    programs,
    map,
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
      if (map === undefined) throw new Error(`${name} has no counters map`);
      const id = typeof cgroup === 'bigint' ? cgroup : cgroupId(typeof cgroup === 'string' ? cgroup : cgroup.path);
      return { ingress: map.read(id, 'ingress'), egress: map.read(id, 'egress') };
    },
    close() {
      for (const l of links.splice(0)) l.close();
      map?.close();
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
