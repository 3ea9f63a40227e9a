/**
 * The agent's Kubernetes side: pod identity for metrics and the API, and
 * budgeted annotation writes. Started only when a kubeconfig or an in-cluster
 * service account is found. The API being away at start or later never stops
 * counting: the pod watch retries in the background.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { AgentConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Tracker } from '../counting/tracker.ts';
import type { AgentMetrics, PodNamer } from '../http/metrics.ts';
import { Annotator } from './annotator.ts';
import { WriteBudget } from './budget.ts';
import { watchBudget, type BudgetWatch } from './budgetWatch.ts';
import { describe, PodDirectory } from './pods.ts';
import { podMapBytes, type MapInventory } from '../maps/inventory.ts';

export interface KubeSide {
  podNamer: PodNamer;
  stop(): Promise<void>;
}

export function startKubernetes(options: {
  kc: KubeConfig;
  config: AgentConfig;
  tracker: Tracker;
  metrics: AgentMetrics;
  maps: () => MapInventory | undefined;
  log: Logger;
}): KubeSide {
  const { kc, config, tracker, metrics, log } = options;
  const pods = new PodDirectory(kc, config.nodeName, log);
  const budget = new WriteBudget(config.annotateBudget);
  metrics.annotationBudget.set(budget.rate);
  const annotator = new Annotator({
    api: kc.makeApiClient(CoreV1Api),
    pods,
    tracker,
    budget,
    intervalMs: config.annotateIntervalMs,
    log,
    onWrite: (result) => metrics.annotationWrites.inc({ result }),
    podMapBytes: (uid) => {
      const inventory = options.maps();
      return inventory && podMapBytes(inventory, uid);
    },
    node: { name: config.nodeName, mapBytes: () => options.maps()?.totalBytes },
  });

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const startPods = async (delayMs: number): Promise<void> => {
    try {
      await pods.start();
      log.info({ node: config.nodeName, server: kc.getCurrentCluster()?.server }, 'watching this node\'s pods');
    } catch (err) {
      metrics.errors.inc({ op: 'watch_pods' });
      if (delayMs === 1000) log.warn({ err: describe(err) }, 'cannot list this node\'s pods yet; counting continues, retrying');
      if (!stopped) timer = setTimeout(() => void startPods(Math.min(delayMs * 2, 30_000)), delayMs);
    }
  };
  void startPods(1000);
  const tick = setInterval(() => void annotator.tick(), 250);
  // --annotate-budget 0 means no annotations at all, whatever the operator says.
  const followBudget = (rate: number) => {
    budget.setRate(rate);
    metrics.annotationBudget.set(rate);
  };
  const budgetWatch: BudgetWatch | undefined =
    config.annotateBudget > 0 ? watchBudget(kc, config.namespace, followBudget, log.child({ module: 'budget' })) : undefined;

  return {
    podNamer: (uid) => {
      const ref = pods.byCgroupUid(uid);
      return ref && { namespace: ref.namespace, pod: ref.name };
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(tick);
      await Promise.all([pods.stop(), budgetWatch?.stop()]);
    },
  };
}
