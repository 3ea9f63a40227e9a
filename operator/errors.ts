/**
 * What can fail in the operator: the label values of podmeter_operator_errors_total{op}: the watches, the Lease, the ledger's reads, writes and retention
 * deletes (delete_usage), annotations (a refused count value), finals (a Node final ignored: unknown pod,
 * another namespace, past the cap), quarantine (a pod left out of a status write) and the budget.
 */
export const OPERATOR_ERROR_OPS = [
  'watch_pods',
  'watch_replicasets',
  'watch_jobs',
  'watch_nodes',
  'lease',
  'load',
  'write_status',
  'read_status',
  'bad_status',
  'delete_usage',
  'annotation',
  'finals',
  'quarantine',
  'budget',
] as const;
export type OperatorErrorOp = (typeof OPERATOR_ERROR_OPS)[number];
