/**
 * The annotation write budget the operator publishes and agents follow:
 * ConfigMap `podmeter-budget` in the operator's namespace, key
 * `writesPerSecondPerNode` (a decimal number >= 0). The operator writes it
 * with budgetData; agents read it with rateOf.
 */
export const BUDGET_CONFIGMAP = 'podmeter-budget';
export const BUDGET_KEY = 'writesPerSecondPerNode';

/** The ConfigMap's data: the per-node rate, and what it was computed from (for people reading it). */
export function budgetData(perNode: number, maxWritesPerSecond: number, nodes: number): Record<string, string> {
  return { [BUDGET_KEY]: String(perNode), maxWritesPerSecond: String(maxWritesPerSecond), nodes: String(nodes) };
}

/** The per-node rate in a budget ConfigMap's data, or undefined when it has none that is valid. */
export function rateOf(data: Record<string, string> | undefined): number | undefined {
  const raw = data?.[BUDGET_KEY]?.trim();
  if (raw === undefined || !/^(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i.test(raw)) return undefined;
  const rate = Number(raw);
  return Number.isFinite(rate) && rate >= 0 ? rate : undefined;
}
