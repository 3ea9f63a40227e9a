/**
 * Status planning: what a usage object's status should say now, from the
 * ledger's state (book.ts). A plan is written first and committed after the
 * write succeeded, so a failed write changes nothing:
 *
 * - NodeUsage: the live pods' counts as `checkpoint`, newly retired pods into
 *   `retired` and `retiring` (the intent, until their namespace and
 *   workload have them too), the rolled-up ones kept within a size bound
 *   (compact);
 * - NamespaceUsage/WorkloadUsage: the live sum plus newly rolled-up
 *   retirements, guarded by per-node marks `retiredThrough` (idempotent:
 *   a node's retirements are numbered and taken in their order);
 * - NodeUsage intents past LISTED_INTENTS_BYTES (a write backlog) go into
 *   NodeRetirements objects, created before the status that lists them;
 * - WorkloadUsage/NodeUsage: `goneSince` while gone (the retention's clock).
 */
import { bytes } from '../../common/format.ts';
import {
  addTo,
  copy,
  equal,
  isZero,
  subFrom,
  sum,
  toStrings,
  zero,
  type Counts,
} from '../../common/contract/counts.ts';
import {
  statusTotals,
  type CheckpointEntry,
  type RetiringEntry,
  type UsageStatus,
} from '../../common/contract/usage.ts';
import { contribution, type PodRecord } from '../pods.ts';
import { checkpointedSum, type Book } from './book.ts';
import { TOP_UP, type Entry, type Retiree, type Retirement } from './entry.ts';
import type { Quarantine } from './quarantine.ts';

/**
 * A status to write, whether to write again later (an owner not known yet),
 * and what to commit once written. NodeUsage: `spill`, intents to write
 * into new NodeRetirements objects first (their names go into
 * `status.spills` and to commit).
 */
export interface PlannedStatus {
  status: UsageStatus;
  keepDirty: boolean;
  spill?: RetiringEntry[][];
  commit: (spilled?: string[]) => void;
}

/**
 * A NodeUsage's checkpoint: each live pod with traffic and a known
 * workload, with the counts it takes from now (`snapshot`: those to commit
 * to the pod once written); `keepDirty` when a pod waits for its owner.
 */
function planCheckpoint(book: Book, e: Entry, now: number, quarantine: Quarantine) {
  let keepDirty = false;
  const snapshot: { p: PodRecord; counts: Counts }[] = [];
  const checkpoint: CheckpointEntry[] = [];
  const live = zero();
  for (const p of e.members!) {
    const counts = contribution(p);
    if (isZero(counts) && p.checkpointed === undefined) continue; // idle pods need no checkpoint
    const had = p.workload;
    const w = book.o.pods.workloadOf(p, now, false);
    if (had === undefined && w !== undefined) book.assign(w); // its owner's wait ended here: a live pod of its workload from now (else it would count -1 when it dies)
    if (w === undefined) {
      keepDirty = true; // its owner may still appear: counted a little later
      continue;
    }
    const cp = quarantine.checkpoint(p, e.name, w, counts); // (a pod whose data the CRD refuses: quarantine.ts)
    if (cp === undefined) continue;
    if (cp.fresh) snapshot.push({ p, counts: copy(counts) });
    addTo(live, cp.counts);
    checkpoint.push(cp.entry);
  }
  return { checkpoint, live, snapshot, keepDirty };
}

/**
 * A NodeUsage's retirements as they are to be written: the kept ones (the
 * rolled up dropped after the ttl) and its pending pods numbered on from
 * its last `seq` (`newlyRetired`, to roll up once written), their finals
 * added to `retired`.
 */
function planRetirements(book: Book, e: Entry, now: number, quarantine: Quarantine) {
  const retiring = new Map([...e.retiring].filter(([, r]) => !(r.entry.rolledUp && now - r.at > book.ttlMs)));
  const retired = copy(e.retired);
  let retiredPods = e.retiredPods;
  let seq = e.seq;
  const newlyRetired: [string, { pod: Retiree; final: Counts }, number][] = [];
  for (const [uid, pend] of e.pendingNode) {
    if (retiring.has(uid) || quarantine.holds(uid)) continue;
    newlyRetired.push([uid, pend, ++seq]);
    const w = pend.pod.workload ?? book.workloadOf(pend.pod.namespace, 'Pod', uid);
    const entry: RetiringEntry = {
      uid,
      namespace: pend.pod.namespace,
      workloadKind: w.kind,
      workload: w.name,
      ...toStrings(pend.final),
      at: new Date(now).toISOString(),
      rolledUp: false,
      seq,
    };
    retiring.set(uid, { entry, counts: pend.final, at: now, seq });
    addTo(retired, pend.final);
    if (!uid.endsWith(TOP_UP)) retiredPods++;
  }
  return { retiring, retired, retiredPods, seq, newlyRetired };
}

