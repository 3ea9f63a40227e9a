/**
 * What check 8 of node.test.ts reads besides Prometheus's answers: the
 * Grafana dashboard's queries with the template variables filled in as
 * Grafana fills them, and OpenCost's network allocation queries, as its
 * source writes them.
 */

/** One query of a dashboard panel. */
export interface PanelQuery {
  panel: string;
  /** The panel's unit (fieldConfig.defaults.unit): Bps, bytes, pps, ... */
  unit: string;
  expr: string;
}

interface DashboardJson {
  panels: {
    type: string;
    title: string;
    fieldConfig?: { defaults?: { unit?: string } };
    targets?: { expr: string }[];
  }[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
}

/** Every panel query of a dashboard's JSON (rows have none). */
export function panelQueries(json: string): PanelQuery[] {
  const d = JSON.parse(json) as DashboardJson;
  return d.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({ panel: p.title, unit: p.fieldConfig?.defaults?.unit ?? '', expr: t.expr })),
  );
}

/** The dashboard's query variables: name and `label_values(metric, label)`. */
export function queryVariables(json: string): { name: string; metric: string; label: string }[] {
  const d = JSON.parse(json) as DashboardJson;
  return d.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => {
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      const m = /^label_values\((\w+), (\w+)\)$/.exec(q);
      if (!m) throw new Error(`variable ${v.name}: a query the test does not know: ${q}`);
      return { name: v.name, metric: m[1]!, label: m[2]! };
    });
}

/**
 * A panel's query as Grafana sends it: `$name` of each variable replaced by
 * its value (a single value, as when one is picked), `$__rate_interval` by
 * a duration. Throws when a `$` variable is left.
 */
export function fillVariables(expr: string, values: Record<string, string>, rateInterval: string): string {
  let out = expr.replaceAll('$__rate_interval', rateInterval);
  for (const [name, value] of Object.entries(values)) out = out.replace(new RegExp(`\\$${name}\\b`, 'g'), value);
  const left = /\$\w+/.exec(out);
  if (left) throw new Error(`${expr}: variable ${left[0]} not filled`);
  return out;
}

/**
 * OpenCost's network allocation queries, verbatim from its source:
 * pkg/costmodel/allocation.go (queryFmtNetZoneGiB, queryFmtNetRegionGiB,
 * queryFmtNetInternetGiB) of github.com/opencost/opencost at commit
 * 5f6533303e3850c8635796a74bb22802d16e9090 (2024-10-24). OpenCost fills the
 * three %s with its cluster filter (env.GetPromClusterFilter(): empty unless
 * CURRENT_CLUSTER_ID_FILTER_ENABLED), the window, and its cluster label
 * (env.GetPromClusterLabel(): PROM_CLUSTER_ID_LABEL, default cluster_id);
 * applyNetworkAllocation (allocation_helpers.go) keys each result by
 * cluster (the label, else its own cluster id), namespace and pod (the
 * `pod` label, else `pod_name`), and multiplies its GiB by the price per GiB
 * of the class.
 */
export const OPENCOST_NETWORK_QUERIES = {
  zone: `sum(increase(kubecost_pod_network_egress_bytes_total{internet="false", same_zone="false", same_region="true", %s}[%s])) by (pod_name, namespace, %s) / 1024 / 1024 / 1024`,
  region: `sum(increase(kubecost_pod_network_egress_bytes_total{internet="false", same_zone="false", same_region="false", %s}[%s])) by (pod_name, namespace, %s) / 1024 / 1024 / 1024`,
  internet: `sum(increase(kubecost_pod_network_egress_bytes_total{internet="true", %s}[%s])) by (pod_name, namespace, %s) / 1024 / 1024 / 1024`,
} as const;

/** fmt.Sprintf of one of those formats with OpenCost's defaults: no cluster filter, `window`, cluster_id. */
export function opencostQuery(format: string, window: string): string {
  const args = ['', window, 'cluster_id'];
  const out = format.replace(/%s/g, () => args.shift() ?? '%!s(MISSING)');
  if (args.length !== 0) throw new Error(`${format}: ${args.length} arguments left`);
  return out;
}
