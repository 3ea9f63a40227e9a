/**
 * The agent's Prometheus metrics, one registry. Traffic counters are read
 * from the kernel at scrape time (collect()), so a scrape always sees the
 * current values; finals of terminated units stay exported for the retention.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Tracker, Unit } from '../counting/tracker.ts';
import type { DiscoverMode } from '../cgroups/units.ts';

/** Namespace and pod name for a pod uid, once the Kubernetes side knows them. */
export type PodNamer = (uid: string) => { namespace: string; pod: string } | undefined;

export interface ScrapeValue {
  labels: Record<string, string>;
  value: number;
}

/**
 * A metric whose samples are computed whole at scrape time. prom-client's
 * own metric classes hash every label set on each inc(); for thousands of
 * series read fresh per scrape this plain object is several times faster.
 */
export function registerScrapeMetric(
  registry: Registry,
  metric: { name: string; help: string; type: 'counter' | 'gauge'; values: () => ScrapeValue[] },
): void {
  const object = {
    name: metric.name,
    help: metric.help,
    type: metric.type,
    aggregator: 'sum',
    get: async () => ({ name: metric.name, help: metric.help, type: metric.type, aggregator: 'sum', values: metric.values() }),
    reset: () => {},
  };
  registry.registerMetric(object as unknown as Parameters<Registry['registerMetric']>[0]);
}

export interface AgentMetrics {
  registry: Registry;
  attachLatency: Histogram;
  errors: Counter<'op'>;
  annotationWrites: Counter<'result'>;
  annotationBudget: Gauge;
}

export function createAgentMetrics(options: { tracker: Tracker; mode: DiscoverMode; podNamer?: () => PodNamer | undefined }): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { tracker, mode } = options;

  // Both traffic metrics come from one kernel read per scrape: bytes reads, packets reuses.
  let snapshot: Unit[] = [];
  const scope = mode === 'pods' ? 'pod' : 'cgroup';
  for (const what of ['bytes', 'packets'] as const) {
    registerScrapeMetric(registry, {
      name: `podmeter_${scope}_network_${what}_total`,
      help: `${what === 'bytes' ? 'Bytes (IP packet length)' : 'Packets'} sent (egress) and received (ingress) by the sockets of each ${scope}, counted by eBPF cgroup_skb programs.`,
      type: 'counter',
      values: () => {
        if (what === 'bytes') {
          tracker.refresh();
          snapshot = tracker.units();
        }
        const namer = options.podNamer?.();
        const values: ScrapeValue[] = [];
        for (const u of snapshot) {
          let labels: Record<string, string>;
          if (mode === 'pods') {
            const uid = u.uid ?? '';
            const name = namer?.(uid);
            labels = { namespace: name?.namespace ?? '', pod: name?.pod ?? '', uid };
          } else {
            labels = { cgroup: u.relPath };
          }
          values.push({ labels: { ...labels, direction: 'ingress' }, value: Number(u.counters.ingress[what]) });
          values.push({ labels: { ...labels, direction: 'egress' }, value: Number(u.counters.egress[what]) });
        }
        return values;
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

  const attachLatency = new Histogram({
    name: 'podmeter_attach_latency_seconds',
    help: 'Time from a cgroup creation event to both programs attached.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'podmeter_errors_total',
    help: 'Errors by operation (attach, detach, read, state, watch, annotate, maps).',
    labelNames: ['op'] as const,
    registers: [registry],
  });
  const annotationWrites = new Counter({
    name: 'podmeter_annotation_writes_total',
    help: 'Pod and Node annotation writes by result (ok, error, skipped_budget).',
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
  tracker.on('error', (op) => errors.inc({ op }));
  return { registry, attachLatency, errors, annotationWrites, annotationBudget };
}
