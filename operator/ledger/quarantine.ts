/**
 * Quarantine: a pod whose data a NodeUsage cannot hold is left out of that
 * object's writes, so the other pods' checkpoints and retirements go on.
 * The usage CRDs bound every field (a count's 30 digits, a workload's 253
 * characters, ...) and the API server refuses a whole status (422 Invalid)
 * for one value past them, retried forever: every pod of the node would wait.
 *
 * Two guards: each checkpoint entry is checked against the CRD limits
 * before the write (admit), so count data never causes a 422; and a 422
 * whose causes name an entry (`status.checkpoint[i]...`,
 * `status.retiring[i]...`) quarantines that entry's pod (reject), whatever
 * the reason. A quarantined live pod keeps the checkpoint the totals
 * already include (or none); a quarantined retirement waits. A live pod
 * leaves quarantine when its counts change (the next write tries them) or
 * it goes. Each pod entering quarantine is logged once and counted
 * (errors_total{op=quarantine}); podmeter_operator_quarantined_pods shows
 * how many are.
 */
import type { Logger } from '../../common/log.ts';
import { equal, fitsStatus, toStrings, type Counts } from '../../common/contract/counts.ts';
import type { CheckpointEntry, UsageStatus } from '../../common/contract/usage.ts';
import { WORKLOAD_KIND_MAX, WORKLOAD_NAME_MAX, type Workload } from '../../common/contract/workloads.ts';
import type { OperatorErrorOp } from '../errors.ts';
import { contribution, type PodRecord } from '../pods.ts';

/** The CRDs' limits of a ledger entry's strings (helm/podmeter/crds/). */
const UID_MAX = 64;
const NAMESPACE_MAX = 63;

interface Held {
  node: string;
  /** A live pod's contribution when it was quarantined (undefined: a retirement). */
  counts: Counts | undefined;
}

export class Quarantine {
  readonly #held = new Map<string, Held>();
  /** Pods logged already (once per pod; bounded). */
  readonly #logged = new Set<string>();
  readonly #log: Logger;
  readonly #onError: (op: OperatorErrorOp) => void;

  constructor(log: Logger, onError: (op: OperatorErrorOp) => void) {
    this.#log = log;
    this.#onError = onError;
  }

  /** Pods quarantined now. */
  get size(): number {
    return this.#held.size;
  }

  /** True when the retirement (or pod) `uid` is held back. */
  holds(uid: string): boolean {
    return this.#held.has(uid);
  }

  /** Forgets pods of `node` that are neither on it nor waiting to be retired there. */
  prune(node: string, members: Iterable<PodRecord>, pending: ReadonlyMap<string, unknown>): void {
    const uids = new Set<string>();
    for (const p of members) uids.add(p.uid);
    for (const [uid, h] of this.#held)
      if (h.node === node && !uids.has(uid) && !pending.has(uid)) this.#held.delete(uid);
  }

  /**
   * The checkpoint entry of a live pod (undefined: none to write): its
   * counts when they fit, else the checkpoint its totals already include;
   * `fresh` when they are the pod's new counts (committed after the write).
   */
  checkpoint(
    p: PodRecord,
    node: string,
    w: Workload,
    counts: Counts,
  ): { entry: CheckpointEntry; counts: Counts; fresh: boolean } | undefined {
    const held = this.#held.get(p.uid);
    if (held !== undefined && held.counts !== undefined && !equal(held.counts, counts)) this.#held.delete(p.uid); // new counts: tried again
    if (!this.#held.has(p.uid)) {
      const problem = this.#problem(p, w, counts);
      if (problem === undefined) return { entry: entryOf(p, w, counts), counts, fresh: true };
      this.#hold(p.uid, { node, counts }, { namespace: p.namespace, pod: p.name, problem });
    }
    const before = p.checkpointed;
    if (before === undefined || this.#problem(p, w, before) !== undefined) return undefined;
    return { entry: entryOf(p, w, before), counts: before, fresh: false };
  }

  /** A 422 of `status` (written to NodeUsage `node`): quarantines the pods whose entries its causes name; false when it names none. */
  reject(node: string, status: UsageStatus, fields: readonly string[], members: Iterable<PodRecord>): boolean {
    const live = new Map<string, PodRecord>();
    for (const p of members) live.set(p.uid, p);
    let found = false;
    for (const field of fields) {
      const m = /^status\.(checkpoint|retiring)\[(\d+)\]/.exec(field);
      const list = m?.[1] === 'checkpoint' ? status.checkpoint : status.retiring;
      const uid = m === null ? undefined : list?.[Number(m[2])]?.uid;
      if (uid === undefined || this.#held.has(uid)) continue;
      const p = live.get(uid);
      // A live pod is held with its counts now (released when they change); a retirement is held.
      this.#hold(
        uid,
        { node, counts: m![1] === 'checkpoint' && p !== undefined ? contribution(p) : undefined },
        { namespace: p?.namespace ?? '', pod: p?.name ?? uid, problem: `rejected by the API server: ${field}` },
      );
      found = true;
    }
    return found;
  }

  #hold(uid: string, held: Held, why: { namespace: string; pod: string; problem: string }): void {
    this.#held.set(uid, held);
    this.#onError('quarantine');
    if (this.#logged.has(uid)) return;
    if (this.#logged.size > 10_000) this.#logged.clear(); // bounded; at worst a line repeats
    this.#logged.add(uid);
    this.#log.error(
      { node: held.node, uid, ...why },
      "pod quarantined: its counts are left out of its NodeUsage writes (the other pods' go on)",
    );
  }

  /** What of a checkpoint entry its CRD would refuse, or undefined. */
  #problem(p: PodRecord, w: Workload, counts: Counts): string | undefined {
    if (!fitsStatus(counts) || (p.base !== undefined && !fitsStatus(p.base)))
      return 'a count longer than the status fields hold';
    if (p.uid.length > UID_MAX || p.namespace.length > NAMESPACE_MAX)
      return 'uid or namespace longer than the status fields hold';
    if (w.kind.length > WORKLOAD_KIND_MAX || w.name.length > WORKLOAD_NAME_MAX)
      return 'workload longer than the status fields hold';
    return undefined;
  }
}

function entryOf(p: PodRecord, w: Workload, counts: Counts): CheckpointEntry {
  return {
    uid: p.uid,
    namespace: p.namespace,
    workloadKind: w.kind,
    workload: w.name,
    ...toStrings(counts),
    ...(p.base ? { base: toStrings(p.base) } : {}),
  };
}
