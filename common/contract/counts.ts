/**
 * The four traffic counters of a pod (or a sum of pods), as bigints: byte
 * totals pass 2^53 within months on a busy namespace, so they are never
 * JavaScript numbers, and they travel as decimal strings (annotations, CR
 * status, JSON output).
 */

export interface Counts {
  ingressBytes: bigint;
  egressBytes: bigint;
  ingressPackets: bigint;
  egressPackets: bigint;
}

export const FIELDS = ['ingressBytes', 'egressBytes', 'ingressPackets', 'egressPackets'] as const;

export function zero(): Counts {
  return { ingressBytes: 0n, egressBytes: 0n, ingressPackets: 0n, egressPackets: 0n };
}

export function copy(c: Counts): Counts {
  return { ingressBytes: c.ingressBytes, egressBytes: c.egressBytes, ingressPackets: c.ingressPackets, egressPackets: c.egressPackets };
}

/** a += b (in place). */
export function addTo(a: Counts, b: Counts): void {
  a.ingressBytes += b.ingressBytes;
  a.egressBytes += b.egressBytes;
  a.ingressPackets += b.ingressPackets;
  a.egressPackets += b.egressPackets;
}

/** a -= b (in place). */
export function subFrom(a: Counts, b: Counts): void {
  a.ingressBytes -= b.ingressBytes;
  a.egressBytes -= b.egressBytes;
  a.ingressPackets -= b.ingressPackets;
  a.egressPackets -= b.egressPackets;
}

export function sum(a: Counts, b: Counts): Counts {
  const s = copy(a);
  addTo(s, b);
  return s;
}

export function equal(a: Counts, b: Counts): boolean {
  return a.ingressBytes === b.ingressBytes && a.egressBytes === b.egressBytes && a.ingressPackets === b.ingressPackets && a.egressPackets === b.egressPackets;
}

export function isZero(c: Counts): boolean {
  return c.ingressBytes === 0n && c.egressBytes === 0n && c.ingressPackets === 0n && c.egressPackets === 0n;
}

/** True when any counter of `now` is below `before`: the counters restarted from zero (e.g. a node reboot lost the pinned links). */
export function wentBack(now: Counts, before: Counts): boolean {
  return now.ingressBytes < before.ingressBytes || now.egressBytes < before.egressBytes || now.ingressPackets < before.ingressPackets || now.egressPackets < before.egressPackets;
}

const DECIMAL = /^(0|[1-9][0-9]{0,29})$/;

/** A non-negative decimal integer string, or undefined. */
export function parseDecimal(text: unknown): bigint | undefined {
  return typeof text === 'string' && DECIMAL.test(text) ? BigInt(text) : undefined;
}

/** Counters as decimal strings, field by field (CR status, JSON). */
export function toStrings(c: Counts): Record<(typeof FIELDS)[number], string> {
  return { ingressBytes: String(c.ingressBytes), egressBytes: String(c.egressBytes), ingressPackets: String(c.ingressPackets), egressPackets: String(c.egressPackets) };
}

/** Counters from an object of decimal strings; undefined when any is missing or malformed. */
export function fromStrings(value: unknown): Counts | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const c = zero();
  for (const field of FIELDS) {
    const n = parseDecimal(v[field]);
    if (n === undefined) return undefined;
    c[field] = n;
  }
  return c;
}
