/**
 * The ledger's working state, shared by its parts: one Entry per usage
 * object (entry.ts: what is persisted, what waits to be), the objects waiting to be
 * written, retirements on their way to the rollups, and the bookkeeping
 * every part uses (an entry by kind and name, marking it dirty, moving a
 * pod's counts in and out of the live sums, retiring and rolling up).
 * ledger.ts turns pod and Node events into these; status.ts plans each
 * object's status from them; writes.ts writes it; finals.ts applies the
 * agents' finals.
 */
import type { Logger } from '../../common/log.ts';
import type { WriteBudget } from '../../common/writeBudget.ts';
import { addTo, copy, isZero, subFrom, zero, type Counts, FIELDS } from '../../common/contract/counts.ts';
import type { PodFinal } from '../../common/contract/finals.ts';
import type { UsageKind, UsageObject } from '../../common/contract/usage.ts';
import { workloadUsageName, type Workload } from '../../common/contract/workloads.ts';
import type { KubeApi } from '../../common/kube/api.ts';
import type { OperatorErrorOp } from '../errors.ts';
import type { PodRecord, PodStore } from '../pods.ts';
import { isPodRecord, newEntry, type Entry, type Retiree } from './entry.ts';

export interface LedgerOptions {
  api: KubeApi;
  pods: PodStore;
  identity: string;
  log: Logger;
  /** Spent by every status write (all kinds together). */
  budget: WriteBudget;
  onError: (op: OperatorErrorOp) => void;
  /** How long retired uids are kept for idempotence (default 15 min). */
  retiredTtlMs?: number;
  /** How long a deletion seen by this process is remembered for a later takeover (default 5 min). */
  rememberDeletesMs?: number;
  /** Minimum time between two writes of the same object, by kind. */
  minIntervalMs?: Partial<Record<UsageKind, number>>;
  /** How long a WorkloadUsage or NodeUsage is kept after it is gone (default 30 days). */
  retentionMs?: number;
  /** True while the admission policy lets only each node's agent write its Node's finals (finals.ts). */
  finalsTrusted?: () => boolean;
}

/** How far behind other changes a retirement's `rolledUp` marker is written. */
const MARK_DELAY_MS = 30_000;

export const KINDS: readonly UsageKind[] = ['NodeUsage', 'NamespaceUsage', 'WorkloadUsage'];

export class Book {
  readonly o: LedgerOptions;
  readonly log: Logger;
  readonly entries = new Map<string, Entry>();
  readonly dirtySet = new Set<Entry>();
  /** uid -> the NodeUsage whose intent waits for its namespace (ns) and workload (wl). */
  readonly rollup = new Map<string, { node: Entry; ns: boolean; wl: boolean }>();
  /** Deletions this process saw, leader or not: the final counts for a takeover. */
  readonly deleted = new Map<string, { pod: Retiree; node: string; final: Counts; at: number }>();
  readonly nodeMapBytes = new Map<string, bigint>();
  /** The agents' finals (Node annotations), by node then pod uid; kept for their usable time. */
  readonly nodeFinals = new Map<string, Map<string, PodFinal>>();
  /** The Nodes that exist (leader or not): a NodeUsage is gone only when its Node is. */
  readonly liveNodes = new Set<string>();
  readonly problemsLogged = new Set<string>();
  readonly ttlMs: number;
  readonly rememberMs: number;
  readonly retentionMs: number;
  /** Bumped on every change of leadership: a write begun under an older one is not taken into account. */
  generation = 0;

  constructor(options: LedgerOptions) {
    this.o = options;
    this.log = options.log;
    this.ttlMs = options.retiredTtlMs ?? 15 * 60_000;
    this.rememberMs = options.rememberDeletesMs ?? 5 * 60_000;
    this.retentionMs = options.retentionMs ?? 30 * 24 * 3_600_000;
  }

  /** Forgets everything persisted (a new leadership reads it again). */
  clear(): void {
    this.entries.clear();
    this.dirtySet.clear();
    this.rollup.clear();
  }

  entry(kind: UsageKind, nameOrWorkload: string | Workload): Entry {
    const name = typeof nameOrWorkload === 'string' ? nameOrWorkload : workloadUsageName(nameOrWorkload);
    const key = `${kind}/${name}`;
    let e = this.entries.get(key);
    if (e === undefined) {
      e = newEntry(
        kind,
        name,
        typeof nameOrWorkload === 'string' ? undefined : nameOrWorkload,
        kind === 'NodeUsage' ? this.nodeMapBytes.get(name) : undefined,
      );
      this.entries.set(key, e);
    }
    return e;
  }

