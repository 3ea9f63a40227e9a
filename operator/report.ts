/**
 * Reading the cluster's podmeter numbers for clients (`podmeter top` in
 * cluster mode): pods from their annotations (a metadata-only list), and
 * namespaces, workloads and nodes from the operator's usage objects, whose
 * totals include pods that have ended. Exact bigints throughout.
 */
import { ACCEPT_METADATA_LIST, ApiError, type KubeApi, type KubeObject } from './kube/api.ts';
import { NAMESPACE_LABEL, usagePath, type UsageKind, type UsageObject } from './usage.ts';
import { countsFromAnnotations, fromStrings, POD_ANNOTATIONS, zero } from './counts.ts';

export type TopWhat = 'pods' | 'namespaces' | 'workloads' | 'nodes';

export interface TopClusterRow {
  name: string;
  namespace?: string;
  kind?: string;
  node?: string;
  ingressBytes: bigint;
  egressBytes: bigint;
  ingressPackets: bigint;
  egressPackets: bigint;
  pods?: number;
  retiredPods?: number;
  bpfMapBytes?: bigint;
  updated?: string;
}

export async function readRows(api: KubeApi, what: TopWhat, namespace: string | undefined): Promise<TopClusterRow[]> {
  try {
    if (what === 'pods') return await podRows(api, namespace);
    const kind: UsageKind = what === 'namespaces' ? 'NamespaceUsage' : what === 'workloads' ? 'WorkloadUsage' : 'NodeUsage';
    const selector = what === 'workloads' && namespace !== undefined ? `${NAMESPACE_LABEL}=${namespace}` : undefined;
    const objects = await listAll<UsageObject>(api, usagePath(kind), selector);
    return objects.filter((o) => !(what === 'namespaces' && namespace !== undefined && o.metadata.name !== namespace)).map((o) => usageRow(what, o));
  } catch (err) {
    if (err instanceof ApiError && err.code === 404 && what !== 'pods') {
      throw new Error(`the podmeter custom resources are not installed (no ${what === 'namespaces' ? 'namespaceusages' : what === 'workloads' ? 'workloadusages' : 'nodeusages'}.podmeter.io): install the chart (helm/podmeter) with the operator`, { cause: err });
    }
    if (err instanceof ApiError) throw new Error(err.message, { cause: err });
    throw new Error(`cannot reach the Kubernetes API at ${api.server}: ${(err as Error).message}`, { cause: err });
  }
}

async function listAll<T>(api: KubeApi, path: string, labelSelector?: string, accept?: string): Promise<T[]> {
  const out: T[] = [];
  let cont: string | undefined;
  do {
    const page = await api.get<{ items?: T[]; metadata?: { continue?: string } }>(path, { query: { limit: 500, continue: cont, labelSelector }, ...(accept ? { accept } : {}), timeoutMs: 60_000 });
    out.push(...(page.items ?? []));
    cont = page.metadata?.continue || undefined;
  } while (cont !== undefined);
  return out;
}

async function podRows(api: KubeApi, namespace: string | undefined): Promise<TopClusterRow[]> {
  const path = namespace === undefined ? '/api/v1/pods' : `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
  const pods = await listAll<KubeObject>(api, path, undefined, ACCEPT_METADATA_LIST);
  const rows: TopClusterRow[] = [];
  for (const p of pods) {
    const a = p.metadata?.annotations;
    if (a?.[POD_ANNOTATIONS.ingressBytes] === undefined && a?.[POD_ANNOTATIONS.egressBytes] === undefined) continue; // not counted (yet)
    const { counts } = countsFromAnnotations(a, undefined);
    rows.push({ name: p.metadata?.name ?? '', namespace: p.metadata?.namespace ?? '', ...counts, ...(a?.[POD_ANNOTATIONS.updated] ? { updated: a[POD_ANNOTATIONS.updated] } : {}) });
  }
  return rows;
}

function usageRow(what: TopWhat, o: UsageObject): TopClusterRow {
  const s = o.status;
  const counts = fromStrings(s) ?? zero(); // a status the operator has not written yet
  const row: TopClusterRow = { name: what === 'workloads' ? (o.spec?.name ?? o.metadata.name) : o.metadata.name, ...counts, pods: s?.pods ?? 0, retiredPods: s?.retiredPods ?? 0 };
  if (what === 'workloads') {
    row.namespace = o.spec?.namespace ?? '';
    row.kind = o.spec?.kind ?? '';
  }
  if (what === 'nodes' && s?.bpfMapBytes !== undefined && /^\d+$/.test(s.bpfMapBytes)) row.bpfMapBytes = BigInt(s.bpfMapBytes);
  if (s?.updated) row.updated = s.updated;
  return row;
}
