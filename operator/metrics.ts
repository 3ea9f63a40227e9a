/**
 * The operator's Prometheus metrics. Rollups are read from
 * the ledger at scrape time and exported by the leader only (a standby
 * exporting them too would double every sum over replicas); the self
 * metrics come from every replica.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import { Exposition, labelText, type LabelledCounter } from '../common/http/exposition.ts';
import type { Ledger, UsageTotal } from './ledger/ledger.ts';
import type { UsageKind } from '../common/contract/usage.ts';
import { CLASS_FIELDS, PEER_CLASS_OF } from '../common/contract/counts.ts';
import { OPERATOR_ERROR_OPS, type OperatorErrorOp } from './errors.ts';

export interface OperatorMetrics {
  exposition: Exposition;
  reconcile: Histogram;
  errors: LabelledCounter<'op', OperatorErrorOp>;
}

export function createOperatorMetrics(options: {
  ledger: Ledger;
  isLeader: () => boolean;
  pods: () => number;
}): OperatorMetrics {
  const exposition = new Exposition();
  const { registry } = exposition;
  const { ledger } = options;

  addRollups(exposition, ledger);
  new Gauge({
    name: 'podmeter_operator_leader',
    help: '1 when this replica is the leader (writes the ledger and the budget), else 0.',
    registers: [registry],
    collect() {
      this.set(options.isLeader() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'podmeter_operator_pods',
    help: 'Pods the operator keeps (from its metadata-only watch).',
    registers: [registry],
    collect() {
      this.set(options.pods());
    },
  });
  new Gauge({
    name: 'podmeter_operator_quarantined_pods',
    help: "Pods whose data their NodeUsage cannot hold (a value past a CRD field's limit): left out of its writes, so the node's other pods go on.",
    registers: [registry],
    collect() {
      this.set(ledger.quarantined);
    },
  });
  const reconcile = new Histogram({
    name: 'podmeter_operator_reconcile_seconds',
    help: 'Duration of one reconcile round that wrote custom resource status.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'podmeter_operator_errors_total',
    help: `Errors by operation (${OPERATOR_ERROR_OPS.join(', ')}).`,
    labelNames: ['op'] as const,
    registers: [registry],
  });
  return { exposition, reconcile, errors };
}

/** The rollups read from the ledger at scrape time: per namespace, workload and node, and the cluster's BPF map memory. */
function addRollups(exposition: Exposition, ledger: Ledger): void {
  // Totals per namespace, workload and node: ingress and egress bytes, pods that have ended included.
  const rollups: [UsageKind, string, string, (t: UsageTotal) => Record<string, string> | undefined][] = [
    ['NamespaceUsage', 'namespace', 'namespace', (t) => ({ namespace: t.name })],
    [
      'WorkloadUsage',
      'workload',
      'workload (owner chain resolved: Deployment, StatefulSet, DaemonSet, CronJob, Job, bare Pod)',
      ({ workload: w }) => w && { namespace: w.namespace, workload_kind: w.kind, workload: w.name },
    ],
    ['NodeUsage', 'node', 'node', (t) => ({ node: t.name })],
  ];
  for (const [kind, scope, what, labelsOf] of rollups) {
    exposition.add({
      name: `podmeter_${scope}_network_bytes_total`,
      help: `Bytes received (ingress) and sent (egress) by the pods of each ${what}, including pods that have ended.`,
      type: 'counter',
      samples: (emit) => {
        for (const t of ledger.totals(kind)) {
          const labels = labelsOf(t);
          if (labels === undefined) continue;
          emit(labelText({ ...labels, direction: 'ingress' }), t.total.ingressBytes);
          emit(labelText({ ...labels, direction: 'egress' }), t.total.egressBytes);
        }
      },
    });
    // Only the classes clouds bill, and only those with bytes: at most three more series per object.
    exposition.add({
      name: `podmeter_${scope}_network_peer_bytes_total`,
      help: `Bytes sent (direction egress) by the pods of each ${what} to the peer classes clouds bill (peer: cross-zone, cross-region, external), including pods that have ended; parts of podmeter_${scope}_network_bytes_total.`,
      type: 'counter',
      samples: (emit) => {
        for (const t of ledger.totals(kind)) {
          const labels = labelsOf(t);
          if (labels === undefined) continue;
          for (const f of CLASS_FIELDS)
            if (t.total[f] !== 0n)
              emit(labelText({ ...labels, direction: 'egress', peer: PEER_CLASS_OF[f] }), t.total[f]);
        }
      },
    });
  }
  exposition.add({
    name: 'podmeter_cluster_bpf_map_memory_bytes',
    help: "Kernel memory held by BPF maps on all nodes (sum of the nodes' podmeter.io/bpf-map-bytes).",
    type: 'gauge',
    samples: (emit) => {
      if (ledger.active) emit('', ledger.clusterMapBytes);
    },
  });
}
