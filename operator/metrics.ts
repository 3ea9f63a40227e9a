/**
 * The operator's Prometheus metrics, one registry. Rollups are read from
 * the ledger at scrape time and exported by the leader only (a standby
 * exporting them too would double every sum over replicas); the self
 * metrics come from every replica.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Exposition, labelText, type Emit } from '../agent/http/exposition.ts';
import { EVENT_LOOP_PRECISION_MS } from '../agent/http/metrics.ts';
import type { Ledger } from './ledger.ts';

export interface OperatorMetrics {
  exposition: Exposition;
  reconcile: Histogram;
  errors: Counter<'op'>;
}

export function createOperatorMetrics(options: { ledger: Ledger; isLeader: () => boolean; pods: () => number }): OperatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_PRECISION_MS });
  const exposition = new Exposition(registry);
  const { ledger } = options;
  const directions = (emit: Emit, total: { ingressBytes: bigint; egressBytes: bigint }, labels: Record<string, string>): void => {
    emit(labelText({ ...labels, direction: 'ingress' }), total.ingressBytes);
    emit(labelText({ ...labels, direction: 'egress' }), total.egressBytes);
  };

  exposition.add({
    name: 'podmeter_namespace_network_bytes_total',
    help: 'Bytes received (ingress) and sent (egress) by the pods of each namespace, including pods that have ended.',
    type: 'counter',
    samples: (emit) => {
      for (const t of ledger.totals('NamespaceUsage')) directions(emit, t.total, { namespace: t.name });
    },
  });
  exposition.add({
    name: 'podmeter_workload_network_bytes_total',
    help: 'Bytes received (ingress) and sent (egress) by the pods of each workload (owner chain resolved: Deployment, StatefulSet, DaemonSet, CronJob, Job, bare Pod), including pods that have ended.',
    type: 'counter',
    samples: (emit) => {
      for (const { workload, total } of ledger.totals('WorkloadUsage')) {
        if (workload) directions(emit, total, { namespace: workload.namespace, workload_kind: workload.kind, workload: workload.name });
      }
    },
  });
  exposition.add({
    name: 'podmeter_node_network_bytes_total',
    help: 'Bytes received (ingress) and sent (egress) by the pods of each node, including pods that have ended.',
    type: 'counter',
    samples: (emit) => {
      for (const t of ledger.totals('NodeUsage')) directions(emit, t.total, { node: t.name });
    },
  });
  exposition.add({
    name: 'podmeter_cluster_bpf_map_memory_bytes',
    help: 'Kernel memory held by BPF maps on all nodes (sum of the nodes\' podmeter.io/bpf-map-bytes).',
    type: 'gauge',
    samples: (emit) => {
      if (ledger.active) emit('', ledger.clusterMapBytes);
    },
  });
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
  const reconcile = new Histogram({
    name: 'podmeter_operator_reconcile_seconds',
    help: 'Duration of one reconcile round that wrote custom resource status.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'podmeter_operator_errors_total',
    help: 'Errors by operation (watch_pods, watch_replicasets, watch_jobs, watch_nodes, lease, load, write_status, read_status, bad_status, annotation, budget).',
    labelNames: ['op'] as const,
    registers: [registry],
  });
  return { exposition, reconcile, errors };
}
