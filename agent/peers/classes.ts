/**
 * Peer classes: where a pod's packets go to or come from. Every packet is
 * counted in one class slot (bpf/podmeter.h, enum podmeter_class): the
 * built-in classes in fixed slots, configured named CIDR classes in the
 * named slots. Counts by class are ClassTraffic (common/contract/counts.ts).
 *
 * Totals ("network traffic") are every class but loopback: a pod talking to
 * itself is not network traffic, as interface-based tools see it too.
 */
import type { ClassTraffic, Traffic } from '../../common/contract/counts.ts';
import {
  PODMETER_CLASSES,
  PODMETER_FIRST_NAMED,
  PODMETER_MAX_NAMED,
  PODMETER_NAME_LEN,
} from '../kernel/contract.generated.ts';

/** The built-in classes, in their slots (enum podmeter_class). */
export const BUILTIN_CLASSES = PODMETER_CLASSES;
export type BuiltinClass = (typeof BUILTIN_CLASSES)[number];

/** Each built-in class's slot. */
export const SLOT = Object.fromEntries(BUILTIN_CLASSES.map((name, slot) => [name, slot])) as Readonly<
  Record<BuiltinClass, number>
>;
export const FIRST_NAMED_SLOT = PODMETER_FIRST_NAMED;
export const MAX_NAMED_CLASSES = PODMETER_MAX_NAMED;
/** A name and its NUL. */
export const NAME_BYTES = PODMETER_NAME_LEN;

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Why `name` cannot be a configured class, or undefined when it can. */
export function classNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 63 || !NAME.test(name)) {
    return 'is not a valid class name (lower case letters, digits and -, starting and ending with a letter or digit, at most 63 characters)';
  }
  if ((BUILTIN_CLASSES as readonly string[]).includes(name)) {
    return `is a built-in class name (${BUILTIN_CLASSES.join(', ')})`;
  }
  return undefined;
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

  /**
   * One direction's slot sums (StatsMap.read, or a half of readUnit: bytes,
   * packets per slot) by class; empty slots are left out.
   */
  byClass(sums: BigUint64Array): ClassTraffic {
    const out: Record<string, Traffic> = {};
    for (let i = 0; i < sums.length; i += 2) {
      if (sums[i + 1] === 0n && sums[i] === 0n) continue;
      out[this.#names[i >> 1] ?? `slot-${i >> 1}`] = { bytes: sums[i]!, packets: sums[i + 1]! };
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
