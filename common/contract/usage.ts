/**
 * The operator's custom resources (podmeter.io/v1alpha1, cluster-scoped;
 * schemas in helm/podmeter/crds/): their names and paths (a WorkloadUsage's
 * name: workloads.ts), and the shape of
 * their status, which is the ledger. Parsing is tolerant: a status edited
 * by hand into something the schema still admits is reported, and what
 * cannot be read counts as absent rather than crashing the operator.
 */
import { bytes } from '../format.ts';
import {
  CLASS_FIELDS,
  fromStrings,
  toStrings,
  zero,
  type ClassField,
  type Counts,
  type CountStrings,
} from './counts.ts';

export const GROUP = 'podmeter.io';
export const VERSION = 'v1alpha1';

export type UsageKind = 'NamespaceUsage' | 'WorkloadUsage' | 'NodeUsage';

export const PLURAL: Readonly<Record<UsageKind, string>> = {
  NamespaceUsage: 'namespaceusages',
  WorkloadUsage: 'workloadusages',
  NodeUsage: 'nodeusages',
};

/** Label on WorkloadUsage objects, so one namespace's workloads can be listed. */
export const NAMESPACE_LABEL = 'podmeter.io/namespace';

export function usagePath(kind: UsageKind, name?: string, status = false): string {
  const base = `/apis/${GROUP}/${VERSION}/${PLURAL[kind]}`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}${status ? '/status' : ''}`;
}

export type { CountStrings };

/** A live pod's counts as persisted in its NodeUsage (what the rollups include). */
export interface CheckpointEntry extends CountStrings {
  uid: string;
  namespace: string;
  workloadKind: string;
  workload: string;
  /** Counts from before the agent's counters restarted (rare). */
  base?: CountStrings;
}

/**
 * A dead pod retired into a NodeUsage; `rolledUp` once its namespace and
 * workload include it too. `seq` numbers the node's retirements in the
 * order they were recorded (1, 2, ...): a namespace or workload takes a
 * node's retirements in that order, so a mark "through seq N" says which it
 * has (absent only in entries written before the numbering).
 */
export interface RetiringEntry extends CountStrings {
  uid: string;
  namespace: string;
  workloadKind: string;
  workload: string;
  at: string;
  rolledUp: boolean;
  seq?: number;
}

/** A NamespaceUsage's or WorkloadUsage's mark: it holds every retirement of `node` numbered `seq` or less that belongs to it. */
export interface RetiredThrough {
  node: string;
  seq: number;
}

/** The `NodeRetirements` kind: overflow of a NodeUsage's intents (a write backlog), written once, deleted once rolled up. */
export const SPILL_KIND = 'NodeRetirements';
export const SPILL_PLURAL = 'noderetirements';

export function spillPath(name?: string): string {
  const base = `/apis/${GROUP}/${VERSION}/${SPILL_PLURAL}`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

/** A NodeRetirements object: intents of NodeUsage `spec.node`, counted only while that NodeUsage lists the object in `status.spills`. */
export interface SpillObject {
  apiVersion: string;
  kind: typeof SPILL_KIND;
  metadata: {
    name: string;
    generateName?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
  };
  spec: { node: string; retiring: RetiringEntry[] };
}

/** The human-readable status field of each class field (the printer columns). */
export const HUMAN_CLASS_FIELD: Readonly<
  Record<ClassField, 'egressCrossZone' | 'egressCrossRegion' | 'egressExternal'>
> = {
  egressCrossZoneBytes: 'egressCrossZone',
  egressCrossRegionBytes: 'egressCrossRegion',
  egressExternalBytes: 'egressExternal',
};

export interface UsageStatus extends CountStrings {
  /** Human-readable totals for `kubectl get` (the printer columns). */
  ingress: string;
  egress: string;
  egressCrossZone: string;
  egressCrossRegion: string;
  egressExternal: string;
  pods: number;
  retiredPods: number;
  /** Final counts of pods that died, included in the totals. */
  retired: CountStrings;
  /** NamespaceUsage/WorkloadUsage: per node, the retirements already in `retired` (for idempotence), kept until that node's NodeUsage says its rollup passed them. */
  retiredThrough?: RetiredThrough[];
  /** NodeUsage only. */
  bpfMapBytes?: string;
  bpfMaps?: string;
  checkpoint?: CheckpointEntry[];
  retiring?: RetiringEntry[];
  /** NodeUsage only: the `seq` of its last retirement. */
  retiredSeq?: number;
  /** NodeUsage only: every retirement numbered this or less is in its NamespaceUsage (resp. WorkloadUsage). */
  namespacesThrough?: number;
  workloadsThrough?: number;
  /** NodeUsage only: NodeRetirements objects holding more of its intents (a write backlog). */
  spills?: string[];
  /**
   * NodeUsage only: a final of a pod not in `retiring` is used only if its
   * agent read it at or after this time (RFC 3339): retirements younger than
   * the finals window were dropped from the list to bound its size.
   */
  finalsAfter?: string;
  /** WorkloadUsage/NodeUsage: since when no live pod (and for a node, no Node) has had it; deleted after the retention. */
  goneSince?: string;
  updated: string;
  writer: string;
}

export interface UsageObject {
  apiVersion: string;
  kind: UsageKind;
  metadata: {
    name: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    creationTimestamp?: string;
    uid?: string;
  };
  spec?: { namespace?: string; kind?: string; name?: string };
  status?: UsageStatus;
}

/** The ledger part of a status, as read back. */
export interface LedgerState {
  retired: Counts;
  retiredPods: number;
  /** NamespaceUsage/WorkloadUsage: node -> retired through seq. */
  marks: Map<string, number>;
  checkpoint: Map<string, { entry: CheckpointEntry; counts: Counts; base: Counts | undefined }>;
  /** (`spill`: read from that NodeRetirements object) */
  retiring: Map<string, { entry: RetiringEntry; counts: Counts; at: number; seq: number; spill?: string }>;
  /** NodeUsage: last seq, rollup marks, overflow objects. */
  seq: number;
  through: { ns: number; wl: number };
  spills: string[];
  /** ms since the epoch; 0 when absent. */
  finalsAfter: number;
  goneSince: number | undefined;
  problems: string[];
}

export function emptyLedgerState(): LedgerState {
  return {
    retired: zero(),
    retiredPods: 0,
    marks: new Map(),
    checkpoint: new Map(),
    retiring: new Map(),
    seq: 0,
    through: { ns: 0, wl: 0 },
    spills: [],
    finalsAfter: 0,
    goneSince: undefined,
    problems: [],
  };
}

/** Reads the ledger from a status; anything unreadable is skipped and named in `problems`. */
export function parseLedger(status: unknown): LedgerState {
  const state = emptyLedgerState();
  if (status === undefined || status === null) return state;
  if (typeof status !== 'object') {
    state.problems.push('status is not an object');
    return state;
  }
  const s = status as Partial<Record<keyof UsageStatus, unknown>>;
  if (s.retired !== undefined) {
    const retired = fromStrings(s.retired);
    if (retired === undefined) state.problems.push('status.retired is not decimal counters');
    else state.retired = retired;
  }
  if (typeof s.retiredPods === 'number' && Number.isSafeInteger(s.retiredPods) && s.retiredPods >= 0)
    state.retiredPods = s.retiredPods;
  for (const item of arrayOf(s.retiredThrough, 'retiredThrough', state)) {
    if (typeof item.node === 'string' && isSeq(item.seq)) state.marks.set(item.node, item.seq);
    else state.problems.push('status.retiredThrough has an entry without node/seq');
  }
  state.seq = seqOf(s.retiredSeq, 'retiredSeq', state);
  state.through = {
    ns: seqOf(s.namespacesThrough, 'namespacesThrough', state),
    wl: seqOf(s.workloadsThrough, 'workloadsThrough', state),
  };
  for (const name of Array.isArray(s.spills) ? (s.spills as unknown[]) : []) {
    if (typeof name === 'string') state.spills.push(name);
    else state.problems.push('status.spills has an entry that is not a name');
  }
  for (const item of arrayOf(s.checkpoint, 'checkpoint', state)) {
    const counts = fromStrings(item);
    const base = item.base === undefined ? undefined : fromStrings(item.base);
    if (
      typeof item.uid !== 'string' ||
      typeof item.namespace !== 'string' ||
      typeof item.workloadKind !== 'string' ||
      typeof item.workload !== 'string' ||
      counts === undefined
    ) {
      state.problems.push('status.checkpoint has an unreadable entry');
      continue;
    }
    state.checkpoint.set(item.uid, { entry: item as unknown as CheckpointEntry, counts, base });
  }
  for (const item of arrayOf(s.retiring, 'retiring', state)) readRetiring(item, 'status.retiring', state);
  state.finalsAfter = timeOf(s.finalsAfter, 'finalsAfter', state) ?? 0;
  state.goneSince = timeOf(s.goneSince, 'goneSince', state);
  return state;
}

/** One retiring entry (of a status or a NodeRetirements object) into `state.retiring`; an entry without seq counts as 0 (written before the numbering). */
function readRetiring(item: Record<string, unknown>, where: string, state: LedgerState, spill?: string): void {
  const counts = fromStrings(item);
  const at = Date.parse(String(item.at));
  if (
    typeof item.uid !== 'string' ||
    typeof item.namespace !== 'string' ||
    typeof item.workloadKind !== 'string' ||
    typeof item.workload !== 'string' ||
    counts === undefined ||
    !Number.isFinite(at) ||
    (item.seq !== undefined && !isSeq(item.seq))
  ) {
    state.problems.push(`${where} has an unreadable entry`);
    return;
  }
  const seq = item.seq ?? 0;
  if (state.retiring.has(item.uid)) return; // (a spill's copy of an entry the status lists: the status's is newer)
  state.retiring.set(item.uid, {
    entry: { ...(item as unknown as RetiringEntry), rolledUp: item.rolledUp === true },
    counts,
    at,
    seq,
    ...(spill === undefined ? {} : { spill }),
  });
}

/** A NodeRetirements object's intents into `state.retiring` (after its NodeUsage's status). */
export function readSpill(object: SpillObject, state: LedgerState): void {
  for (const item of arrayOf(object.spec?.retiring, `NodeRetirements ${object.metadata.name}`, state))
    readRetiring(item, `NodeRetirements ${object.metadata.name}`, state, object.metadata.name);
}

function isSeq(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function seqOf(value: unknown, field: string, state: LedgerState): number {
  if (value === undefined) return 0;
  if (isSeq(value)) return value;
  state.problems.push(`status.${field} is not a sequence number`);
  return 0;
}

function timeOf(value: unknown, field: string, state: LedgerState): number | undefined {
  if (value === undefined) return undefined;
  const at = typeof value === 'string' ? Date.parse(value) : NaN;
  if (Number.isFinite(at)) return at;
  state.problems.push(`status.${field} is not a time`);
  return undefined;
}

function arrayOf(value: unknown, field: string, state: LedgerState): Record<string, unknown>[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    state.problems.push(`${field.includes(' ') ? field : `status.${field}`} is not a list`);
    return [];
  }
  return value.filter((v): v is Record<string, unknown> => typeof v === 'object' && v !== null);
}

/** The common part of every status: exact totals (every class field, zero too, so a column always shows), human totals, pods. */
export function statusTotals(
  total: Counts,
  retired: Counts,
  pods: number,
  retiredPods: number,
  writer: string,
): UsageStatus {
  const classes = Object.fromEntries(
    CLASS_FIELDS.flatMap((f) => [
      [f, String(total[f])],
      [HUMAN_CLASS_FIELD[f], bytes(total[f])],
    ]),
  ) as Record<ClassField, string> & Record<(typeof HUMAN_CLASS_FIELD)[ClassField], string>;
  return {
    ...toStrings(total),
    ...classes,
    ingress: bytes(total.ingressBytes),
    egress: bytes(total.egressBytes),
    pods,
    retiredPods,
    retired: toStrings(retired),
    updated: new Date().toISOString(),
    writer,
  };
}

export { toStrings };
