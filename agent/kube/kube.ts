/**
 * The agent's Kubernetes side: pod identity for metrics and the API,
 * budgeted annotation writes, and the cluster's peers (Nodes and
 * ServiceCIDRs, agent/peers/cluster.ts). Started only when a kubeconfig or an in-cluster
 * service account is found. The API being away at start or later never stops
 * counting: the pod watch retries in the background.
 */
import type { AgentConfig } from '../config.ts';
import type { Logger } from '../../common/log.ts';
import type { Tracker } from '../counting/tracker.ts';
import type { AgentMetrics } from '../http/metrics.ts';
import type { PodNamer } from './pods.ts';
import { Annotator } from './annotator.ts';
import { WriteBudget } from '../../common/writeBudget.ts';
import { watchBudget, type BudgetWatch } from './budgetWatch.ts';
import { PodDirectory } from './pods.ts';
import { KubeApi } from '../../common/kube/api.ts';
import type { KubeConnection } from '../../common/kube/connection.ts';
import type { MapInventory } from '../maps/inventory.ts';
import { podMapBytes } from '../maps/summary.ts';
import { watchClusterPeers } from '../peers/cluster.ts';
import type { ClusterPeers } from '../peers/table.ts';

export interface KubeSide {
  podNamer: PodNamer;
  stop(): Promise<void>;
}

export function startKubernetes(options: {
  connection: KubeConnection;
  config: AgentConfig;
  tracker: Tracker;
  metrics: AgentMetrics;
  maps: () => MapInventory | undefined;
  /** The cluster's view of peer classes, after each change. */
  onPeers: (peers: ClusterPeers) => void;
  log: Logger;
}): KubeSide {
  const { connection, config, tracker, metrics, log } = options;
  const api = new KubeApi(connection);
  const pods = new PodDirectory({
    api,
    nodeName: config.nodeName,
    idleMs: config.podWatchIdleMs,
    log: log.child({ module: 'pods' }),
    onError: () => metrics.errors.inc({ op: 'watch_pods' }),
    onRejectedClaim: (reason) => metrics.errors.inc({ op: 'config_hash', reason }),
  });
  const budget = new WriteBudget(config.annotateBudget);
  metrics.annotationBudget.set(budget.rate);
  const annotator = new Annotator({
    api,
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

  void pods.start().then(() => log.info({ node: config.nodeName, server: api.server }, "watching this node's pods"));
  const tick = setInterval(() => void annotator.tick(), 250);
  // --annotate-budget 0 means no annotations at all, whatever the operator says.
  const followBudget = (rate: number) => {
    budget.setRate(rate);
    metrics.annotationBudget.set(rate);
  };
  const budgetWatch: BudgetWatch | undefined =
    config.annotateBudget > 0
      ? watchBudget(api, config.namespace, followBudget, log.child({ module: 'budget' }))
      : undefined;
  const peerWatch = watchClusterPeers(api, config.nodeName, options.onPeers, log.child({ module: 'peers' }));

  return {
    podNamer: (uid) => {
      const ref = pods.byCgroupUid(uid);
      return ref && { namespace: ref.namespace, pod: ref.name };
    },
    async stop() {
      clearInterval(tick);
      await Promise.all([pods.stop(), budgetWatch?.stop(), peerWatch.stop()]);
    },
  };
}
