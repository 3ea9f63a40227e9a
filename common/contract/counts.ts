/**
 * The one model of podmeter's counts, from the kernel's counter slots to the
 * operator's totals, with their arithmetic and their text forms. Counts are
 * bigints: byte totals pass 2^53 within months on a busy namespace, so they
 * are never JavaScript numbers, and they travel as decimal strings
 * (annotations, CR status, Node finals, the HTTP API, the state file).
 *
 *   Traffic       one direction's bytes and packets (a counter slot, or a sum)
 *   ClassTraffic  Traffic by peer class name
 *   UnitCounts    a pod's (or cgroup's) counts: per direction, its network
 *                 traffic (every class but loopback) and its traffic by class
 *   Counts        what the contract carries of a pod (annotations, finals,
 *                 CRD status): the four totals and the billed classes' egress
 *                 bytes, flat; contractCounts() makes it from UnitCounts
 *
 * Besides the four totals, the egress bytes to the peer classes that cost
 * money (cross-zone, cross-region, external: clouds bill them) travel with
 * them through annotations, finals and the ledger. They are parts of
 * egressBytes (classes are disjoint: cross-region traffic is not also
 * cross-zone). Where they travel as strings a zero one is left out (absent =
 * 0), which keeps Pod objects and checkpoints small and reads the counts of
 * an agent or operator that predates them as zero.
 */

export type Direction = 'ingress' | 'egress';
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

/** One direction's bytes and packets: a counter slot (summed over CPUs), or a sum of them. */
export interface Traffic {
  readonly bytes: bigint;
  readonly packets: bigint;
}

export const NO_TRAFFIC: Traffic = Object.freeze({ bytes: 0n, packets: 0n });

export function addTraffic(a: Traffic, b: Traffic): Traffic {
  return { bytes: a.bytes + b.bytes, packets: a.packets + b.packets };
}

/** Traffic by peer class name (agent/peers/classes.ts); a class without a packet is absent. */
export type ClassTraffic = Readonly<Record<string, Traffic>>;

/** The loopback class: counted, but not network traffic (interface-based tools leave it out too). */
export const LOOPBACK = 'loopback';

/** A pod's (or cgroup's) counts: per direction, its network traffic (every class but loopback) and its traffic by class. */
export interface UnitCounts {
  readonly network: Readonly<Record<Direction, Traffic>>;
  readonly byClass: Readonly<Record<Direction, ClassTraffic>>;
}

export const NO_COUNTS: UnitCounts = Object.freeze({
  network: Object.freeze({ ingress: NO_TRAFFIC, egress: NO_TRAFFIC }),
  byClass: Object.freeze({ ingress: Object.freeze({}), egress: Object.freeze({}) }),
});

/** Sum over every class but loopback: the network traffic. */
export function networkTotal(classes: ClassTraffic): Traffic {
  let bytes = 0n;
  let packets = 0n;
  for (const name in classes) {
    if (name === LOOPBACK) continue;
    bytes += classes[name]!.bytes;
    packets += classes[name]!.packets;
  }
  return { bytes, packets };
}

/** A unit's counts from its traffic by class (the totals are every class but loopback). */
export function unitCounts(byClass: Record<Direction, ClassTraffic>): UnitCounts {
  return { network: { ingress: networkTotal(byClass.ingress), egress: networkTotal(byClass.egress) }, byClass };
}

/** a + b class by class. */
export function addClassTraffic(a: ClassTraffic, b: ClassTraffic): ClassTraffic {
  const out: Record<string, Traffic> = { ...a };
  for (const name in b) {
    const x = out[name];
    out[name] = x === undefined ? b[name]! : addTraffic(x, b[name]!);
  }
  return out;
}

/** a + b (a may be absent: b itself). */
export function addUnitCounts(a: UnitCounts | undefined, b: UnitCounts): UnitCounts {
  if (a === undefined) return b;
  return {
    network: {
      ingress: addTraffic(a.network.ingress, b.network.ingress),
      egress: addTraffic(a.network.egress, b.network.egress),
    },
    byClass: {
      ingress: addClassTraffic(a.byClass.ingress, b.byClass.ingress),
      egress: addClassTraffic(a.byClass.egress, b.byClass.egress),
    },
  };
}

/** Traffic as the HTTP API and the state file write it. */
export interface TrafficText {
  bytes: string;
  packets: string;
}

export function trafficText(t: Traffic): TrafficText {
  return { bytes: String(t.bytes), packets: String(t.packets) };
}

