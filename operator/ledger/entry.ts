/**
 * One usage object as the ledger holds it (book.ts keeps them by kind and
 * name): an Entry, what is persisted in the object and what waits to be;
 * a Retirement, a pod retired on record in a NodeUsage; a Pending one, a
 * node's retirement on its way into a namespace or workload; and a Retiree,
 * the pod being retired.
 */
import { sum, zero, type Counts } from '../../common/contract/counts.ts';
import type { LedgerState, RetiringEntry, UsageKind } from '../../common/contract/usage.ts';
import type { Workload } from '../../common/contract/workloads.ts';
import type { PodRecord } from '../pods.ts';

/** A pod being retired: a live record, or one known only from a checkpoint (it died while no operator ran). */
export interface Retiree {
  uid: string;
  namespace: string;
  workload: Workload | undefined;
  checkpointed: Counts | undefined;
  /** Counts from before the agent's counters restarted (added to the agent's final). */
  base?: Counts | undefined;
}

/** A top-up's retirement key: what a pod's final adds after it was retired with less. */
export const TOP_UP = '+final';

export interface Entry {
  kind: UsageKind;
  name: string;
  /** WorkloadUsage: which workload (its spec). */
  workload?: Workload;
  /** Sum of the checkpointed counts of the live pods counted here. */
  live: Counts;
  pods: number;
  /** NodeUsage: the live pods on the node. */
  members?: Set<PodRecord>;
  // --- as persisted (and read back) ---
  exists: boolean;
  resourceVersion: string | undefined;
  retired: Counts;
  retiredPods: number;
  /** NamespaceUsage/WorkloadUsage: node -> the seq through which its retirements are in `retired` (status.retiredThrough). */
  marks: Map<string, number>;
  /** NodeUsage: retired pods and whether their namespace and workload have them. */
  retiring: Map<string, Retirement>;
  /** NodeUsage: the seq of its last retirement written. */
  seq: number;
  /** NodeUsage: as written, every retirement through these seqs is in its namespace (ns) and workload (wl). */
  through: { ns: number; wl: number };
  /** NodeUsage: the NodeRetirements objects its status lists (name -> uids of the intents they hold). */
  spills: Map<string, Set<string>>;
  /** NodeUsage: a final of a pod not in `retiring` is used only if read at or after this time (ms; retirements were dropped to bound the list). */
  finalsAfter: number;
  /** WorkloadUsage/NodeUsage: since when it has been gone (no live pod; for a node, no Node either), as it is to be written. */
  goneSince: number | undefined;
  /** The `goneSince` of the last status written (or read at takeover): the retention counts from it, never from memory alone. */
  goneSinceWritten: number | undefined;
  // --- not yet persisted ---
  /** NodeUsage: uid -> pod to retire with its final counts; others: uid -> a node's retirement to take. */
  pendingNode: Map<string, { pod: Retiree; final: Counts }>;
  pending: Map<string, Pending>;
  bpfMapBytes: bigint | undefined;
  dirtyAt: number | undefined;
  writtenAt: number;
  /** Bumped by every change, so a change made while a write was on its way is not forgotten by it. */
  changes: number;
  /** Hash of the last status written (without its time), to skip writes that change nothing. */
  lastBody: string;
}

/** A retirement on record in a NodeUsage (`bytes`: its entry's JSON size, once measured; `spill`: the NodeRetirements object holding it while it is an intent). */
export interface Retirement {
  entry: RetiringEntry;
  counts: Counts;
  at: number;
  seq: number;
  bytes?: number;
  spill?: string;
}

/** A node's retirement on its way into a namespace or workload. */
export interface Pending {
  final: Counts;
  node: string;
  seq: number;
}

/** An agent's final counts plus what the pod was counted with before the agent's counters restarted. */
export function withBase(p: Retiree, counts: Counts): Counts {
  return p.base === undefined ? counts : sum(p.base, counts);
}

export function isPodRecord(p: Retiree): p is PodRecord {
  return 'firstSeen' in p;
}

/** A new entry: nothing counted, nothing persisted yet (`workload`: a WorkloadUsage's spec; `bpfMapBytes`: a NodeUsage's node's). */
export function newEntry(
  kind: UsageKind,
  name: string,
  workload: Workload | undefined,
  bpfMapBytes: bigint | undefined,
): Entry {
  return {
    kind,
    name,
    ...(workload === undefined ? {} : { workload }),
    live: zero(),
    pods: 0,
    ...(kind === 'NodeUsage' ? { members: new Set<PodRecord>() } : {}),
    exists: false,
    resourceVersion: undefined,
    retired: zero(),
    retiredPods: 0,
    marks: new Map(),
    retiring: new Map(),
    seq: 0,
    through: { ns: 0, wl: 0 },
    spills: new Map(),
    finalsAfter: 0,
    goneSince: undefined,
    goneSinceWritten: undefined,
    pendingNode: new Map(),
    pending: new Map(),
    bpfMapBytes,
    dirtyAt: undefined,
    writtenAt: 0,
    changes: 0,
    lastBody: '',
  };
}

/** A NodeUsage's ledger as read back (its status and the NodeRetirements it lists) into its entry. */
export function takeNodeLedger(e: Entry, state: LedgerState): void {
  e.retiring = state.retiring;
  e.seq = state.seq;
  e.through = state.through;
  e.spills = new Map(state.spills.map((name) => [name, new Set<string>()]));
  for (const [uid, r] of state.retiring) if (r.spill !== undefined) e.spills.get(r.spill)?.add(uid);
}
