/**
 * BPF map memory as Prometheus gauges, read from the latest inventory at
 * scrape time (the inventory itself is refreshed on the agent's interval by
 * startMapInventory, so a scrape never walks /proc).
 *
 *   podmeter_node_bpf_map_memory_bytes                    every map once
 *   podmeter_bpf_map_memory_bytes{map_name,map_type,owner,namespace,pod}
 *       maps with the same labels summed, so series grow with distinct names,
 *       owners and pods, not with maps. owner is the comm of a holding process,
 *       or `program` / `pinned`. A map held by several owners or pods is in
 *       each of their series (see inventory.ts): sum() over this metric can
 *       exceed the node total.
 *   podmeter_pod_bpf_map_memory_bytes{namespace,pod,uid}  per pod, shared maps in each pod
 *
 * Before a pod's name is known (and always on a host without Kubernetes),
 * namespace and pod are "" in the per-pod series (as in the traffic metrics;
 * uid tells pods apart), and in the per-map series, which has no uid label,
 * namespace is "" and pod is the pod UID, so pods stay apart there too.
 */
import { labelText, type Exposition } from '../../common/http/exposition.ts';
import type { PodNamer } from '../kube/pods.ts';
import type { MapInventory } from './inventory.ts';

/** Namespace and pod labels of a pod UID: the names when known, else namespace "" and pod = uid. */
export function podLabels(uid: string, namer: PodNamer | undefined): { namespace: string; pod: string } {
  const name = namer?.(uid);
  return name ?? { namespace: '', pod: uid };
}

export function addMapMetrics(
  exposition: Exposition,
  getInventory: () => MapInventory | undefined,
  podNamer?: () => PodNamer | undefined,
): void {
  exposition.add({
    name: 'podmeter_node_bpf_map_memory_bytes',
    help: "Kernel memory of all BPF maps on the node (fdinfo memlock; podmeter's own cgroup storage estimated), each map counted once.",
    type: 'gauge',
    samples(emit) {
      const inv = getInventory();
      if (inv !== undefined) emit('', inv.totalBytes);
    },
  });

  // The per-label sums change only with the inventory (every --maps-interval) and with the names
  // of the pods holding maps: kept between scrapes, so a scrape at thousands of maps only prints.
  let cached: { inv: MapInventory; pods: string; samples: [string, number][] } | undefined;
  exposition.add({
    name: 'podmeter_bpf_map_memory_bytes',
    help: 'Kernel memory of BPF maps by map name, type, owner (comm of a holding process, or program / pinned) and pod; maps with equal labels summed, a shared map in each of its owners and pods.',
    type: 'gauge',
    samples(emit) {
      const inv = getInventory();
      if (inv === undefined) return;
      const namer = podNamer?.();
      const pods = inv.byPod.map((p) => JSON.stringify(podLabels(p.uid, namer))).join();
      if (cached?.inv !== inv || cached.pods !== pods) cached = { inv, pods, samples: mapSums(inv, namer) };
      for (const [labels, bytes] of cached.samples) emit(labels, bytes);
    },
  });

  exposition.add({
    name: 'podmeter_pod_bpf_map_memory_bytes',
    help: 'Kernel memory of the BPF maps held by processes of each pod; a map shared by several pods counts in each.',
    type: 'gauge',
    samples(emit) {
      const inv = getInventory();
      if (inv === undefined) return;
      const namer = podNamer?.();
      for (const p of inv.byPod)
        emit(labelText({ ...(namer?.(p.uid) ?? { namespace: '', pod: '' }), uid: p.uid }), p.bytes);
    },
  });
}

/** podmeter_bpf_map_memory_bytes's samples: each distinct label set that holds a map gets it once. */
function mapSums(inv: MapInventory, namer: PodNamer | undefined): [string, number][] {
  const sums = new Map<string, number>();
  for (const map of inv.maps) {
    const seen = new Set<string>();
    const sets =
      map.processes.length === 0
        ? [{ owner: map.owner as string, namespace: '', pod: '' }]
        : map.processes.map((p) => ({
            owner: p.comm,
            ...(p.podUid === undefined ? { namespace: '', pod: '' } : podLabels(p.podUid, namer)),
          }));
    for (const set of sets) {
      const labels = labelText({ map_name: map.name, map_type: map.type, ...set });
      if (seen.has(labels)) continue;
      seen.add(labels);
      sums.set(labels, (sums.get(labels) ?? 0) + map.bytes);
    }
  }
  return [...sums];
}
