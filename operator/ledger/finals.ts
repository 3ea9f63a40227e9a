/**
 * The agents' finals (`podmeter.io/finals` on each Node, common/contract/finals.ts)
 * in the ledger: a pod is retired with the larger of its last annotations
 * and its final; a final that arrives after the pod was retired with less
 * adds the difference once (a top-up, retired under the key `<uid>+final`);
 * a final of a pod no ledger has (deleted while no operator ran, never
 * checkpointed) retires it. Finals are used for as long as agents publish them.
 */
import { FIELDS, isZero, toStrings, zero } from '../../common/contract/counts.ts';
import { FINALS_WINDOW_MS, type PodFinal } from '../../common/contract/finals.ts';
import { maxOf, TOP_UP, withBase, type Book } from './book.ts';

/**
 * An agent's final for a pod on `nodeName` (leader only): raises the
 * pod's retirement if it is on its way, tops it up if it was retired with
 * less, or retires a pod that was deleted while no operator ran. A pod
 * still in the API waits for its deletion (deleted() takes the final).
 */
export function applyFinal(book: Book, nodeName: string, f: PodFinal, now: number): void {
  if (isStale(f, now) || book.o.pods.get(f.uid) !== undefined) return;
  const node = book.entry('NodeUsage', nodeName);
  const pending = node.pendingNode.get(f.uid);
  if (pending !== undefined) {
    pending.final = maxOf(pending.final, withBase(pending.pod, f.counts));
    book.dirty(node, now);
    return;
  }
  const retired = node.retiring.get(f.uid);
  if (retired !== undefined) {
    const key = f.uid + TOP_UP;
    const more = zero();
    for (const field of FIELDS) if (f.counts[field] > retired.counts[field]) more[field] = f.counts[field] - retired.counts[field];
    if (isZero(more) || node.retiring.has(key) || node.pendingNode.has(key)) return;
    const e = retired.entry;
    book.log.info({ namespace: e.namespace, uid: f.uid, ...toStrings(more) }, 'the agent\'s final counts exceed what the pod was retired with: adding the difference');
    book.retire({ uid: key, namespace: e.namespace, workload: book.workloadOf(e.namespace, e.workloadKind, e.workload), checkpointed: undefined }, nodeName, more, now);
    return;
  }
  if (f.namespace === undefined) {
    book.log.warn({ node: nodeName, uid: f.uid }, 'a final of a pod the operator never saw carries no namespace (its agent restarted after the pod went): not counted');
    return;
  }
  if (book.entries.get(`NamespaceUsage/${f.namespace}`)?.recent.has(f.uid)) return; // retired (counted under another node)
  if (f.terminatedAt < node.finalsAfter) return; // maybe retired, its entry dropped from a long list: not counted twice
  const workload = book.o.pods.resolveWorkload(f.namespace, f.name ?? f.uid, f.owner);
  book.log.info({ namespace: f.namespace, pod: f.name, uid: f.uid }, 'a pod deleted while no operator watched: counted from its agent\'s final');
  book.retire({ uid: f.uid, namespace: f.namespace, workload, checkpointed: undefined }, nodeName, f.counts, now);
}

/** An agent's final is used for as long as the agent publishes it. */
export function isStale(f: PodFinal, now: number): boolean {
  return now - f.terminatedAt > FINALS_WINDOW_MS;
}

export function dropStale(finals: Map<string, PodFinal>, now: number): void {
  for (const [uid, f] of finals) if (isStale(f, now)) finals.delete(uid);
}
