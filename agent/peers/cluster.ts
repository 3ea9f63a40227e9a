/**
 * The cluster's part of the peer classes, followed without a restart:
 * Node objects (this node -> node; others by topology.kubernetes.io/zone and
 * /region against this node's: same zone -> zone, other zone -> cross-zone,
 * other region -> cross-region; their spec.podCIDRs and status.addresses)
 * and networking.k8s.io/v1 ServiceCIDRs (-> service).
 *
 * Nodes are big objects and a cluster may have thousands: each one is
 * reduced to the few fields used as it arrives, never cached whole (no
 * informer). Each collection is listed and watched by the one reflector
 * (common/kube/reflector.ts: paged lists, resume, relist on 410, backoff).
 * A Node with a podCIDR that does not parse is logged and that CIDR skipped.
 * A Node's status.addresses are written by its kubelet (or whoever holds
 * the node's credentials): each must be one bare IP, never a prefix, so a
 * node publishing `0.0.0.0/0` cannot make every peer its own; anything else
 * is logged once per node and value, and skipped.
 * Nodes without zone labels are all in one (unnamed) zone. A cluster
 * without the ServiceCIDR API (before Kubernetes 1.33, or turned off) has
 * no `service` class: the classes from Nodes are published all the same
 * (logged once), and Service ClusterIPs count by the other rules.
 */
import type { Logger } from '../../common/log.ts';
import { isStatus, type KubeApi, type KubeObject } from '../../common/kube/api.ts';
import { Reflector } from '../../common/kube/reflector.ts';
import { parseAddress, parsePrefix, type Prefix } from './cidr.ts';
import type { ClusterPeers } from './table.ts';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const REGION_LABEL = 'topology.kubernetes.io/region';

export interface NodePeers {
  name: string;
  zone: string | undefined;
  region: string | undefined;
  prefixes: Prefix[];
}

/** The fields of a Node (as the API serves it) that peer classes read. */
export interface NodeFields {
  metadata?: { name?: string; labels?: Record<string, string> };
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  status?: { addresses?: { type: string; address: string }[] };
}

/** The fields of a networking.k8s.io/v1 ServiceCIDR that peer classes read. */
interface ServiceCidrFields {
  metadata?: { name?: string };
  spec?: { cidrs?: string[] };
}

/** Which field of a Node a skipped value was in. */
export type NodeField = 'podCIDR' | 'address';

/** The fields of a Node that peer classes use; podCIDRs that are not CIDRs and addresses that are not bare IPs go to `bad`. */
export function nodePeers(
  node: NodeFields,
  bad: (field: NodeField, value: string, why: string) => void,
): NodePeers | undefined {
  const name = node.metadata?.name;
  if (name === undefined) return undefined;
  const labels = node.metadata?.labels ?? {};
  const prefixes: Prefix[] = [];
  const cidrs = node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []);
  for (const cidr of cidrs) {
    try {
      prefixes.push(parsePrefix(cidr));
    } catch (err) {
      bad('podCIDR', cidr, (err as Error).message);
    }
  }
  for (const a of node.status?.addresses ?? []) {
    if (a.type !== 'InternalIP' && a.type !== 'ExternalIP') continue;
    try {
      prefixes.push(parseAddress(a.address));
    } catch (err) {
      bad('address', a.address, (err as Error).message);
    }
  }
  return { name, zone: labels[ZONE_LABEL], region: labels[REGION_LABEL], prefixes };
}

/** Which class another node's prefixes are from this node's point of view. */
export function nodeClass(
  self: NodePeers | undefined,
  other: NodePeers,
  selfName: string,
): 'node' | 'zone' | 'cross-zone' | 'cross-region' {
  if (other.name === selfName) return 'node';
  if (self?.region !== undefined && other.region !== undefined && self.region !== other.region) return 'cross-region';
  return (self?.zone ?? '') === (other.zone ?? '') ? 'zone' : 'cross-zone';
}

/** The cluster's peers from the nodes and Service CIDRs known now. */
export function clusterPeers(
  nodes: Iterable<NodePeers>,
  selfName: string,
  serviceCidrs: Iterable<Prefix>,
): ClusterPeers {
  const list = [...nodes];
  const self = list.find((n) => n.name === selfName);
  const out: Record<string, Prefix[]> = {
    node: [],
    zone: [],
    'cross-zone': [],
    'cross-region': [],
    service: [...serviceCidrs],
  };
  for (const n of list) out[nodeClass(self, n, selfName)]!.push(...n.prefixes);
  return out;
}

interface Collection<T> {
  path: string;
  /** The fields kept of one object, keyed by name; undefined drops it. */
  extract(obj: KubeObject): { name: string; value: T } | undefined;
}

/**
 * Lists and watches one collection, keeping only extracted values; calls
 * `onChange` (debounced) when they change, `onError` with each failure of
 * the list or watch (it is retried). Returns stop().
 */
