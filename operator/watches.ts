/**
 * The operator's watches: ReplicaSets and Jobs (pod owners) and Nodes as
 * metadata, pods as Table rows. Owners are listed first, so pods resolve to
 * their workloads from the start.
 */
import type { KubeApi } from '../common/kube/api.ts';
import { Reflector } from '../common/kube/reflector.ts';
import type { Logger } from '../common/log.ts';
import type { BudgetPublisher } from './budget.ts';
import type { OperatorErrorOp } from './errors.ts';
import type { NodeStore } from './nodes.ts';
import type { OwnerIndex } from './owners.ts';
import type { PodStore } from './pods.ts';

export interface Watches {
  /** Starts the owner and Node watches; resolves after their initial lists. */
  owners(): Promise<void>;
  /** Starts the pod watch; resolves after its initial list. */
  pods(): Promise<void>;
  stop(): Promise<void>;
}

export function startWatches(parts: {
  api: KubeApi;
  owners: OwnerIndex;
  nodes: NodeStore;
  pods: PodStore;
  budget: BudgetPublisher;
  log: Logger;
  countError: (op: OperatorErrorOp) => void;
}): Watches {
  const { api, owners, nodes, pods, budget, log, countError } = parts;
  const ownerWatches = (['ReplicaSet', 'Job'] as const).map(
    (kind) =>
      new Reflector({
        api,
        path: kind === 'ReplicaSet' ? '/apis/apps/v1/replicasets' : '/apis/batch/v1/jobs',
        shape: 'metadata',
        log: log.child({ module: 'watch', kind }),
        sync: (items) => owners.sync(kind, items),
        event: (type, o) => (type === 'DELETED' ? owners.remove(kind, o) : owners.put(kind, o)),
        onError: () => countError(kind === 'ReplicaSet' ? 'watch_replicasets' : 'watch_jobs'),
      }),
  );
  const nodeWatch = new Reflector({
    api,
    path: '/api/v1/nodes',
    shape: 'metadata',
    log: log.child({ module: 'watch', kind: 'Node' }),
    sync: (items) => {
      nodes.sync(items);
      budget.nodes = nodes.size;
    },
    event: (type, o) => {
      nodes.event(type, o);
      budget.nodes = nodes.size;
    },
    onError: () => countError('watch_nodes'),
  });
  const podWatch = new Reflector({
    api,
    path: '/api/v1/pods',
    shape: 'table',
    log: log.child({ module: 'watch', kind: 'Pod' }),
    relist: () => pods.relist(),
    event: (type, table) => pods.event(type, table),
    onError: () => countError('watch_pods'),
  });
  const all = [...ownerWatches, nodeWatch, podWatch];
  return {
    owners: async () => void (await Promise.all([...ownerWatches, nodeWatch].map((r) => r.start()))),
    pods: () => podWatch.start(),
    stop: async () => void (await Promise.all(all.map((r) => r.stop()))),
  };
}
