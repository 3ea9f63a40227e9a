/**
 * Reading the cluster's podmeter numbers for clients (`podmeter top` in
 * cluster mode): pods from their annotations (a metadata-only list), and
 * namespaces, workloads and nodes from the operator's usage objects, whose
 * totals include pods that have ended. Exact bigints throughout.
 */
import { ACCEPT_METADATA_LIST, ApiError, isStatus, type KubeApi, type KubeObject } from '../common/kube/api.ts';
import {
  GROUP,
  NAMESPACE_LABEL,
  PLURAL,
  usagePath,
  type UsageKind,
  type UsageObject,
} from '../common/contract/usage.ts';
import { fromStrings, zero, type Counts } from '../common/contract/counts.ts';
import { ANNOTATIONS, countsFromAnnotations, hasCounts } from '../common/contract/annotations.ts';
import { listAll } from '../common/kube/list.ts';

export type TopWhat = 'pods' | 'namespaces' | 'workloads' | 'nodes';

/** One row: the counts (totals and egress bytes to the billed peer classes) and what the row is. */
export interface TopClusterRow extends Counts {
  name: string;
  namespace?: string;
  kind?: string;
  node?: string;
  pods?: number;
  retiredPods?: number;
  bpfMapBytes?: bigint;
  updated?: string;
}

export async function readRows(api: KubeApi, what: TopWhat, namespace: string | undefined): Promise<TopClusterRow[]> {
  const kind: UsageKind =
    what === 'namespaces' ? 'NamespaceUsage' : what === 'workloads' ? 'WorkloadUsage' : 'NodeUsage';
  try {
    if (what === 'pods') return await podRows(api, namespace);
    const selector = what === 'workloads' && namespace !== undefined ? `${NAMESPACE_LABEL}=${namespace}` : undefined;
    const objects = await listAll<UsageObject>(api, usagePath(kind), { query: { labelSelector: selector } });
    return objects
      .filter((o) => !(what === 'namespaces' && namespace !== undefined && o.metadata.name !== namespace))
      .map((o) => usageRow(what, o));
  } catch (err) {
    if (isStatus(err, 404) && what !== 'pods') {
      throw new Error(
        `the podmeter custom resources are not installed (no ${PLURAL[kind]}.${GROUP}): install the chart (helm/podmeter) with the operator`,
        { cause: err },
      );
    }
    if (err instanceof ApiError) throw new Error(err.message, { cause: err });
    throw new Error(`cannot reach the Kubernetes API at ${api.server}: ${(err as Error).message}`, { cause: err });
  }
}

async function podRows(api: KubeApi, namespace: string | undefined): Promise<TopClusterRow[]> {
  const path = namespace === undefined ? '/api/v1/pods' : `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
  const pods = await listAll<KubeObject>(api, path, { accept: ACCEPT_METADATA_LIST });
  const rows: TopClusterRow[] = [];
  for (const p of pods) {
    const a = p.metadata?.annotations;
    if (!hasCounts(a)) continue; // not counted (yet)
    const { counts } = countsFromAnnotations(a, undefined);
    const updated = a?.[ANNOTATIONS.updated];
    rows.push({
      name: p.metadata?.name ?? '',
      namespace: p.metadata?.namespace ?? '',
      ...counts,
      ...(updated ? { updated } : {}),
    });
  }
  return rows;
}

function usageRow(what: TopWhat, o: UsageObject): TopClusterRow {
  const s = o.status;
  const counts = fromStrings(s) ?? zero(); // a status the operator has not written yet
  const row: TopClusterRow = {
    name: what === 'workloads' ? (o.spec?.name ?? o.metadata.name) : o.metadata.name,
    ...counts,
    pods: s?.pods ?? 0,
    retiredPods: s?.retiredPods ?? 0,
  };
  if (what === 'workloads') {
    row.namespace = o.spec?.namespace ?? '';
    row.kind = o.spec?.kind ?? '';
  }
  if (what === 'nodes' && s?.bpfMapBytes !== undefined && /^\d+$/.test(s.bpfMapBytes))
    row.bpfMapBytes = BigInt(s.bpfMapBytes);
  if (s?.updated) row.updated = s.updated;
  return row;
}