export function classTrafficText(c: ClassTraffic): Record<string, TrafficText> {
  const out: Record<string, TrafficText> = {};
  for (const name in c) out[name] = trafficText(c[name]!);
  return out;
}

/** Traffic from its text (two u64 decimals, parseCount); throws an Error naming `what` and the bad value. */
export function parseTraffic(raw: unknown, what: string): Traffic {
  const r = (typeof raw === 'object' && raw !== null ? raw : {}) as Partial<Record<keyof Traffic, unknown>>;
  const u64 = (field: keyof Traffic): bigint => {
    const value = countOf(r[field]);
    if (value === undefined)
      throw new Error(`${what}.${field}: ${JSON.stringify(r[field])} is not a u64 decimal string`);
    return value;
  };
  return { bytes: u64('bytes'), packets: u64('packets') };
}

/** Traffic by class from its text (absent: no class); throws an Error naming `what`. */
export function parseClassTraffic(raw: unknown, what: string): ClassTraffic {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${what}: not an object`);
  const out: Record<string, Traffic> = {};
  for (const [name, t] of Object.entries(raw)) out[name] = parseTraffic(t, `${what}.${name}`);
  return out;
}

export interface Counts {
  ingressBytes: bigint;
  egressBytes: bigint;
  ingressPackets: bigint;
  egressPackets: bigint;
  egressCrossZoneBytes: bigint;
  egressCrossRegionBytes: bigint;
  egressExternalBytes: bigint;
}

/** The totals: always present where counts travel. */
export const TOTAL_FIELDS = ['ingressBytes', 'egressBytes', 'ingressPackets', 'egressPackets'] as const;
/** Egress bytes by billed peer class: absent means zero where counts travel. */
export const CLASS_FIELDS = ['egressCrossZoneBytes', 'egressCrossRegionBytes', 'egressExternalBytes'] as const;
export const FIELDS = [...TOTAL_FIELDS, ...CLASS_FIELDS] as const;
export type ClassField = (typeof CLASS_FIELDS)[number];

export function isClassField(field: string): field is ClassField {
  return (CLASS_FIELDS as readonly string[]).includes(field);
}

/** The agent's peer class (agent/peers/classes.ts) each class field counts. */
export const PEER_CLASS_OF: Readonly<Record<ClassField, string>> = {
  egressCrossZoneBytes: 'cross-zone',
  egressCrossRegionBytes: 'cross-region',
  egressExternalBytes: 'external',
};

/** What the contract carries of a unit's counts: its totals and its egress bytes to the billed peer classes. */
export function contractCounts(unit: UnitCounts): Counts {
  const { network, byClass } = unit;
  return {
    ingressBytes: network.ingress.bytes,
    egressBytes: network.egress.bytes,
    ingressPackets: network.ingress.packets,
    egressPackets: network.egress.packets,
    egressCrossZoneBytes: byClass.egress[PEER_CLASS_OF.egressCrossZoneBytes]?.bytes ?? 0n,
    egressCrossRegionBytes: byClass.egress[PEER_CLASS_OF.egressCrossRegionBytes]?.bytes ?? 0n,
    egressExternalBytes: byClass.egress[PEER_CLASS_OF.egressExternalBytes]?.bytes ?? 0n,
  };
}

export function zero(): Counts {
  return {
    ingressBytes: 0n,
    egressBytes: 0n,
    ingressPackets: 0n,
    egressPackets: 0n,
    egressCrossZoneBytes: 0n,
    egressCrossRegionBytes: 0n,
    egressExternalBytes: 0n,
  };
}

export function copy(c: Counts): Counts {
  return {
    ingressBytes: c.ingressBytes,
    egressBytes: c.egressBytes,
    ingressPackets: c.ingressPackets,
    egressPackets: c.egressPackets,
    egressCrossZoneBytes: c.egressCrossZoneBytes,
    egressCrossRegionBytes: c.egressCrossRegionBytes,
    egressExternalBytes: c.egressExternalBytes,
  };
}

/** a += b (in place). */
export function addTo(a: Counts, b: Counts): void {
  for (const f of FIELDS) a[f] += b[f];
}

/** a -= b (in place). */
export function subFrom(a: Counts, b: Counts): void {
  for (const f of FIELDS) a[f] -= b[f];
}

export function sum(a: Counts, b: Counts): Counts {
  const s = copy(a);
  addTo(s, b);
  return s;
}

export function equal(a: Counts, b: Counts): boolean {
  for (const f of FIELDS) if (a[f] !== b[f]) return false;
  return true;
}

export function isZero(c: Counts): boolean {
  for (const f of FIELDS) if (c[f] !== 0n) return false;
  return true;
}

/** True when any counter of `now` is below `before`: the counters restarted from zero (e.g. a node reboot lost the pinned links). */
export function wentBack(now: Counts, before: Counts): boolean {
  for (const f of FIELDS) if (now[f] < before[f]) return true;
  return false;
}

/**
 * Whether any class of `now`, in either direction, has fewer bytes or packets
 * than in `before` (a class `now` lacks counts as zero): what a unit's reads
 * must never do, loopback and configured classes included.
 */
export function unitWentBack(now: UnitCounts, before: UnitCounts): boolean {
  for (const d of ['ingress', 'egress'] as const)
    for (const [cls, was] of Object.entries(before.byClass[d])) {
      const is = now.byClass[d][cls];
      if ((is?.bytes ?? 0n) < was.bytes || (is?.packets ?? 0n) < was.packets) return true;
    }
  return false;
}

/** The largest count one pod can carry: the kernel's counters are unsigned 64-bit. */
export const U64_MAX = 2n ** 64n - 1n;

/** Why a pod's count text was refused (parseCount). */
export type CountProblem = 'not-decimal' | 'above-u64';

/**
 * One pod's count, as agents write it (Pod annotations, Node finals): an
 * unsigned 64-bit decimal, at most 20 digits and at most U64_MAX, no sign,
 * no leading zero, no spaces. Anything else is refused with its reason, so
 * no value a tenant can write on its pod reaches a total.
 */
export function parseCount(text: unknown): { value: bigint } | { problem: CountProblem } {
  if (typeof text !== 'string' || !/^(0|[1-9][0-9]*)$/.test(text)) return { problem: 'not-decimal' };
  if (text.length > 20) return { problem: 'above-u64' };
  const value = BigInt(text);
  return value <= U64_MAX ? { value } : { problem: 'above-u64' };
}

/** A pod's count, or undefined when parseCount refuses it. */
export function countOf(text: unknown): bigint | undefined {
  const parsed = parseCount(text);
  return 'value' in parsed ? parsed.value : undefined;
}

/** A pod's count as agents write it: the decoder's rule, so what is written is always read (a sum of per-CPU counters past U64_MAX stays at it). */
export function countText(value: bigint): string {
  return String(value < 0n ? 0n : value > U64_MAX ? U64_MAX : value);
}

/** The most digits a total may have: the CRDs' maxLength of every count field (helm/podmeter/crds/). */
export const TOTAL_DIGITS = 30;
const TOTAL = new RegExp(`^(0|[1-9][0-9]{0,${TOTAL_DIGITS - 1}})$`);

/** A total (a sum of pods' counts, as the operator's status holds it): a decimal of at most TOTAL_DIGITS digits, or undefined. */
export function parseDecimal(text: unknown): bigint | undefined {
  return typeof text === 'string' && TOTAL.test(text) ? BigInt(text) : undefined;
}

/** True when every field of `c` fits a status count field (at most TOTAL_DIGITS digits). */
export function fitsStatus(c: Counts): boolean {
  for (const f of FIELDS) if (c[f] < 0n || String(c[f]).length > TOTAL_DIGITS) return false;
  return true;
}

/** Counters as decimal strings: the totals always, a class field when not zero. */
export type CountStrings = Record<(typeof TOTAL_FIELDS)[number], string> & Partial<Record<ClassField, string>>;

/** Counters as decimal strings, field by field (CR status, JSON; finals with countText); zero class fields are left out. */
export function toStrings(c: Counts, format: (value: bigint) => string = String): CountStrings {
  const s: CountStrings = {
    ingressBytes: format(c.ingressBytes),
    egressBytes: format(c.egressBytes),
    ingressPackets: format(c.ingressPackets),
    egressPackets: format(c.egressPackets),
  };
  for (const f of CLASS_FIELDS) if (c[f] !== 0n) s[f] = format(c[f]);
  return s;
}

/**
 * Counters from an object of decimal strings; undefined when a total is
 * missing or any field is malformed (an absent class field is zero).
 * `parse` is parseDecimal for totals (status) and countOf for one pod's
 * counts as an agent wrote them (finals).
 */
export function fromStrings(
  value: unknown,
  parse: (text: unknown) => bigint | undefined = parseDecimal,
): Counts | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const c = zero();
  for (const field of FIELDS) {
    if (v[field] === undefined && isClassField(field)) continue;
    const n = parse(v[field]);
    if (n === undefined) return undefined;
    c[field] = n;
  }
  return c;
}
