/**
 * The cluster's annotation write budget, split fairly over nodes: the
 * leader publishes `writesPerSecondPerNode` = --max-annotation-writes-per-second
 * / number of Node objects in ConfigMap `podmeter-budget` (its namespace),
 * and rewrites it when the node count changes. Agents watch that ConfigMap
 * (agent/kube/budgetWatch.ts; the format is common/contract/budget.ts) and follow it without a restart, so the whole
 * cluster stays under the configured rate however many nodes join.
 */
import type { Logger } from '../common/log.ts';
import { isStatus, type KubeApi } from '../common/kube/api.ts';
import { BUDGET_CONFIGMAP, BUDGET_KEY, budgetData } from '../common/contract/budget.ts';

/** The per-node share, rounded down to six significant digits (nodes together never exceed the maximum). */
export function perNodeRate(maxWritesPerSecond: number, nodes: number): number {
  const share = maxWritesPerSecond / Math.max(1, nodes);
  if (share <= 0) return 0;
  const scale = 10 ** (6 - Math.ceil(Math.log10(share)));
  return Math.floor(share * scale) / scale;
}

export class BudgetPublisher {
  readonly #api: KubeApi;
  readonly #namespace: string;
  readonly #max: number;
  readonly #log: Logger;
  #nodes: number | undefined;
  #published: string | undefined;

  constructor(options: { api: KubeApi; namespace: string; maxWritesPerSecond: number; log: Logger }) {
    this.#api = options.api;
    this.#namespace = options.namespace;
    this.#max = options.maxWritesPerSecond;
    this.#log = options.log;
  }

  set nodes(n: number) {
    this.#nodes = n;
  }

  /** Forget what was published (a new leader checks the ConfigMap again). */
  reset(): void {
    this.#published = undefined;
  }

  /** Writes the ConfigMap if its content should change; throws on API errors (the caller counts and retries). */
  async publish(): Promise<void> {
    if (this.#nodes === undefined) return;
    const data = budgetData(perNodeRate(this.#max, this.#nodes), this.#max, this.#nodes);
    const wanted = JSON.stringify(data);
    if (wanted === this.#published) return;
    const path = `/api/v1/namespaces/${encodeURIComponent(this.#namespace)}/configmaps`;
    const current = await this.#api.find<{ metadata: { resourceVersion?: string }; data?: Record<string, string> }>(
      `${path}/${BUDGET_CONFIGMAP}`,
      { timeoutMs: 10_000 },
    );
    if (current !== undefined && JSON.stringify(current.data ?? {}) === wanted) {
      this.#published = wanted;
      return;
    }
    const body = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: BUDGET_CONFIGMAP,
        namespace: this.#namespace,
        labels: { 'app.kubernetes.io/managed-by': 'podmeter' },
        ...(current?.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      data,
    };
    try {
      if (current === undefined) await this.#api.request('POST', path, { body, timeoutMs: 10_000 });
      else await this.#api.request('PUT', `${path}/${BUDGET_CONFIGMAP}`, { body, timeoutMs: 10_000 });
    } catch (err) {
      if (isStatus(err, 409)) return; // changed meanwhile: next round
      throw err;
    }
    this.#published = wanted;
    this.#log.info(
      { nodes: this.#nodes, perNode: data[BUDGET_KEY], max: this.#max },
      'annotation write budget published',
    );
  }
}
