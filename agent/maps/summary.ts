/**
 * The inventory's views: by map name, by owner and by pod (each map counted
 * once per name, owner and pod), and a pod's bytes for its annotation.
 */
import type { InventoryMap, MapInventory, NameSummary, OwnerSummary, PodSummary } from './inventory.ts';

function descending<T extends { bytes: number }>(key: (item: T) => string | number): (a: T, b: T) => number {
  return (a, b) => b.bytes - a.bytes || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
}

/** The by-name, by-owner and by-pod views of a list of maps (each map once per name, owner, pod). */
export function summarise(maps: readonly InventoryMap[]): Pick<MapInventory, 'byName' | 'byOwner' | 'byPod'> {
  const summary = new Summary();
  for (const map of maps) summary.add(map);
  return summary.result();
}

/** summarise(), one map at a time (so the enumeration can pause between maps). */
export class Summary {
  readonly #byName = new Map<string, NameSummary>();
  readonly #byOwner = new Map<string, OwnerSummary & { pidSet: Set<number> }>();
  readonly #byPod = new Map<string, PodSummary & { pidSet: Set<number> }>();

  add(map: InventoryMap): void {
    const n = this.#byName.get(map.name) ?? { name: map.name, types: [], maps: 0, bytes: 0 };
    if (!n.types.includes(map.type)) n.types.push(map.type);
    n.maps++;
    n.bytes += map.bytes;
    this.#byName.set(map.name, n);
    for (const owner of map.owners) {
      const o = this.#byOwner.get(owner) ?? {
        owner,
        kind: map.owner,
        pids: [],
        maps: 0,
        bytes: 0,
        pidSet: new Set<number>(),
      };
      for (const p of map.processes) if (p.comm === owner) o.pidSet.add(p.pid);
      o.maps++;
      o.bytes += map.bytes;
      this.#byOwner.set(owner, o);
    }
    for (const uid of map.podUids) {
      const p = this.#byPod.get(uid) ?? { uid, pids: [], maps: 0, bytes: 0, pidSet: new Set<number>() };
      for (const h of map.processes) if (h.podUid === uid) p.pidSet.add(h.pid);
      p.maps++;
      p.bytes += map.bytes;
      this.#byPod.set(uid, p);
    }
  }

  result(): Pick<MapInventory, 'byName' | 'byOwner' | 'byPod'> {
    return {
      byName: [...this.#byName.values()].sort(descending((n) => n.name)),
      byOwner: [...this.#byOwner.values()]
        .map(({ pidSet, ...o }) => ({ ...o, pids: [...pidSet].sort((a, b) => a - b) }))
        .sort(descending((o) => o.owner)),
      byPod: [...this.#byPod.values()]
        .map(({ pidSet, ...p }) => ({ ...p, pids: [...pidSet].sort((a, b) => a - b) }))
        .sort(descending((p) => p.uid)),
    };
  }
}

const podIndex = new WeakMap<MapInventory, Map<string, number>>();

/** Bytes of the maps a pod's processes hold (for the `podmeter.io/bpf-map-bytes` annotation); undefined when it holds none. */
export function podMapBytes(inv: MapInventory | undefined, uid: string): number | undefined {
  if (inv === undefined) return undefined;
  let index = podIndex.get(inv);
  if (index === undefined) {
    index = new Map(inv.byPod.map((p) => [p.uid, p.bytes]));
    podIndex.set(inv, index);
  }
  return index.get(uid);
}
