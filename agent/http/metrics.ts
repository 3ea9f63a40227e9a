/**
 * The agent's Prometheus metrics: self metrics in a prom-client registry,
 * and the traffic counters, read from the kernel at scrape time and written
 * as text (traffic.ts), so a scrape always sees the current values.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Tracker } from '../counting/tracker.ts';
import { errorReason } from '../kernel/errors.ts';
import type { DiscoverMode } from '../cgroups/units.ts';
import { Exposition, type LabelledCounter } from '../../common/http/exposition.ts';
import { ANNOTATION_WRITE_RESULTS, type AnnotationWriteResult } from '../kube/annotator.ts';
import type { PodNamer } from '../kube/pods.ts';
import { addTrafficMetrics } from './traffic.ts';

/**
 * podmeter_errors_total{op}: counting (the tracker's, and link_detached: a unit's links detached under
 * the agent by another tool, agent/counting/relink.ts, whose failed re-attaches count as attach), the
 * cgroup watch, the pod watch, the map inventory, and a Pod's `kubernetes.io/config.hash` claim refused
 * (reason not_mirror, malformed or contested; agent/kube/pods.ts).
 */
export const AGENT_ERROR_OPS = [
  'attach',
  'link_detached',
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
  /** Counts an error in podmeter_errors_total: an attach's by its reason (the errno name). */
  countError(op: AgentErrorOp, err: unknown): void;
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
  const { tracker } = options;

  addTrafficMetrics(exposition, options);

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
    help: `Errors by operation (${AGENT_ERROR_OPS.join(', ')}); link_detached: a counted cgroup's links detached by another tool (attached again at the next interval); attach errors also by reason (the errno name: ENOMEM, EPERM, E2BIG, ..., or other), one per failed attempt; config_hash by reason (not_mirror, malformed, contested), one per Pod whose claim was refused.`,
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
  const countError = (op: AgentErrorOp, err: unknown) =>
    errors.inc(op === 'attach' ? { op, reason: errorReason(err) } : { op });
  tracker.on('error', countError);
  return { exposition, attachLatency, errors, countError, annotationWrites, annotationBudget };
}