export function nodeStatus(book: Book, e: Entry, now: number, quarantine: Quarantine): PlannedStatus {
  quarantine.prune(e.name, e.members!, e.pendingNode);
  const { checkpoint, live, snapshot, keepDirty } = planCheckpoint(book, e, now, quarantine);
  const through = book.throughOf(e); // (this write's retirements are in no namespace yet)
  const { retiring, retired, retiredPods, seq, newlyRetired } = planRetirements(book, e, now, quarantine);
  const finalsAfter = compact(retiring, e.finalsAfter);
  const layout = spillLayout(retiring, e.spills);
  const goneSince = e.goneSince;
  const status: UsageStatus = {
    ...statusTotals(sum(live, retired), retired, e.members!.size, retiredPods, book.o.identity),
    ...(e.bpfMapBytes !== undefined ? { bpfMapBytes: String(e.bpfMapBytes), bpfMaps: bytes(e.bpfMapBytes) } : {}),
    checkpoint: checkpoint.sort((a, b) => a.uid.localeCompare(b.uid)),
    retiring: layout.listed.map((r) => r.entry).sort((a, b) => a.uid.localeCompare(b.uid)),
    retiredSeq: seq,
    namespacesThrough: through.ns,
    workloadsThrough: through.wl,
    ...(layout.kept.size > 0 || layout.spill.length > 0 ? { spills: [...layout.kept] } : {}),
    ...(finalsAfter > 0 ? { finalsAfter: new Date(finalsAfter).toISOString() } : {}),
    ...gone(goneSince),
  };
  const pendingSnapshot = new Map(e.pendingNode);
  return {
    status,
    keepDirty,
    spill: layout.spill.map((uids) => uids.map((uid) => retiring.get(uid)!.entry)),
    commit: (spilled = []) => {
      e.retired = retired;
      e.retiredPods = retiredPods;
      e.retiring = retiring;
      e.seq = seq;
      e.through = through;
      e.spills = new Map([...layout.kept].map((name) => [name, e.spills.get(name)!]));
      layout.spill.forEach((uids, i) => {
        e.spills.set(spilled[i]!, new Set(uids));
        for (const uid of uids) retiring.set(uid, { ...retiring.get(uid)!, spill: spilled[i]! });
      });
      e.finalsAfter = finalsAfter;
      e.goneSinceWritten = goneSince;
      commitCheckpoint(book, snapshot);
      e.live = checkpointedSum(e.members!);
      for (const [uid, pend] of pendingSnapshot) {
        if (e.pendingNode.get(uid) === pend) e.pendingNode.delete(uid);
      }
      for (const [uid, pend, n] of newlyRetired) {
        if (pend.pod.checkpointed !== undefined) book.subLive(pend.pod, pend.pod.checkpointed);
        const w = pend.pod.workload ?? book.workloadOf(pend.pod.namespace, 'Pod', uid);
        book.rollUp(e, uid, n, w, pend.final);
      }
    },
  };
}

/** The checkpoint written: each pod's counts as checkpointed from now, their change moved into its namespace's and workload's live sums. */
function commitCheckpoint(book: Book, snapshot: { p: PodRecord; counts: Counts }[]): void {
  for (const { p, counts } of snapshot) {
    const before = p.checkpointed ?? zero();
    if (equal(before, counts)) continue;
    const delta = copy(counts);
    subFrom(delta, before);
    p.checkpointed = counts; // (a pod that died meanwhile: its retirement takes back this new checkpoint)
    book.addLive(p, delta);
    book.dirty(book.entry('NamespaceUsage', p.namespace));
    if (p.workload) book.dirty(book.entry('WorkloadUsage', p.workload));
  }
}

