/**
 * Follows the node's annotation write budget that the operator publishes
 * (ConfigMap and key in common/contract/budget.ts) in the operator's
 * namespace, without a restart: each change calls `onRate` (the agent
 * passes WriteBudget.setRate). Until the ConfigMap exists, or if it is
 * deleted or holds no valid number, nothing is called and the agent keeps
 * its current rate (--annotate-budget). Watches that one object only (a
 * field selector on its name) on the one reflector, which keeps retrying
 * while the API is away.
 */
import type { Logger } from '../../common/log.ts';
import { BUDGET_CONFIGMAP, BUDGET_KEY, rateOf } from '../../common/contract/budget.ts';
import { describe, type KubeApi, type KubeObject } from '../../common/kube/api.ts';
import { Reflector } from '../../common/kube/reflector.ts';

export interface BudgetWatch {
  stop(): Promise<void>;
}

export function watchBudget(api: KubeApi, namespace: string, onRate: (rate: number) => void, log: Logger): BudgetWatch {
  let current: number | undefined;
  let warned = false;
  let failing = false;
  const apply = (cm: KubeObject) => {
    failing = false;
    const data = cm.data as Record<string, string> | undefined;
    const rate = rateOf(data);
    if (rate === undefined) {
      if (!warned)
        log.warn(
          { configMap: `${namespace}/${BUDGET_CONFIGMAP}`, value: data?.[BUDGET_KEY] },
          `budget ConfigMap has no valid ${BUDGET_KEY}: keeping the current write budget`,
        );
      warned = true;
      return;
    }
    warned = false;
    if (rate === current) return;
    current = rate;
    log.info({ writesPerSecond: rate }, 'annotation write budget set by the operator');
    onRate(rate);
  };
  const reflector = new Reflector({
    api,
    path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`,
    shape: 'object',
    query: { fieldSelector: `metadata.name=${BUDGET_CONFIGMAP}` },
    log,
    sync: (items) => {
      failing = false;
      items.forEach(apply);
    },
    event: (type, cm) =>
      type === 'DELETED' ? log.info('budget ConfigMap deleted: keeping the current write budget') : apply(cm),
    onError: (err) => {
      if (!failing)
        log.warn(
          { err: describe(err), namespace },
          'budget ConfigMap watch failed (RBAC: get/list/watch configmaps in the operator namespace); retrying with backoff',
        );
      failing = true;
    },
  });
  void reflector.start();
  return { stop: () => reflector.stop() };
}
