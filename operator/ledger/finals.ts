/**
 * The agents' finals (`podmeter.io/finals` on each Node, common/contract/finals.ts)
 * in the ledger: a pod is retired with the larger of its last annotations
 * and its final; a final that arrives after the pod was retired with less
 * adds the difference once (a top-up, retired under the key `<uid>+final`);
 * a final of a pod seen deleted but not retired (it had no counts yet)
 * retires it. Finals are used for as long as agents publish them.
 *
 * Who wrote a final decides what it may name. With the admission policy
 * enforced (operator/admission.ts), only a node's own agent writes its
 * Node's finals: a final of a pod this operator never saw (born and gone
 * while no operator ran, never checkpointed) retires it, in the namespace
 * the final names. Without the policy anyone who may write a Node's
 * annotations can write finals, so a final is used only for a pod this
 * operator has seen bound to that node: in its pod store (live, or deleted
 * within the finals window), or in that node's NodeUsage (a checkpointed
 * pod that died while no operator ran, or a pod it retired); such an unseen
 * pod is then not counted, as its final cannot be told from a forged one.
 * A final for any other uid, or whose namespace is not the pod's, is
 * ignored, logged and counted.
 */
import { FIELDS, isZero, toStrings, zero } from '../../common/contract/counts.ts';
import { FINALS_WINDOW_MS, type PodFinal } from '../../common/contract/finals.ts';
import { maxOf, type Book } from './book.ts';
import { TOP_UP, withBase } from './entry.ts';

/** Why a final was not used. */
type Refusal = 'unknown pod' | 'namespace mismatch';

/** The namespace of pod `uid` if this operator has seen it bound to `nodeName` (the rule in the header). */
function seenNamespace(book: Book, nodeName: string, uid: string, now: number): string | undefined {
  const node = book.entries.get(`NodeUsage/${nodeName}`);
  return (
    node?.pendingNode.get(uid)?.pod.namespace ??
    node?.retiring.get(uid)?.entry.namespace ??
    book.o.pods.seenOn(uid, nodeName, now)?.namespace
  );
}

function refuse(book: Book, nodeName: string, f: PodFinal, why: Refusal): void {
  book.o.onError('finals');
  const key = `finals/${nodeName}/${why}`;
  if (book.problemsLogged.has(key)) return;
  book.problemsLogged.add(key);
  book.log.warn(
    { node: nodeName, uid: f.uid, namespace: f.namespace, reason: why },
    'a final on the Node names no pod the operator saw bound to that node (or another namespace): ignored',
  );
}

/**
 * An agent's final for a pod on `nodeName` (leader only): raises the
 * pod's retirement if it is on its way, tops it up if it was retired with
 * less, or retires a pod that was deleted while no operator ran. A pod
 * still in the API waits for its deletion (deleted() takes the final).
 */
export function applyFinal(book: Book, nodeName: string, f: PodFinal, now: number): void {
  if (isStale(f, now)) return;
  const namespace = seenNamespace(book, nodeName, f.uid, now);
  if (namespace === undefined)
    return book.o.finalsTrusted?.() === true
      ? retireUnseen(book, nodeName, f, now)
      : refuse(book, nodeName, f, 'unknown pod');
  if (f.namespace !== undefined && f.namespace !== namespace) return refuse(book, nodeName, f, 'namespace mismatch');
  if (book.o.pods.get(f.uid) !== undefined) return;
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
    for (const field of FIELDS)
      if (f.counts[field] > retired.counts[field]) more[field] = f.counts[field] - retired.counts[field];
    if (isZero(more) || node.retiring.has(key) || node.pendingNode.has(key)) return;
    const e = retired.entry;
    book.log.info(
      { namespace: e.namespace, uid: f.uid, ...toStrings(more) },
      "the agent's final counts exceed what the pod was retired with: adding the difference",
    );
    book.retire(
      {
        uid: key,
        namespace: e.namespace,
        workload: book.workloadOf(e.namespace, e.workloadKind, e.workload),
        checkpointed: undefined,
      },
      nodeName,
      more,
      now,
    );
    return;
  }
  if (f.terminatedAt < node.finalsAfter) return; // maybe retired, its entry dropped from a long list: not counted twice
  // Seen deleted, not retired (it had no counts then): its final retires it.
  const p = book.o.pods.seenOn(f.uid, nodeName, now)!;
  book.log.info(
    { namespace, pod: p.name, uid: f.uid },
    "a pod deleted before its agent wrote its counts: counted from its agent's final",
  );
  book.retire(p, nodeName, withBase(p, f.counts), now);
}

/** A pod this operator never saw, from its own agent's final (trusted: the admission policy is enforced). */
function retireUnseen(book: Book, nodeName: string, f: PodFinal, now: number): void {
  if (book.o.pods.get(f.uid) !== undefined) return; // in the API after all: its deletion takes the final
  if (f.namespace === undefined) {
    book.log.warn(
      { node: nodeName, uid: f.uid },
      'a final of a pod the operator never saw carries no namespace (its agent restarted after the pod went): not counted',
    );
    return;
  }
  if (f.terminatedAt < book.entry('NodeUsage', nodeName).finalsAfter) return; // maybe retired, its entry dropped from a long list: not counted twice
  const workload = book.o.pods.workloadOfFinal(f.namespace, f.name ?? f.uid, f.owner);
  book.log.info(
    { namespace: f.namespace, pod: f.name, uid: f.uid },
    "a pod deleted while no operator watched: counted from its agent's final",
  );
  book.retire({ uid: f.uid, namespace: f.namespace, workload, checkpointed: undefined }, nodeName, f.counts, now);
}

/** The agent's final of a pod being deleted (ledger.deleted), when its Node has one that names the pod's namespace. */
export function finalOf(book: Book, p: { uid: string; node: string; namespace: string }): PodFinal | undefined {
  const f = book.nodeFinals.get(p.node)?.get(p.uid);
  return f !== undefined && (f.namespace === undefined || f.namespace === p.namespace) ? f : undefined;
}

/** An agent's final is used for as long as the agent publishes it. */
export function isStale(f: PodFinal, now: number): boolean {
  return now - f.terminatedAt > FINALS_WINDOW_MS;
}

export function dropStale(finals: Map<string, PodFinal>, now: number): void {
  for (const [uid, f] of finals) if (isStale(f, now)) finals.delete(uid);
}
