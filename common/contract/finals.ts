/**
 * The Node annotation `podmeter.io/finals`: the final counts of the node's
 * pods whose cgroups went in the last 10 minutes (at most 50, newest first).
 *
 * A Pod's own annotations can miss its final counts (the Pod object may be
 * deleted before the agent's last write, which waits for the kernel to
 * release the cgroup and for the write budget), and an operator that was not
 * running when a Pod was deleted never sees its last annotations. The Node
 * outlives its pods, so the operator reads the finals from here: it counts
 * a pod with the larger of its last annotations and its final here, once.
 *
 * Written by the agent (one value, JSON: encodeNodeFinals), read by the
 * operator (parseNodeFinals). Entries that do not parse (counts are
 * unsigned 64-bit decimals, as on Pods) are dropped and reported; the others
 * are kept, so one bad entry never hides the rest. Entries past MAX_FINALS
 * are ignored and reported: no agent writes more. The operator uses a final
 * only for a pod it has seen bound to that Node (operator/ledger/finals.ts):
 * whoever may write a Node annotation cannot bill a pod of another node.
 */
import { countOf, countText, fromStrings, toStrings, type Counts, type CountStrings } from './counts.ts';

/** How long an agent publishes a final, and the operator uses it. */
export const FINALS_WINDOW_MS = 10 * 60_000;
export const MAX_FINALS = 50;

/** A pod's controller (its owner reference with controller: true). */
export interface Owner {
  kind: string;
  name: string;
}

/**
 * One pod's final counts as they travel in the annotation (decimal strings:
 * counters pass 2^53); its billed classes only when not zero (absent = 0,
 * so finals of an agent that predates them read as zero).
 */
export interface NodeFinal extends CountStrings {
  /** The Pod's uid (the mirror Pod's for a static pod). */
  uid: string;
  /** Namespace, name and controller: absent when the agent restarted after the Pod object went. */
  namespace?: string;
  name?: string;
  owner?: Owner;
  /** When the agent read the final counts (RFC 3339). */
  terminated: string;
}

export interface PodFinal {
  uid: string;
  namespace: string | undefined;
  name: string | undefined;
  owner: Owner | null;
  /** When the agent read them (ms since the epoch). */
  terminatedAt: number;
  counts: Counts;
}

/** The finals of an annotation; `problems`: entries that do not parse; `excess`: entries past MAX_FINALS (ignored). */
export function parseNodeFinals(text: string | undefined): { finals: PodFinal[]; problems: number; excess: number } {
  if (text === undefined || text === '') return { finals: [], problems: 0, excess: 0 };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { finals: [], problems: 1, excess: 0 };
  }
  if (!Array.isArray(raw)) return { finals: [], problems: 1, excess: 0 };
  const finals: PodFinal[] = [];
  let problems = 0;
  const excess = Math.max(0, raw.length - MAX_FINALS);
  for (const item of (raw as Partial<NodeFinal>[]).slice(0, MAX_FINALS)) {
    const counts = fromStrings(item, countOf);
    const terminatedAt = Date.parse(String(item?.terminated));
    if (typeof item?.uid !== 'string' || item.uid === '' || counts === undefined || !Number.isFinite(terminatedAt)) {
      problems++;
      continue;
    }
    const owner =
      typeof item.owner?.kind === 'string' && typeof item.owner.name === 'string'
        ? { kind: item.owner.kind, name: item.owner.name }
        : null;
    finals.push({
      uid: item.uid,
      namespace: typeof item.namespace === 'string' ? item.namespace : undefined,
      name: typeof item.name === 'string' ? item.name : undefined,
      owner,
      terminatedAt,
      counts,
    });
  }
  return { finals, problems, excess };
}

/** One pod's entry: `pod` is absent when the agent no longer knows the Pod object. */
export function encodeFinal(
  uid: string,
  pod: { namespace: string; name: string; owner?: Owner } | undefined,
  terminatedAt: number,
  counts: Counts,
): NodeFinal {
  return {
    uid,
    ...(pod ? { namespace: pod.namespace, name: pod.name, ...(pod.owner ? { owner: pod.owner } : {}) } : {}),
    terminated: new Date(terminatedAt).toISOString(),
    ...toStrings(counts, countText),
  };
}

/** The annotation's value; null when there are none (a merge patch then removes it). */
export function encodeNodeFinals(finals: readonly NodeFinal[]): string | null {
  return finals.length > 0 ? JSON.stringify(finals) : null;
}
