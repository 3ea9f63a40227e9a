/**
 * The annotations agents write on each Pod and Node, and the operator and
 * `podmeter top` read: their names, and the one encoder and decoder of the
 * Pod counters they carry (decimal strings: counters pass 2^53). Each
 * counter is one unsigned 64-bit decimal (parseCount, counts.ts): anyone
 * who may edit a Pod can write these annotations, so a value that is not
 * one is refused, never read.
 *
 *   Pod:  podmeter.io/{ingress,egress}-{bytes,packets},
 *         podmeter.io/egress-{cross-zone,cross-region,external}-bytes (only when not zero: absent = 0),
 *         podmeter.io/bpf-map-bytes, podmeter.io/updated
 *   Node: podmeter.io/bpf-map-bytes, podmeter.io/finals (finals.ts), podmeter.io/updated
 */
import {
  CLASS_FIELDS,
  copy,
  countOf,
  countText,
  FIELDS,
  isClassField,
  parseCount,
  TOTAL_FIELDS,
  zero,
  type CountProblem,
  type Counts,
} from './counts.ts';

export const ANNOTATIONS = {
  ingressBytes: 'podmeter.io/ingress-bytes',
  egressBytes: 'podmeter.io/egress-bytes',
  ingressPackets: 'podmeter.io/ingress-packets',
  egressPackets: 'podmeter.io/egress-packets',
  /** Egress bytes by the peer classes clouds bill (parts of egress-bytes); written only when not zero. */
  egressCrossZoneBytes: 'podmeter.io/egress-cross-zone-bytes',
  egressCrossRegionBytes: 'podmeter.io/egress-cross-region-bytes',
  egressExternalBytes: 'podmeter.io/egress-external-bytes',
  bpfMapBytes: 'podmeter.io/bpf-map-bytes',
  /** On the Node: recently terminated pods' final counts (finals.ts). */
  finals: 'podmeter.io/finals',
  updated: 'podmeter.io/updated',
} as const;

/** A Pod's counter annotations: the totals, the billed classes that are not zero, and its BPF map bytes when it holds any. */
export function podAnnotations(counts: Counts, mapBytes: number | undefined): Record<string, string> {
  const values: Record<string, string> = {};
  for (const field of TOTAL_FIELDS) values[ANNOTATIONS[field]] = countText(counts[field]);
  for (const field of CLASS_FIELDS) if (counts[field] !== 0n) values[ANNOTATIONS[field]] = countText(counts[field]);
  if (mapBytes !== undefined && mapBytes > 0) values[ANNOTATIONS.bpfMapBytes] = String(mapBytes);
  return values;
}

/** True when a Pod carries counters at all (its agent has written them). */
export function hasCounts(annotations: Record<string, string> | undefined): boolean {
  return annotations?.[ANNOTATIONS.ingressBytes] !== undefined || annotations?.[ANNOTATIONS.egressBytes] !== undefined;
}

/** A counter annotation that was refused, and why. */
export interface Malformed {
  annotation: string;
  problem: CountProblem;
}

/**
 * The counters a Pod's annotations carry. Missing annotations are zero (the
 * agent has not written yet); a malformed value (not an unsigned 64-bit
 * decimal) keeps `previous`'s value and is reported, so one bad hand edit
 * never drops a pod's bytes nor reaches a total. A class annotation missing
 * beside the totals is zero (the agent writes only those that are not);
 * without the totals nothing is read and `previous` stays.
 */
export function countsFromAnnotations(
  annotations: Record<string, string> | undefined,
  previous: Counts | undefined,
): { counts: Counts; malformed: Malformed[] } {
  const counts = previous ? copy(previous) : zero();
  const malformed: Malformed[] = [];
  const written = hasCounts(annotations);
  for (const field of FIELDS) {
    const raw = annotations?.[ANNOTATIONS[field]];
    if (raw === undefined) {
      if (written && isClassField(field)) counts[field] = 0n;
      continue;
    }
    const parsed = parseCount(raw);
    if ('problem' in parsed) malformed.push({ annotation: ANNOTATIONS[field], problem: parsed.problem });
    else counts[field] = parsed.value;
  }
  return { counts, malformed };
}

/** A Node's `podmeter.io/bpf-map-bytes`, or undefined when absent or malformed. */
export function nodeMapBytes(annotations: Record<string, string> | undefined): bigint | undefined {
  return countOf(annotations?.[ANNOTATIONS.bpfMapBytes]);
}