function follow<T>(
  api: KubeApi,
  c: Collection<T>,
  onChange: (values: ReadonlyMap<string, T>) => void,
  log: Logger,
  onError?: (err: unknown) => void,
): () => Promise<void> {
  const values = new Map<string, T>();
  let stopped = false;
  let debounce: NodeJS.Timeout | undefined;
  const changed = () => {
    debounce ??= setTimeout(() => {
      debounce = undefined;
      if (!stopped) onChange(values);
    }, 200);
  };
  const put = (obj: KubeObject): void => {
    const got = c.extract(obj);
    if (got === undefined) return;
    if (JSON.stringify(values.get(got.name)) === JSON.stringify(got.value)) return;
    values.set(got.name, got.value);
    changed();
  };
  const reflector = new Reflector({
    api,
    path: c.path,
    shape: 'object',
    log,
    sync: (items) => {
      // A complete list: objects deleted while the watch was away go too.
      values.clear();
      for (const obj of items) {
        const got = c.extract(obj);
        if (got !== undefined) values.set(got.name, got.value);
      }
      changed();
    },
    event: (type, obj) => {
      if (type !== 'DELETED') return put(obj);
      const got = c.extract(obj);
      if (got !== undefined && values.delete(got.name)) changed();
    },
    ...(onError ? { onError } : {}),
  });
  void reflector.start();
  return async () => {
    stopped = true;
    clearTimeout(debounce);
    await reflector.stop();
  };
}

/** One Node's entry (plain JSON: the fields read are typed by NodeFields); values that do not parse go to `bad`. */
function nodeEntry(
  node: NodeFields,
  bad: (node: string | undefined, field: NodeField, value: string, why: string) => void,
): { name: string; value: NodePeers } | undefined {
  const peers = nodePeers(node, (field, value, why) => bad(node.metadata?.name, field, value, why));
  return peers && { name: peers.name, value: peers };
}

/** One ServiceCIDR's prefixes; a CIDR that does not parse is logged and skipped. */
function serviceCidrEntry(s: ServiceCidrFields, log: Logger): { name: string; value: Prefix[] } | undefined {
  const name = s.metadata?.name;
  if (name === undefined) return undefined;
  const prefixes: Prefix[] = [];
  for (const cidr of s.spec?.cidrs ?? []) {
    try {
      prefixes.push(parsePrefix(cidr));
    } catch (err) {
      log.warn(
        { serviceCIDR: name, cidr, why: (err as Error).message },
        'ServiceCIDR has a CIDR that does not parse: skipped',
      );
    }
  }
  return { name, value: prefixes };
}

export interface ClusterPeerWatch {
  stop(): Promise<void>;
}

/** Where ServiceCIDRs are listed (networking.k8s.io/v1, Kubernetes 1.33+). */
export const SERVICE_CIDRS_PATH = '/apis/networking.k8s.io/v1/servicecidrs';

/**
 * Follows Nodes and ServiceCIDRs; `onPeers` gets the whole cluster view after
 * each change. (`serviceCidrsPath`: a test points it at an API version the
 * test apiserver does not serve, which cannot run without the v1 one.)
 */
export function watchClusterPeers(
  api: KubeApi,
  nodeName: string,
  onPeers: (peers: ClusterPeers) => void,
  log: Logger,
  serviceCidrsPath = SERVICE_CIDRS_PATH,
): ClusterPeerWatch {
  let nodes: ReadonlyMap<string, NodePeers> = new Map();
  let services: ReadonlyMap<string, Prefix[]> = new Map();
  const reported = new Set<string>();
  const reportBad = (node: string | undefined, field: NodeField, value: string, why: string) => {
    const key = JSON.stringify([node, field, value]);
    if (reported.has(key)) return;
    reported.add(key);
    log.warn(
      { node, [field]: value, why },
      field === 'podCIDR'
        ? 'Node has a podCIDR that is not a CIDR: skipped'
        : 'Node has an address that is not a bare IP: skipped',
    );
  };
  // Until both have been listed once, a partial view would drop the other's prefixes from the trie.
  const synced = { nodes: false, services: false };
  const publish = () => {
    if (synced.nodes && synced.services) onPeers(clusterPeers(nodes.values(), nodeName, [...services.values()].flat()));
  };
  const stopNodes = follow<NodePeers>(
    api,
    {
      path: '/api/v1/nodes',
      extract: (obj) => nodeEntry(obj, reportBad),
    },
    (values) => {
      nodes = values;
      synced.nodes = true;
      publish();
    },
    log,
  );
  const stopServices = follow<Prefix[]>(
    api,
    {
      path: serviceCidrsPath,
      extract: (obj) => serviceCidrEntry(obj, log),
    },
    (values) => {
      services = values;
      synced.services = true;
      publish();
    },
    log,
    (err) => {
      // No ServiceCIDR API (404): there is no Service CIDR to know; the Nodes' classes must not wait for it.
      if (!isStatus(err, 404) || synced.services) return;
      synced.services = true;
      log.warn(
        { path: serviceCidrsPath },
        "the cluster has no ServiceCIDR API (Kubernetes before 1.33, or turned off): no service class; traffic to Service ClusterIPs counts by the other rules (external, unless a ClusterIP lies in a node's or configured range)",
      );
      void stopServices();
      publish();
    },
  );
  return {
    async stop() {
      await Promise.all([stopNodes(), stopServices()]);
    },
  };
}
