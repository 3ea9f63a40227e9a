/**
 * Peer classes: where a pod's packets go to or come from. Every packet is
 * counted in one class slot (bpf/podmeter.h): the built-in classes in fixed
 * slots, configured named CIDR classes in the named slots. PeerCounts is the
 * one type for "counts by class" that everything downstream (metrics, API,
 * state, later annotations and rollups) carries.
 *
 * Totals ("network traffic") are every class but loopback: a pod talking to
 * itself is not network traffic, as interface-based tools see it too.
 */
import type { Counters, Direction } from '../kernel/bpf.ts';
import { PODMETER_FIRST_NAMED, PODMETER_NAME_LEN, PODMETER_SLOTS } from '../kernel/layout.ts';

export const BUILTIN_CLASSES = [
  'loopback',
  'node',
  'zone',
  'cross-zone',
  'cross-region',
  'service',
  'external',
] as const;
export type BuiltinClass = (typeof BUILTIN_CLASSES)[number];

/** Kept in step with enum podmeter_class and PODMETER_* in bpf/podmeter.h. */
export const SLOT: Readonly<Record<BuiltinClass, number>> = {
  loopback: 0,
  node: 1,
  zone: 2,
  'cross-zone': 3,
  'cross-region': 4,
  service: 5,
  external: 6,
};
export const FIRST_NAMED_SLOT = PODMETER_FIRST_NAMED;
export const SLOTS = PODMETER_SLOTS;
export const MAX_NAMED_CLASSES = SLOTS - FIRST_NAMED_SLOT;
/** A name and its NUL. */
export const NAME_BYTES = PODMETER_NAME_LEN;

/**
 * Counts from before peer classes existed (an agent upgraded over the pins of
 * one that counted without classes): part of the totals, in no known class.
 */
export const UNCLASSIFIED = 'unclassified';

/** Counters by class name; a class with no packet is absent. */
export type PeerCounts = Readonly<Record<string, Counters>>;
export type DirectionPeerCounts = Readonly<Record<Direction, PeerCounts>>;

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Why `name` cannot be a configured class, or undefined when it can. */
export function classNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 63 || !NAME.test(name)) {
    return 'is not a valid class name (lower case letters, digits and -, starting and ending with a letter or digit, at most 63 characters)';
  }
  if ((BUILTIN_CLASSES as readonly string[]).includes(name) || name === UNCLASSIFIED) {
    return `is a built-in class name (${[...BUILTIN_CLASSES, UNCLASSIFIED].join(', ')})`;
  }
  return undefined;
}

/** Sum over every class but loopback: the unit's network traffic. */
export function networkTotal(peers: PeerCounts): Counters {
  let bytes = 0n;
  let packets = 0n;
  for (const name in peers) {
    if (name === 'loopback') continue;
    bytes += peers[name]!.bytes;
    packets += peers[name]!.packets;
  }
  return { bytes, packets };
}

/** a + b class by class. */
export function addPeerCounts(a: PeerCounts, b: PeerCounts): PeerCounts {
  const out: Record<string, Counters> = { ...a };
  for (const name in b) {
    const x = out[name];
    const y = b[name]!;
    out[name] = x === undefined ? y : { bytes: x.bytes + y.bytes, packets: x.packets + y.packets };
  }
  return out;
}

/**
 * Which class each slot holds: the built-in ones, then the configured names
 * in the slots recorded next to the counters (see SlotAssignment).
 */
export class SlotNames {
  readonly #names: (string | undefined)[];

  constructor(named: readonly (string | undefined)[]) {
    this.#names = [...BUILTIN_CLASSES, ...Array.from({ length: MAX_NAMED_CLASSES }, (_, i) => named[i])];
  }

  /** Class name of a slot; undefined for a named slot nobody holds. */
  name(slot: number): string | undefined {
    return this.#names[slot];
  }

  slotOf(name: string): number | undefined {
    const i = this.#names.indexOf(name);
    return i < 0 ? undefined : i;
  }

  /** Named classes by slot offset (index 0 is slot FIRST_NAMED_SLOT). */
  named(): (string | undefined)[] {
    return this.#names.slice(FIRST_NAMED_SLOT);
  }

  /** Slot sums (one direction of StorageMap.readUnit: bytes, packets per slot) to counts by class; empty slots are left out. */
  countsOfSums(sums: BigUint64Array): PeerCounts {
    const out: Record<string, Counters> = {};
    for (let i = 0; i < sums.length; i += 2) {
      if (sums[i + 1] === 0n && sums[i] === 0n) continue;
      out[this.#names[i >> 1] ?? `slot-${i >> 1}`] = { bytes: sums[i]!, packets: sums[i + 1]! };
    }
    return out;
  }

  /** Slot counters (summed over CPUs) to counts by class; empty slots are left out. */
  countsOf(slots: readonly Counters[]): PeerCounts {
    const out: Record<string, Counters> = {};
    for (let i = 0; i < slots.length; i++) {
      const c = slots[i]!;
      if (c.packets === 0n && c.bytes === 0n) continue;
      out[this.#names[i] ?? `slot-${i}`] = c;
    }
    return out;
  }
}

/**
 * Gives each configured class a named slot, keeping the slots already taken:
 * `recorded` is what the pins hold (index 0 = first named slot). A name that
 * is no longer configured keeps its slot (existing counters still hold its
 * counts, and it stays reported under its name); a new name takes the first
 * free slot. Throws when there is none.
 */
export function assignSlots(
  recorded: readonly (string | undefined)[],
  configured: readonly string[],
): (string | undefined)[] {
  const named = Array.from({ length: MAX_NAMED_CLASSES }, (_, i) => recorded[i]);
  for (const name of configured) {
    if (named.includes(name)) continue;
    const free = named.indexOf(undefined);
    if (free < 0) {
      throw new Error(
        `peer class '${name}': all ${MAX_NAMED_CLASSES} named class slots are taken (${named.join(', ')}); ` +
          'a class keeps its slot while the pinned counters exist, so its counts are never reported under another name. ' +
          'Free them by removing the pins (podmeter agent --bpffs DIR, after detaching: rm -r DIR) or configure fewer classes.',
      );
    }
    named[free] = name;
  }
  return named;
}
