/**
 * `podmeter top pods|namespaces|workloads|nodes` (also `kubectl podmeter
 * top ...`): cluster-wide totals, like `kubectl top`. Pods come from the
 * agents' Pod annotations (a metadata-only list); namespaces, workloads
 * and nodes from the operator's NamespaceUsage, WorkloadUsage and
 * NodeUsage objects, whose totals include pods that have ended.
 * `-o json` prints exact decimal strings (totals pass 2^53). CROSS-ZONE and
 * EXTERNAL are egress bytes to other zones of the region and outside the
 * cluster (the billed peer classes; cross-region is in the JSON).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { KubeConnection } from '../common/kube/connection.ts';
import { ConfigError, defineFlags, formatHelp, invalid, parseFlags, wantsHelp } from '../common/flags/parse.ts';
import { kubernetesName, oneOf, pathValue, switchFlag } from '../common/flags/values.ts';
import { bytes, table } from '../common/format.ts';
import { CLASS_FIELDS } from '../common/contract/counts.ts';
import type { TopClusterRow, TopWhat } from './clusterRows.ts';

export type { TopClusterRow, TopWhat };

const ALIASES: Readonly<Record<string, TopWhat>> = {
  pods: 'pods',
  pod: 'pods',
  po: 'pods',
  namespaces: 'namespaces',
  namespace: 'namespaces',
  ns: 'namespaces',
  workloads: 'workloads',
  workload: 'workloads',
  wl: 'workloads',
  nodes: 'nodes',
  node: 'nodes',
  no: 'nodes',
};

/** Flags of either `podmeter top` mode that take a separate value (`--sort name`): their values are not positionals. */
const VALUE_FLAGS = new Set([
  '--agent',
  '--interval',
  '--sort',
  '--limit',
  '-n',
  '--kubeconfig',
  '--namespace',
  '--output',
  '-o',
]);

/**
 * What `podmeter top` shows in cluster mode, from its first positional
 * (pods, namespaces, workloads, nodes or a short form), else undefined:
 * cli/top.ts dispatches on it.
 */
export function clusterTopTarget(argv: readonly string[]): TopWhat | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return ALIASES[argv[i + 1] ?? ''];
    if (VALUE_FLAGS.has(arg)) i++;
    else if (!arg.startsWith('-')) return Object.hasOwn(ALIASES, arg) ? ALIASES[arg] : undefined;
  }
  return undefined;
}

const topClusterFlags = defineFlags({
  kubeconfig: {
    metavar: 'PATH',
    help: 'kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)',
    parse: pathValue,
  },
  sort: {
    metavar: 'total|ingress|egress|cross-zone|external|pods|name',
    help: 'Sort order (largest first; name: alphabetical)',
    parse: oneOf(['total', 'ingress', 'egress', 'cross-zone', 'external', 'pods', 'name']),
    default: 'total',
    env: false,
  },
  limit: {
    metavar: 'N',
    short: 'n',
    help: 'Show at most N rows (0: all)',
    parse: (raw: string) =>
      /^\d+$/.test(raw.trim())
        ? Number(raw.trim())
        : invalid(
            'is not a number of rows (-n limits the rows as in podmeter top; for a namespace use --namespace NS)',
          ),
    default: 0,
    env: false,
  },
  'all-namespaces': switchFlag('Pods and workloads of every namespace', { short: 'A', env: false }),
  namespace: {
    metavar: 'NS',
    help: "Pods and workloads of this namespace (default: the kubeconfig context's, else default); namespaces: only this one",
    parse: kubernetesName,
    env: false,
  },
  output: {
    metavar: 'table|json',
    short: 'o',
    help: 'Output format',
    parse: oneOf(['table', 'json']),
    default: 'table',
    env: false,
  },
});

export const topClusterHelp = formatHelp(topClusterFlags, {
  usage:
    'podmeter top pods|namespaces|workloads|nodes [--kubeconfig PATH] [--sort KEY] [-n N] [-A | --namespace NS] [-o json]',
  summary:
    "Cluster-wide network totals (bytes received and sent) like kubectl top: pods from their podmeter annotations, namespaces, workloads and nodes from the operator's usage objects (including pods that have ended).",
  notes:
    'CROSS-ZONE and EXTERNAL: bytes sent to other zones of the region and outside the cluster (the peer classes clouds bill; -o json adds cross-region). ' +
    "Also 'kubectl podmeter top ...'. Without pods|namespaces|workloads|nodes, 'podmeter top' shows one node's live rates from its agent.",
});

export async function runTopCluster(argv: string[]): Promise<void> {
  if (wantsHelp(argv)) return void process.stdout.write(topClusterHelp);
  const { values, positionals } = parseFlags(topClusterFlags, argv, process.env);
  const [first, extra] = positionals;
  const what = first !== undefined && Object.hasOwn(ALIASES, first) ? ALIASES[first] : undefined;
  if (what === undefined)
    throw new ConfigError(
      `podmeter top: expected pods, namespaces, workloads or nodes, not ${JSON.stringify(first ?? '')}`,
    );
  if (extra !== undefined) throw new ConfigError(`unexpected argument ${JSON.stringify(extra)}`);
  if (values['all-namespaces'] && values.namespace !== undefined)
    throw new ConfigError('-A and --namespace exclude each other', '--namespace');
  const connection = await connect(values.kubeconfig);
  // Loaded only here: the node-local 'podmeter top' (which dispatches through this file) stays light.
  const { KubeApi } = await import('../common/kube/api.ts');
  const { readRows } = await import('./clusterRows.ts');
  const api = new KubeApi(connection);
  const namespace = values['all-namespaces']
    ? undefined
    : (values.namespace ??
      (what === 'namespaces' || what === 'nodes' ? undefined : (connection.namespace ?? 'default')));
  const rows = await readRows(api, what, namespace);
  const sorted = sortRows(rows, values.sort);
  const shown = values.limit > 0 ? sorted.slice(0, values.limit) : sorted;
  process.stdout.write(
    values.output === 'json' ? renderJson(what, shown) : renderTable(what, shown, namespace === undefined),
  );
}

