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

export interface AgentMetrics {
  registry: Registry;
  attachLatency: Histogram;
  errors: Counter<'op'>;
  annotationWrites: Counter<'result'>;
}

export function createAgentMetrics(options: { tracker: Tracker; mode: DiscoverMode; podNamer?: () => PodNamer | undefined }): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { tracker, mode } = options;

  let snapshot: Unit[] = [];
  // Both traffic metrics are filled from one kernel read per scrape.
  const takeSnapshot = () => {
    tracker.refresh();
    snapshot = tracker.units();
  };

  const trafficMetric = (what: 'bytes' | 'packets', refresh: boolean) => {
    const help = `${what === 'bytes' ? 'Bytes (IP packet length)' : 'Packets'} sent (egress) and received (ingress) by the sockets of each ${mode === 'pods' ? 'pod' : 'cgroup'}, counted by eBPF cgroup_skb programs.`;
    if (mode === 'pods') {
      return new Counter({
        name: `podmeter_pod_network_${what}_total`,
        help,
        labelNames: ['namespace', 'pod', 'uid', 'direction'] as const,
        registers: [registry],
        collect() {
          if (refresh) takeSnapshot();
          this.reset();
          const namer = options.podNamer?.();
          for (const u of snapshot) {
            const uid = u.uid ?? '';
            const name = namer?.(uid);
            const labels = { namespace: name?.namespace ?? '', pod: name?.pod ?? '', uid };
            this.inc({ ...labels, direction: 'ingress' }, Number(u.counters.ingress[what]));
            this.inc({ ...labels, direction: 'egress' }, Number(u.counters.egress[what]));
          }
        },
      });
    }
    return new Counter({
      name: `podmeter_cgroup_network_${what}_total`,
      help,
      labelNames: ['cgroup', 'direction'] as const,
      registers: [registry],
      collect() {
        if (refresh) takeSnapshot();
        this.reset();
        for (const u of snapshot) {
          this.inc({ cgroup: u.relPath, direction: 'ingress' }, Number(u.counters.ingress[what]));
          this.inc({ cgroup: u.relPath, direction: 'egress' }, Number(u.counters.egress[what]));
        }
      },
    });
  };
  trafficMetric('bytes', true);
  trafficMetric('packets', false);

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

  tracker.on('attached', (_unit, latency) => {
    if (latency !== undefined) attachLatency.observe(latency);
  });
  tracker.on('error', (op) => errors.inc({ op }));
  return { registry, attachLatency, errors, annotationWrites };
}