  workloadEntryFromObject(name: string, object: UsageObject): Entry | undefined {
    const s = object.spec;
    if (!s?.namespace || !s.kind || !s.name) {
      this.reportProblems('WorkloadUsage', name, ['spec has no namespace/kind/name: ignored']);
      return undefined;
    }
    const w = this.workloadOf(s.namespace, s.kind, s.name);
    if (workloadUsageName(w) !== name) {
      this.reportProblems('WorkloadUsage', name, [
        `spec names workload ${w.key}, whose object is ${workloadUsageName(w)}: ignored`,
      ]);
      return undefined;
    }
    return this.entry('WorkloadUsage', w);
  }

  workloadOf(namespace: string, kind: string, name: string): Workload {
    return { namespace, kind, name, key: `${namespace}/${kind}/${name}` };
  }

  /** `at`: when the change counts as made (writes go oldest first; an entry waits as long as its oldest change). */
  dirty(e: Entry, at = Date.now()): void {
    e.dirtyAt = e.dirtyAt === undefined ? at : Math.min(e.dirtyAt, at);
    e.changes++;
    this.dirtySet.add(e);
  }

  /** Written (or nothing to write) as of change `seen`: clean, unless it changed since or `again` asks for another write later. */
  clean(e: Entry, seen: number, again: number | undefined): void {
    if (e.changes !== seen) return; // changed while the write was on its way: stays dirty
    e.dirtyAt = again;
    if (again === undefined) this.dirtySet.delete(e);
  }

  attach(p: PodRecord): void {
    this.entry('NamespaceUsage', p.namespace).pods++;
    if (p.workload) this.assign(p.workload);
    if (p.node !== '') {
      const node = this.entry('NodeUsage', p.node);
      node.members!.add(p);
      this.dirty(node);
      this.updateGone(node);
    }
  }

  /** A live pod counts under `workload` (attached, or its owner became known). */
  assign(workload: Workload): void {
    const wl = this.entry('WorkloadUsage', workload);
    wl.pods++;
    this.updateGone(wl);
  }

  detach(p: PodRecord): void {
    this.entry('NamespaceUsage', p.namespace).pods--;
    if (p.workload) {
      const wl = this.entry('WorkloadUsage', p.workload);
      wl.pods--;
      this.updateGone(wl);
    }
    if (p.node !== '') {
      const node = this.entry('NodeUsage', p.node);
      node.members!.delete(p);
      this.updateGone(node);
    }
  }

  /**
   * Starts a WorkloadUsage's or NodeUsage's gone clock when its last pod
   * (and for a node, its Node) went, and stops it when one is back; either
   * change is written, since the retention counts from the written time.
   */
  updateGone(e: Entry, now = Date.now()): void {
    if (e.kind === 'NamespaceUsage') return;
    const gone = e.kind === 'WorkloadUsage' ? e.pods <= 0 : e.members!.size === 0 && !this.liveNodes.has(e.name);
    if (gone === (e.goneSince !== undefined)) return;
    e.goneSince = gone ? now : undefined;
    this.dirty(e, now);
  }

  /**
   * A gone WorkloadUsage or NodeUsage whose status is written and that has
   * nothing on its way: its memory can go (a later need makes a new entry,
   * whose first write reads the object's ledger back, writes.ts). A node
   * waits until its agent's finals are used up (they may top up its kept
   * retirements); a gone Node gets no new ones.
   */
  idle(e: Entry): boolean {
    if (e.kind === 'NamespaceUsage' || e.goneSince === undefined) return false;
    if (
      e.dirtyAt !== undefined ||
      this.dirtySet.has(e) ||
      !isZero(e.live) ||
      e.pending.size > 0 ||
      e.pendingNode.size > 0
    )
      return false;
    // Its gone time written (the retention counts from it), or never worth an object (idle pods only).
    if (e.exists ? e.goneSinceWritten !== e.goneSince : e.retiredPods > 0 || !isZero(e.retired)) return false;
    if (e.kind === 'WorkloadUsage') return e.pods <= 0;
    if (e.members!.size > 0 || this.nodeFinals.has(e.name) || e.spills.size > 0) return false;
    for (const r of e.retiring.values()) if (!r.entry.rolledUp) return false;
    const through = this.throughOf(e);
    return e.through.ns === through.ns && e.through.wl === through.wl;
  }

  /** Whether namespace or workload `e` has node `node`'s retirement `seq` (its mark, or the node's written rollup mark, passed it). */
  has(e: Entry, node: Entry, seq: number): boolean {
    return (
      seq <= (e.marks.get(node.name) ?? 0) || seq <= (e.kind === 'NamespaceUsage' ? node.through.ns : node.through.wl)
    );
  }