/** --kubeconfig, else $KUBECONFIG (its first file that exists), else ~/.kube/config, else the in-cluster service account. */
async function connect(path: string | undefined): Promise<KubeConnection> {
  const { loadConnection } = await import('../common/kube/connection.ts');
  const fallback = [
    ...(process.env.KUBECONFIG ?? '').split(':').filter((p) => p !== ''),
    join(homedir(), '.kube', 'config'),
  ].find((p) => existsSync(p));
  const connection = await loadConnection(path ?? fallback);
  if (connection === undefined)
    throw new Error('no Kubernetes cluster configured: pass --kubeconfig or set KUBECONFIG');
  return connection;
}

export type TopSort = 'total' | 'ingress' | 'egress' | 'cross-zone' | 'external' | 'pods' | 'name';

export function sortRows(rows: TopClusterRow[], sort: TopSort): TopClusterRow[] {
  const label = (r: TopClusterRow) => `${r.namespace ?? ''}/${r.kind ?? ''}/${r.name}`;
  const key = (r: TopClusterRow): bigint => {
    switch (sort) {
      case 'ingress':
        return r.ingressBytes;
      case 'egress':
        return r.egressBytes;
      case 'cross-zone':
        return r.egressCrossZoneBytes;
      case 'external':
        return r.egressExternalBytes;
      case 'pods':
        return BigInt(r.pods ?? 0);
      default:
        return r.ingressBytes + r.egressBytes;
    }
  };
  return [...rows].sort((a, b) => {
    if (sort !== 'name') {
      const ka = key(a);
      const kb = key(b);
      if (ka !== kb) return kb > ka ? 1 : -1;
    }
    return label(a).localeCompare(label(b));
  });
}

export function renderJson(what: TopWhat, rows: TopClusterRow[]): string {
  const items = rows.map((r) => ({
    ...(r.namespace !== undefined ? { namespace: r.namespace } : {}),
    ...(r.kind !== undefined ? { kind: r.kind } : {}),
    name: r.name,
    ingressBytes: String(r.ingressBytes),
    egressBytes: String(r.egressBytes),
    ingressPackets: String(r.ingressPackets),
    egressPackets: String(r.egressPackets),
    ...Object.fromEntries(CLASS_FIELDS.map((f) => [f, String(r[f])])),
    ...(r.pods !== undefined ? { pods: r.pods, retiredPods: r.retiredPods ?? 0 } : {}),
    ...(r.bpfMapBytes !== undefined ? { bpfMapBytes: String(r.bpfMapBytes) } : {}),
    ...(r.updated !== undefined ? { updated: r.updated } : {}),
  }));
  return `${JSON.stringify({ kind: what, items }, null, 2)}\n`;
}

export function renderTable(what: TopWhat, rows: TopClusterRow[], allNamespaces: boolean): string {
  if (rows.length === 0) return `No ${what} with podmeter counts found.\n`;
  const TRAFFIC = ['INGRESS', 'EGRESS', 'CROSS-ZONE', 'EXTERNAL'];
  const traffic = (r: TopClusterRow) => [
    bytes(r.ingressBytes),
    bytes(r.egressBytes),
    bytes(r.egressCrossZoneBytes),
    bytes(r.egressExternalBytes),
  ];
  switch (what) {
    case 'pods':
      return table(
        [...(allNamespaces ? ['NAMESPACE'] : []), 'NAME', ...TRAFFIC, 'PACKETS IN', 'PACKETS OUT', 'UPDATED'],
        rows.map((r) => [
          ...(allNamespaces ? [r.namespace ?? ''] : []),
          r.name,
          ...traffic(r),
          String(r.ingressPackets),
          String(r.egressPackets),
          age(r.updated),
        ]),
      );
    case 'namespaces':
      return table(
        ['NAME', ...TRAFFIC, 'PODS', 'ENDED PODS'],
        rows.map((r) => [r.name, ...traffic(r), String(r.pods ?? 0), String(r.retiredPods ?? 0)]),
      );
    case 'workloads':
      return table(
        [...(allNamespaces ? ['NAMESPACE'] : []), 'KIND', 'NAME', ...TRAFFIC, 'PODS', 'ENDED PODS'],
        rows.map((r) => [
          ...(allNamespaces ? [r.namespace ?? ''] : []),
          r.kind ?? '',
          r.name,
          ...traffic(r),
          String(r.pods ?? 0),
          String(r.retiredPods ?? 0),
        ]),
      );
    case 'nodes':
      return table(
        ['NAME', ...TRAFFIC, 'PODS', 'BPF MAPS'],
        rows.map((r) => [
          r.name,
          ...traffic(r),
          String(r.pods ?? 0),
          r.bpfMapBytes === undefined ? '-' : bytes(r.bpfMapBytes),
        ]),
      );
  }
}

/** "42s ago", "3m ago": how old an RFC 3339 time is. */
function age(iso: string | undefined): string {
  const t = iso === undefined ? NaN : Date.parse(iso);
  if (!Number.isFinite(t)) return '-';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}
