/**
 * The cluster's part of the peer classes, followed without a restart:
 * Node objects (this node -> node; others by topology.kubernetes.io/zone and
 * /region against this node's: same zone -> zone, other zone -> cross-zone,
 * other region -> cross-region; their spec.podCIDRs and status.addresses)
 * and networking.k8s.io/v1 ServiceCIDRs (-> service).
 *
 * Nodes are big objects and a cluster may have thousands: each one is
 * reduced to the few fields used as it arrives, never cached whole (no
 * informer). Each collection is listed, then watched from the list's
 * resourceVersion; any watch end or error relists after a backoff. A Node
 * with a podCIDR that does not parse is logged and that CIDR skipped.
 * Nodes without zone labels are all in one (unnamed) zone.
 */
import { CoreV1Api, NetworkingV1Api, Watch, type KubeConfig, type V1Node, type V1ServiceCIDR } from '@kubernetes/client-node';
import type { Logger } from '../log.ts';
import { describe } from '../kube/pods.ts';
import { parsePrefix, type Prefix } from './cidr.ts';
import type { ClusterPeers } from './table.ts';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const REGION_LABEL = 'topology.kubernetes.io/region';

export interface NodePeers {
  name: string;
  zone: string | undefined;
  region: string | undefined;
  prefixes: Prefix[];
}

/** The fields of a Node that peer classes use; bad podCIDRs go to `bad`. */
export function nodePeers(node: V1Node, bad: (cidr: string, why: string) => void): NodePeers | undefined {
  const name = node.metadata?.name;
  if (name === undefined) return undefined;
  const labels = node.metadata?.labels ?? {};
  const prefixes: Prefix[] = [];
  const cidrs = node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []);
  for (const cidr of cidrs) {
    try {
      prefixes.push(parsePrefix(cidr));
    } catch (err) {
      bad(cidr, (err as Error).message);
    }
  }
  for (const a of node.status?.addresses ?? []) {
    if (a.type !== 'InternalIP' && a.type !== 'ExternalIP') continue;
    try {
      prefixes.push(parsePrefix(a.address));
    } catch {
      // a malformed address on a Node: nothing to match it against
    }
  }
  return { name, zone: labels[ZONE_LABEL], region: labels[REGION_LABEL], prefixes };
}

/** Which class another node's prefixes are from this node's point of view. */
export function nodeClass(self: NodePeers | undefined, other: NodePeers, selfName: string): 'node' | 'zone' | 'cross-zone' | 'cross-region' {
  if (other.name === selfName) return 'node';
  if (self?.region !== undefined && other.region !== undefined && self.region !== other.region) return 'cross-region';
  return (self?.zone ?? '') === (other.zone ?? '') ? 'zone' : 'cross-zone';
}

/** The cluster's peers from the nodes and Service CIDRs known now. */
export function clusterPeers(nodes: Iterable<NodePeers>, selfName: string, serviceCidrs: Iterable<Prefix>): ClusterPeers {
  const list = [...nodes];
  const self = list.find((n) => n.name === selfName);
  const out: Record<string, Prefix[]> = { node: [], zone: [], 'cross-zone': [], 'cross-region': [], service: [...serviceCidrs] };
  for (const n of list) out[nodeClass(self, n, selfName)]!.push(...n.prefixes);
  return out as ClusterPeers;
}

interface Collection<T> {
  /** A page of the list: items and what to ask for the next page (undefined: done). */
  list(continueToken: string | undefined): Promise<{ items: unknown[]; resourceVersion: string | undefined; next: string | undefined }>;
  path: string;
  /** The fields kept of one object, keyed by name; undefined drops it. */
  extract(obj: unknown): { name: string; value: T } | undefined;
}

/**
 * Lists and watches one collection, keeping only extracted values; calls
 * `onChange` (debounced) when they change. Returns stop().
 */
