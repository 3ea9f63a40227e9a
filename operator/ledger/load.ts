/**
 * Loading the ledger when this process becomes leader (ledger.ts activate):
 * the usage objects' status read back into the book, pods that died while
 * no operator ran retired with the best final known, intents not rolled up
 * finished, and the totals rebuilt from the live pods. The rules are
 * ledger.ts's header.
 */
import {
  readSpill,
  type LedgerState,
  type SpillObject,
  type UsageKind,
  type UsageObject,
} from '../../common/contract/usage.ts';
import { checkpointedSum, KINDS, maxOf, type Book } from './book.ts';
import { isPodRecord, takeNodeLedger, type Entry, type Retiree } from './entry.ts';
import { applyFinal } from './finals.ts';

/** One usage object as read, with its ledger parsed. */
export interface LoadedObject {
  name: string;
  object: UsageObject;
  state: LedgerState;
}

export type Loaded = Map<UsageKind, LoadedObject[]>;

/** Fills `book` (cleared first) from the objects read (`spills`: every NodeRetirements object); returns how many pods died while no operator was leader. */
export function loadLedger(
  book: Book,
  loaded: Loaded,
  spills: readonly SpillObject[],
  now: number,
): { diedWhileAway: number } {
  book.clear();
  for (const p of book.o.pods.values()) p.checkpointed = undefined;
  readEntries(book, loaded, new Map(spills.map((o) => [o.metadata.name, o])));
  const ghosts = resumeNodes(book, loaded.get('NodeUsage')!);
  retireUnrecorded(book, now);
  rebuild(book, ghosts, now);
  return { diedWhileAway: ghosts.length };
}

/** Each object's ledger into its entry (a NodeUsage's with the intents of the NodeRetirements it lists; those it does not list count for nothing). */
function readEntries(book: Book, loaded: Loaded, spills: ReadonlyMap<string, SpillObject>): void {
  for (const kind of KINDS) {
    for (const { name, object, state } of loaded.get(kind)!) {
      const e = kind === 'WorkloadUsage' ? book.workloadEntryFromObject(name, object) : book.entry(kind, name);
      if (e === undefined) continue;
      e.exists = true;
      e.resourceVersion = object.metadata.resourceVersion;
      e.retired = state.retired;
      e.retiredPods = state.retiredPods;
      e.marks = state.marks;
      if (kind === 'NodeUsage') {
        for (const spill of state.spills) {
          const o = spills.get(spill);
          if (o !== undefined && o.spec?.node === name) readSpill(o, state);
          else state.problems.push(`lists NodeRetirements ${spill}, which is gone: its intents are lost`);
        }
        takeNodeLedger(e, state);
        renumber(e);
      }
      e.finalsAfter = state.finalsAfter;
      e.goneSince = e.goneSinceWritten = state.goneSince;
      book.reportProblems(kind, name, state.problems);
    }
  }
}

/**
 * The NodeUsage checkpoints: a pod that still exists resumes from its
 * checkpoint; one that does not died while no operator was leader and is
 * retired (returned, to be added to the totals it was taken out of).
 * Intents not rolled up are finished.
 */
function resumeNodes(book: Book, nodes: readonly LoadedObject[]): Retiree[] {
  const pods = book.o.pods;
  const ghosts: Retiree[] = [];
  for (const { name, state } of nodes) {
    const node = book.entry('NodeUsage', name);
    for (const [uid, cp] of state.checkpoint) {
      const w = book.workloadOf(cp.entry.namespace, cp.entry.workloadKind, cp.entry.workload);
      const p = pods.get(uid);
      if (p !== undefined) {
        pods.pin(p, w);
        pods.resume(p, cp.counts, cp.base);
        continue;
      }
      // Died while no operator was leader: retire it with the best final known.
      const ghost: Retiree = {
        uid,
        namespace: cp.entry.namespace,
        workload: w,
        checkpointed: cp.counts,
        base: cp.base,
      };
      const seen = book.deleted.get(uid);
      const final = seen === undefined ? cp.counts : maxOf(seen.final, cp.counts);
      node.pendingNode.set(uid, { pod: ghost, final });
      ghosts.push(ghost);
    }
    for (const [uid, r] of node.retiring) {
      if (!r.entry.rolledUp)
        book.rollUp(
          node,
          uid,
          r.seq,
          book.workloadOf(r.entry.namespace, r.entry.workloadKind, r.entry.workload),
          r.counts,
        );
    }
  }
  return ghosts;
}

/**
 * Intents written before retirements were numbered (seq 0) are numbered
 * after the node's last: the namespace and workload take them as new (one
 * they took before the upgrade is counted again; upgrade with no intents
 * waiting: README).
 */
function renumber(e: Entry): void {
  for (const r of e.retiring.values()) {
    if (r.seq !== 0 || r.entry.rolledUp) continue;
    r.seq = ++e.seq;
    r.entry = { ...r.entry, seq: r.seq };
  }
}

/** Deletions this process saw that no NodeUsage has on record (never checkpointed, or died during the handover). */
function retireUnrecorded(book: Book, now: number): void {
  for (const [uid, d] of book.deleted) {
    if (now - d.at > book.rememberMs) continue;
    const node = book.entry('NodeUsage', d.node);
    if (node.pendingNode.has(uid) || node.retiring.has(uid)) continue;
    if (d.at < node.finalsAfter) continue; // its entry may have been dropped from a long list: not counted again
    // Not in any checkpoint, so in no total yet: retired with nothing to take back.
    const workload = d.pod.workload ?? (isPodRecord(d.pod) ? book.o.pods.workloadOf(d.pod, now, true) : undefined);
    book.retire({ uid, namespace: d.pod.namespace, workload, checkpointed: undefined }, d.node, d.final, now);
  }
}

/** The totals from the live pods (and the ghosts until they retire), the Nodes' map bytes and finals, what to write. */
function rebuild(book: Book, ghosts: readonly Retiree[], now: number): void {
  const pods = book.o.pods;
  for (const p of pods.values()) book.attach(p);
  for (const p of pods.values()) if (p.checkpointed !== undefined) book.addLive(p, p.checkpointed);
  for (const g of ghosts) if (g.checkpointed !== undefined) book.addLive(g, g.checkpointed);
  for (const e of book.entries.values()) if (e.members) e.live = checkpointedSum(e.members);
  for (const [node, bytes] of book.nodeMapBytes) book.entry('NodeUsage', node).bpfMapBytes = bytes;
  for (const [node, finals] of book.nodeFinals) for (const f of finals.values()) applyFinal(book, node, f, now);
  for (const e of book.entries.values()) book.updateGone(e, now);
  for (const e of book.entries.values()) {
    if (e.dirtyAt === undefined && book.idle(e)) continue; // gone and settled: nothing to rewrite (the sweep forgets it)
    book.dirty(e, now);
  }
}
