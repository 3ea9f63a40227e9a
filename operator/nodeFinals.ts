/**
 * Reads a Node's `podmeter.io/finals` (written by its agent,
 * agent/kube/finals.ts): the final counts of the node's recently terminated
 * pods. Entries that do not parse are dropped and reported; the others are
 * kept, so one bad entry never hides the rest.
 */
import type { NodeFinal } from '../agent/kube/finals.ts';
import { fromStrings, type Counts } from './counts.ts';
import type { Owner } from './owners.ts';

export interface PodFinal {
  uid: string;
  namespace: string | undefined;
  name: string | undefined;
  owner: Owner | null;
  /** When the agent read them (ms since the epoch). */
  terminatedAt: number;
  counts: Counts;
}

export function parseNodeFinals(text: string | undefined): { finals: PodFinal[]; problems: number } {
  if (text === undefined || text === '') return { finals: [], problems: 0 };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { finals: [], problems: 1 };
  }
  if (!Array.isArray(raw)) return { finals: [], problems: 1 };
  const finals: PodFinal[] = [];
  let problems = 0;
  for (const item of raw as Partial<NodeFinal>[]) {
    const counts = fromStrings(item);
    const terminatedAt = Date.parse(String(item?.terminated));
    if (typeof item?.uid !== 'string' || item.uid === '' || counts === undefined || !Number.isFinite(terminatedAt)) {
      problems++;
      continue;
    }
    const owner = typeof item.owner?.kind === 'string' && typeof item.owner.name === 'string' ? { kind: item.owner.kind, name: item.owner.name } : null;
    finals.push({
      uid: item.uid,
      namespace: typeof item.namespace === 'string' ? item.namespace : undefined,
      name: typeof item.name === 'string' ? item.name : undefined,
      owner,
      terminatedAt,
      counts,
    });
  }
  return { finals, problems };
}