  /** The rollup marks NodeUsage `e` can write now: through the retirement before its oldest that a namespace (resp. workload) still lacks. */
  throughOf(e: Entry): { ns: number; wl: number } {
    let ns = e.seq;
    let wl = e.seq;
    for (const [uid, r] of e.retiring) {
      if (r.entry.rolledUp) continue;
      const state = this.rollup.get(uid);
      if (state?.ns !== true) ns = Math.min(ns, r.seq - 1);
      if (state?.wl !== true) wl = Math.min(wl, r.seq - 1);
    }
    return { ns, wl };
  }

  /** Adds checkpointed counts of a pod to its namespace's and workload's live sums. */
  addLive(p: Retiree, counts: Counts): void {
    addTo(this.entry('NamespaceUsage', p.namespace).live, counts);
    if (p.workload) addTo(this.entry('WorkloadUsage', p.workload).live, counts);
  }

  subLive(p: Retiree, counts: Counts): void {
    subFrom(this.entry('NamespaceUsage', p.namespace).live, counts);
    if (p.workload) subFrom(this.entry('WorkloadUsage', p.workload).live, counts);
  }

  retire(p: Retiree, nodeName: string, final: Counts, now: number): void {
    if (nodeName === '') {
      if (!isZero(final))
        this.log.warn(
          { namespace: p.namespace, uid: p.uid },
          'a pod with counts but no node died: not counted (only pods on nodes are)',
        );
      return;
    }
    if (p.workload === undefined && isPodRecord(p)) p.workload = this.o.pods.workloadOf(p, now, true);
    if (isZero(final) && p.checkpointed === undefined) return; // never counted anywhere: nothing to retire
    const node = this.entry('NodeUsage', nodeName);
    if (node.retiring.has(p.uid)) return; // already retired (seen again after a relist or takeover)
    if (p.checkpointed !== undefined) subFrom(node.live, p.checkpointed);
    node.pendingNode.set(p.uid, { pod: p, final: copy(final) });
    this.dirty(node, now);
  }

  /** After a NodeUsage retired `uid` as its retirement `seq`: its namespace and workload retire it too (unless they already have). */
  rollUp(node: Entry, uid: string, seq: number, workload: Workload, final: Counts): void {
    const ns = this.entry('NamespaceUsage', workload.namespace);
    const wl = this.entry('WorkloadUsage', workload);
    const state = { node, ns: this.has(ns, node, seq), wl: this.has(wl, node, seq) };
    if (!state.ns) {
      ns.pending.set(uid, { final, node: node.name, seq });
      this.dirty(ns);
    }
    if (!state.wl) {
      wl.pending.set(uid, { final, node: node.name, seq });
      this.dirty(wl);
    }
    this.updateGone(wl); // (a pod that died before its owner was known never counted as its workload's live pod)
    this.rollup.set(uid, state);
    this.rolledUp(uid);
  }

  rolledUp(uid: string, kind?: UsageKind): void {
    const state = this.rollup.get(uid);
    if (state === undefined) return;
    if (kind === 'NamespaceUsage') state.ns = true;
    if (kind === 'WorkloadUsage') state.wl = true;
    if (kind === undefined && !(state.ns && state.wl)) return; // (nothing taken yet)
    // Only markers (a new leader rolls an unmarked intent up again, and the
    // namespace and workload take it once: their marks), and the node's
    // rollup marks, which let theirs go: written behind the changes of the
    // next MARK_DELAY_MS, they usually ride along with the node's next write
    // instead of costing one of their own.
    this.dirty(state.node, Date.now() + MARK_DELAY_MS);
    if (!state.ns || !state.wl) return;
    this.rollup.delete(uid);
    const r = state.node.retiring.get(uid);
    if (r !== undefined && !r.entry.rolledUp) r.entry = { ...r.entry, rolledUp: true };
  }

  reportProblems(kind: UsageKind, name: string, problems: string[]): void {
    if (problems.length === 0) return;
    const key = `${kind}/${name}/${problems.join(';')}`;
    if (this.problemsLogged.has(key)) return;
    this.problemsLogged.add(key);
    this.o.onError('bad_status');
    this.log.error(
      { kind, name, problems },
      'custom resource status edited into a shape the operator cannot read: the unreadable parts are ignored and rewritten',
    );
  }
}

export function maxOf(a: Counts, b: Counts): Counts {
  const m = zero();
  for (const f of FIELDS) m[f] = a[f] > b[f] ? a[f] : b[f];
  return m;
}

export function checkpointedSum(pods: Iterable<PodRecord>): Counts {
  const total = zero();
  for (const p of pods) if (p.checkpointed !== undefined) addTo(total, p.checkpointed);
  return total;
}
