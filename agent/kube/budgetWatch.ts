/**
 * Follows the node's annotation write budget that the operator publishes in
 * ConfigMap `podmeter-budget` (key `writesPerSecondPerNode`) in the
 * operator's namespace, without a restart: each change calls `onRate`
 * (the agent passes WriteBudget.setRate). Until the ConfigMap exists, or if
 * it is deleted or holds no valid number, nothing is called and the agent
 * keeps its current rate (--annotate-budget). Watches that one object only
 * (a field selector on its name) and keeps retrying while the API is away.
 */
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from '../log.ts';
import { describe } from './pods.ts';

export const BUDGET_CONFIGMAP = 'podmeter-budget';
export const BUDGET_KEY = 'writesPerSecondPerNode';

export interface BudgetWatch {
  stop(): Promise<void>;
}

/** The rate in a budget ConfigMap, or undefined when it has none that is valid. */
export function rateOf(cm: V1ConfigMap | undefined): number | undefined {
  const raw = cm?.data?.[BUDGET_KEY]?.trim();
  if (raw === undefined || !/^(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i.test(raw)) return undefined;
  const rate = Number(raw);
  return Number.isFinite(rate) && rate >= 0 ? rate : undefined;
}

export function watchBudget(kc: KubeConfig, namespace: string, onRate: (rate: number) => void, log: Logger): BudgetWatch {
  const api = kc.makeApiClient(CoreV1Api);
  const fieldSelector = `metadata.name=${BUDGET_CONFIGMAP}`;
  const informer = new ListWatch<V1ConfigMap>(
    `/api/v1/namespaces/${namespace}/configmaps`,
    new Watch(kc),
    () => api.listNamespacedConfigMap({ namespace, fieldSelector }),
    false,
    undefined,
    fieldSelector,
  );
  let current: number | undefined;
  let warned = false;
  const apply = (cm: V1ConfigMap) => {
    const rate = rateOf(cm);
    if (rate === undefined) {
      if (!warned) log.warn({ configMap: `${namespace}/${BUDGET_CONFIGMAP}`, value: cm.data?.[BUDGET_KEY] }, `budget ConfigMap has no valid ${BUDGET_KEY}: keeping the current write budget`);
      warned = true;
      return;
    }
    warned = false;
    if (rate === current) return;
    current = rate;
    log.info({ writesPerSecond: rate }, 'annotation write budget set by the operator');
    onRate(rate);
  };
  informer.on('add', apply);
  informer.on('update', apply);
  informer.on('delete', () => log.info('budget ConfigMap deleted: keeping the current write budget'));

  // client-node's ListWatch gives up after an error other than 410 Gone or a
  // timeout (e.g. the API server restarting): start it again, with backoff.
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let delayMs = 1000;
  const restart = () => {
    if (stopped || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      if (!stopped) void informer.start();
    }, delayMs);
    delayMs = Math.min(delayMs * 2, 60_000);
  };
  informer.on('error', (err) => {
    if (stopped) return; // stop() aborts the watch
    if (delayMs === 1000) log.warn({ err: describe(err), namespace }, 'budget ConfigMap watch failed (RBAC: get/list/watch configmaps in the operator namespace); retrying with backoff');
    restart();
  });
  informer.on('add', () => (delayMs = 1000));
  informer.on('update', () => (delayMs = 1000));
  void informer.start();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await informer.stop();
    },
  };
}