export function rollupStatus(book: Book, e: Entry): PlannedStatus {
  const retired = copy(e.retired);
  const marks = new Map(e.marks);
  let retiredPods = e.retiredPods;
  const snapshot = new Map(e.pending);
  for (const [uid, p] of snapshot) {
    const node = book.entries.get(`NodeUsage/${p.node}`);
    const through = node === undefined ? 0 : e.kind === 'NamespaceUsage' ? node.through.ns : node.through.wl;
    if (p.seq <= (e.marks.get(p.node) ?? 0) || p.seq <= through) continue; // taken already (by an earlier write: after a load, pending is not in seq order)
    addTo(retired, p.final);
    marks.set(p.node, Math.max(p.seq, marks.get(p.node) ?? 0));
    if (!uid.endsWith(TOP_UP)) retiredPods++;
  }
  // A mark is needed until its node's written rollup mark passes it (a forgotten node's did: Book.idle).
  for (const [name, seq] of marks) {
    const node = book.entries.get(`NodeUsage/${name}`);
    if (node === undefined || seq <= (e.kind === 'NamespaceUsage' ? node.through.ns : node.through.wl))
      marks.delete(name);
  }
  const goneSince = e.kind === 'WorkloadUsage' ? e.goneSince : undefined;
  const status: UsageStatus = {
    ...statusTotals(sum(e.live, retired), retired, e.pods, retiredPods, book.o.identity),
    retiredThrough: [...marks].map(([node, seq]) => ({ node, seq })).sort((a, b) => a.node.localeCompare(b.node)),
    ...gone(goneSince),
  };
  return {
    status,
    keepDirty: false,
    commit: () => {
      e.retired = retired;
      e.marks = marks;
      e.retiredPods = retiredPods;
      e.goneSinceWritten = goneSince;
      for (const [uid, p] of snapshot) {
        if (e.pending.get(uid) === p) e.pending.delete(uid);
        book.rolledUp(uid, e.kind);
      }
    },
  };
}

function gone(since: number | undefined): { goneSince?: string } {
  return since === undefined ? {} : { goneSince: new Date(since).toISOString() };
}

/** The JSON size of the marked retirements a NodeUsage keeps at most (README: "bounds"). */
export const KEPT_RETIREMENTS_BYTES = 256 * 1024;
/** The JSON size of the intents (not rolled up) a NodeUsage lists at most; older ones go into NodeRetirements objects. */
export const LISTED_INTENTS_BYTES = 96 * 1024;
/** The JSON size of the intents one NodeRetirements object holds at most. */
export const SPILL_BYTES = 256 * 1024;

/**
 * Where a NodeUsage's retirements are written: the rolled-up ones kept
 * (compact) and the newest intents up to LISTED_INTENTS_BYTES in its
 * status (`listed`); intents already in a NodeRetirements object stay
 * there; the older rest go into new ones, SPILL_BYTES each (`spill`, uids
 * oldest first). An object is listed (`kept`) while it holds an intent.
 */
export function spillLayout(
  retiring: ReadonlyMap<string, Retirement>,
  spills: ReadonlyMap<string, ReadonlySet<string>>,
): { listed: Retirement[]; kept: Set<string>; spill: string[][] } {
  const listed: Retirement[] = [];
  const kept = new Set<string>();
  const loose: [string, Retirement][] = [];
  for (const [uid, r] of retiring) {
    if (r.entry.rolledUp) listed.push(r);
    else if (r.spill !== undefined && spills.has(r.spill)) kept.add(r.spill);
    else loose.push([uid, r]);
  }
  loose.sort(([, a], [, b]) => b.seq - a.seq);
  let size = 0;
  let i = 0;
  for (; i < loose.length; i++) {
    const r = loose[i]![1];
    r.bytes ??= JSON.stringify(r.entry).length;
    if (size + r.bytes > LISTED_INTENTS_BYTES) break;
    size += r.bytes;
    listed.push(r);
  }
  const spill: string[][] = [];
  let chunk: string[] = [];
  size = 0;
  for (const [uid, r] of loose.slice(i).reverse()) {
    r.bytes ??= JSON.stringify(r.entry).length;
    if (chunk.length > 0 && size + r.bytes > SPILL_BYTES) {
      spill.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(uid);
    size += r.bytes;
  }
  if (chunk.length > 0) spill.push(chunk);
  return { listed, kept, spill };
}
/** How late after its retirement an agent's final may be read (the node clocks' allowed skew included). */
export const FINAL_LATENESS_MS = 5 * 60_000;

/**
 * Bounds a NodeUsage's `retiring` list (in place): retirements rolled up
 * into their namespace and workload are kept, newest first, only up to
 * KEPT_RETIREMENTS_BYTES of JSON (they are in `retired` already; the entry
 * only lets a late final top them up). Dropping younger than the finals
 * window moves the returned `finalsAfter` past them, so a late final of a
 * dropped pod is never taken for a pod no ledger has (it is not used: the
 * top-up is lost, nothing is counted twice). Intents not rolled up are never
 * dropped.
 */
export function compact(retiring: Map<string, Retirement>, finalsAfter: number): number {
  const done = [...retiring].filter(([, r]) => r.entry.rolledUp).sort(([, a], [, b]) => b.at - a.at);
  let kept = 0;
  for (const [uid, r] of done) {
    r.bytes ??= JSON.stringify(r.entry).length;
    kept += r.bytes;
    if (kept <= KEPT_RETIREMENTS_BYTES) continue;
    retiring.delete(uid);
    finalsAfter = Math.max(finalsAfter, r.at + FINAL_LATENESS_MS);
  }
  return finalsAfter;
}