function follow<T>(kc: KubeConfig, c: Collection<T>, onChange: (values: ReadonlyMap<string, T>) => void, log: Logger, what: string): () => void {
  const values = new Map<string, T>();
  let stopped = false;
  let abort: AbortController | undefined;
  let retry: NodeJS.Timeout | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let delayMs = 1000;
  let warned = false;
  const changed = () => {
    debounce ??= setTimeout(() => {
      debounce = undefined;
      if (!stopped) onChange(values);
    }, 200);
  };
  const put = (obj: unknown): void => {
    const got = c.extract(obj);
    if (got === undefined) return;
    if (JSON.stringify(values.get(got.name)) === JSON.stringify(got.value)) return;
    values.set(got.name, got.value);
    changed();
  };
  const restart = (err: unknown) => {
    if (stopped) return;
    if (!warned) log.warn({ err: describe(err), what, retryInMs: delayMs }, 'peer class watch failed; retrying');
    warned = true;
    clearTimeout(retry);
    retry = setTimeout(() => void run(), delayMs);
    delayMs = Math.min(delayMs * 2, 30_000);
  };
  const run = async (): Promise<void> => {
    try {
      const fresh = new Map<string, T>();
      let token: string | undefined;
      let resourceVersion: string | undefined;
      do {
        const page = await c.list(token);
        for (const obj of page.items) {
          const got = c.extract(obj);
          if (got !== undefined) fresh.set(got.name, got.value);
        }
        resourceVersion = page.resourceVersion;
        token = page.next;
      } while (token !== undefined);
      if (stopped) return;
      values.clear();
      for (const [k, v] of fresh) values.set(k, v);
      changed();
      delayMs = 1000;
      warned = false;
      abort = await new Watch(kc).watch(
        c.path,
        { resourceVersion, allowWatchBookmarks: true },
        (type: string, obj: unknown) => {
          if (type === 'ADDED' || type === 'MODIFIED') put(obj);
          else if (type === 'DELETED') {
            const got = c.extract(obj);
            if (got !== undefined && values.delete(got.name)) changed();
          }
        },
        (err: unknown) => {
          // The watch ended (timeout, 410 Gone, the API server away): list again.
          if (!stopped) err ? restart(err) : void run();
        },
      );
    } catch (err) {
      restart(err);
    }
  };
  void run();
  return () => {
    stopped = true;
    clearTimeout(retry);
    clearTimeout(debounce);
    abort?.abort();
  };
}

export interface ClusterPeerWatch {
  stop(): void;
}

/** Follows Nodes and ServiceCIDRs; `onPeers` gets the whole cluster view after each change. */
export function watchClusterPeers(kc: KubeConfig, nodeName: string, onPeers: (peers: ClusterPeers) => void, log: Logger): ClusterPeerWatch {
  const core = kc.makeApiClient(CoreV1Api);
  const networking = kc.makeApiClient(NetworkingV1Api);
  let nodes: ReadonlyMap<string, NodePeers> = new Map();
  let services: ReadonlyMap<string, Prefix[]> = new Map();
  const reported = new Set<string>();
  // Until both have been listed once, a partial view would drop the other's prefixes from the trie.
  const synced = { nodes: false, services: false };
  const publish = () => {
    if (synced.nodes && synced.services) onPeers(clusterPeers(nodes.values(), nodeName, [...services.values()].flat()));
  };
  const stopNodes = follow<NodePeers>(
    kc,
    {
      path: '/api/v1/nodes',
      list: async (next) => {
        const r = await core.listNode({ limit: 500, ...(next ? { _continue: next } : {}) });
        return { items: r.items, resourceVersion: r.metadata?.resourceVersion, next: r.metadata?._continue || undefined };
      },
      extract: (obj) => {
        const node = obj as V1Node;
        const peers = nodePeers(node, (cidr, why) => {
          const key = `${node.metadata?.name}/${cidr}`;
          if (reported.has(key)) return;
          reported.add(key);
          log.warn({ node: node.metadata?.name, podCIDR: cidr, why }, 'Node has a podCIDR that is not a CIDR: skipped');
        });
        return peers && { name: peers.name, value: peers };
      },
    },
    (values) => {
      nodes = values;
      synced.nodes = true;
      publish();
    },
    log,
    'nodes',
  );
  const stopServices = follow<Prefix[]>(
    kc,
    {
      path: '/apis/networking.k8s.io/v1/servicecidrs',
      list: async (next) => {
        const r = await networking.listServiceCIDR({ limit: 500, ...(next ? { _continue: next } : {}) });
        return { items: r.items, resourceVersion: r.metadata?.resourceVersion, next: r.metadata?._continue || undefined };
      },
      extract: (obj) => {
        const s = obj as V1ServiceCIDR;
        const name = s.metadata?.name;
        if (name === undefined) return undefined;
        const prefixes: Prefix[] = [];
        for (const cidr of s.spec?.cidrs ?? []) {
          try {
            prefixes.push(parsePrefix(cidr));
          } catch (err) {
            log.warn({ serviceCIDR: name, cidr, why: (err as Error).message }, 'ServiceCIDR has a CIDR that does not parse: skipped');
          }
        }
        return { name, value: prefixes };
      },
    },
    (values) => {
      services = values;
      synced.services = true;
      publish();
    },
    log,
    'servicecidrs',
  );
  return {
    stop() {
      stopNodes();
      stopServices();
    },
  };
}
