/**
 * The agent's Prometheus metrics: self metrics in a prom-client registry,
 * traffic counters read from the kernel at scrape time and written as text
 * (exposition.ts), so a scrape always sees the current values; finals of
 * terminated units stay exported for the retention.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import { errorReason, type Tracker, type Unit } from '../counting/tracker.ts';
import type { DiscoverMode } from '../cgroups/units.ts';
import { Exposition, labelText, type LabelledCounter } from '../../common/http/exposition.ts';
import { DIRECTIONS } from '../../common/contract/counts.ts';
import { ANNOTATION_WRITE_RESULTS, type AnnotationWriteResult } from '../kube/annotator.ts';
import type { PodNamer } from '../kube/pods.ts';

/**
 * podmeter_errors_total{op}: counting (the tracker's), the cgroup watch, the pod watch, the map inventory,
 * and a Pod's `kubernetes.io/config.hash` claim refused (reason not_mirror, malformed or contested; agent/kube/pods.ts).
 */
export const AGENT_ERROR_OPS = [
  'attach',
  'detach',
  'read',
  'state',
  'watch',
  'watch_pods',
  'maps',
  'config_hash',
] as const;
export type AgentErrorOp = (typeof AGENT_ERROR_OPS)[number];

export interface AgentMetrics {
  exposition: Exposition;
  attachLatency: Histogram;
  /** `reason` for the ops that have one (attach: the errno name; config_hash: why the claim was refused). */
  errors: { inc(labels: { op: AgentErrorOp; reason?: string }): void };
  annotationWrites: LabelledCounter<'result', AnnotationWriteResult>;
  annotationBudget: Gauge;
}

export function createAgentMetrics(options: {
  tracker: Tracker;
  mode: DiscoverMode;
  podNamer?: () => PodNamer | undefined;
}): AgentMetrics {
  const exposition = new Exposition();
  const { registry } = exposition;
  const { tracker, mode } = options;

  // Each unit's escaped label texts, kept until its pod name changes.
  const labelCache = new WeakMap<Unit, { name: string; ingress: string; egress: string }>();
  const labelsOf = (u: Unit, namer: PodNamer | undefined): { ingress: string; egress: string } => {
    const uid = u.uid ?? '';
    const ref = mode === 'pods' ? namer?.(uid) : undefined;
    const name = ref ? `${ref.namespace}/${ref.pod}` : '';
    const cached = labelCache.get(u);
    if (cached?.name === name) return cached;
    const labels: Record<string, string> =
      mode === 'pods' ? { namespace: ref?.namespace ?? '', pod: ref?.pod ?? '', uid } : { cgroup: u.relPath };
    const entry = {
      name,
      ingress: labelText({ ...labels, direction: 'ingress' }),
      egress: labelText({ ...labels, direction: 'egress' }),
    };
    labelCache.set(u, entry);
    return entry;
  };

  // Per peer class: the unit's labels plus direction and peer, escaped once per unit and class.
  const peerLabelCache = new WeakMap<Unit, { name: string; texts: Map<string, string> }>();
  const peerLabelsOf = (u: Unit, namer: PodNamer | undefined, direction: string, peer: string): string => {
    const uid = u.uid ?? '';
    const ref = mode === 'pods' ? namer?.(uid) : undefined;
    const name = ref ? `${ref.namespace}/${ref.pod}` : '';
    let cached = peerLabelCache.get(u);
    if (cached?.name !== name) peerLabelCache.set(u, (cached = { name, texts: new Map() }));
    const key = `${direction}/${peer}`;
    let text = cached.texts.get(key);
    if (text === undefined) {
      const labels: Record<string, string> =
        mode === 'pods' ? { namespace: ref?.namespace ?? '', pod: ref?.pod ?? '', uid } : { cgroup: u.relPath };
      cached.texts.set(key, (text = labelText({ ...labels, direction, peer })));
    }
    return text;
  };

  // Every traffic metric comes from one kernel read per scrape, made before any of them is written.
  let snapshot: Unit[] = [];
  exposition.beforeScrape(() => {
    tracker.refresh();
    snapshot = tracker.units();
  });
  const scope = mode === 'pods' ? 'pod' : 'cgroup';
  for (const what of ['bytes', 'packets'] as const) {
    exposition.add({
      name: `podmeter_${scope}_network_${what}_total`,
      help: `${what === 'bytes' ? 'Bytes (IP packet length)' : 'Packets'} sent (egress) and received (ingress) by the sockets of each ${scope} on network devices (loopback left out), counted by eBPF cgroup_skb programs.`,
      type: 'counter',
      samples: (emit) => {
        const namer = options.podNamer?.();
        for (const u of snapshot) {
          const labels = labelsOf(u, namer);
          emit(labels.ingress, u.counters.ingress[what]);
          emit(labels.egress, u.counters.egress[what]);
        }
      },
    });
  }

  // By peer class, loopback included; a class appears once it has a packet (cardinality: a pod
  // talks to a few classes, not all of them).
  for (const what of ['bytes', 'packets'] as const) {
    exposition.add({
      name: `podmeter_${scope}_network_peer_${what}_total`,
      help: `${what === 'bytes' ? 'Bytes (IP packet length)' : 'Packets'} of each ${scope} by direction and peer class (loopback, node, zone, cross-zone, cross-region, service, external, configured classes). The ${scope}_network_${what}_total series are the sum of every class but loopback.`,
      type: 'counter',
      samples: (emit) => {
        const namer = options.podNamer?.();
        for (const u of snapshot) {
          for (const direction of DIRECTIONS) {
            const peers = u.peers[direction];
            for (const peer in peers) emit(peerLabelsOf(u, namer, direction, peer), peers[peer]![what]);
          }
        }
      },
    });
  }

  new Gauge({
    name: 'podmeter_attached_cgroups',
    help: 'Cgroups the agent currently counts (programs attached).',
    registers: [registry],
    collect() {
      this.set(tracker.liveCount());
    },
  });

  new Gauge({
    name: 'podmeter_unattached_cgroups',
    help: 'Cgroups found but not counted: their attach failed (see podmeter_errors_total{op="attach"} for why) and is retried at every interval.',
    registers: [registry],
    collect() {
      this.set(tracker.unattached().length);
    },
  });

  const attachLatency = new Histogram({
    name: 'podmeter_attach_latency_seconds',
    help: 'Time from a cgroup creation event to both programs attached.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'podmeter_errors_total',
    help: `Errors by operation (${AGENT_ERROR_OPS.join(', ')}); attach errors also by reason (the errno name: ENOMEM, EPERM, E2BIG, ..., or other), one per failed attempt; config_hash by reason (not_mirror, malformed, contested), one per Pod whose claim was refused.`,
    labelNames: ['op', 'reason'] as const,
    registers: [registry],
  });
  const annotationWrites = new Counter({
    name: 'podmeter_annotation_writes_total',
    help: `Pod and Node annotation writes by result (${ANNOTATION_WRITE_RESULTS.join(', ')}).`,
    labelNames: ['result'] as const,
    registers: [registry],
  });

  const annotationBudget = new Gauge({
    name: 'podmeter_annotation_write_budget',
    help: "Pod and Node annotation writes per second this agent may make: --annotate-budget until the operator publishes the node's share (0 when standalone).",
    registers: [registry],
  });

  tracker.on('attached', (_unit, latency) => {
    if (latency !== undefined) attachLatency.observe(latency);
  });
  tracker.on('error', (op, err) => errors.inc(op === 'attach' ? { op, reason: errorReason(err) } : { op }));
  return { exposition, attachLatency, errors, annotationWrites, annotationBudget };
}
