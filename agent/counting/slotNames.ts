/**
 * Which configured peer class counts in each named slot, recorded in
 * podmeter_names beside the counters: an agent restart, or one configured
 * with other classes, finds each class in the slot it had (assignSlots).
 */
import { endianness } from 'node:os';
import type { Logger } from '../../common/log.ts';
import type { BpfMap } from '../kernel/bpf.ts';
import { assignSlots, FIRST_NAMED_SLOT, MAX_NAMED_CLASSES, NAME_BYTES, SlotNames } from '../peers/classes.ts';

/** Keeps the recorded slot of every class and records new ones. */
export function recordSlotNames(names: BpfMap, configured: readonly string[], log: Logger): SlotNames {
  const decoder = new TextDecoder();
  const recorded: (string | undefined)[] = [];
  for (let i = 0; i < MAX_NAMED_CLASSES; i++) {
    const raw = names.lookup(slotKey(FIRST_NAMED_SLOT + i), NAME_BYTES);
    const end = raw?.indexOf(0) ?? -1;
    const name = raw === undefined ? '' : decoder.decode(raw.subarray(0, end < 0 ? raw.length : end));
    recorded.push(name === '' ? undefined : name);
  }
  const named = assignSlots(recorded, configured);
  const encoder = new TextEncoder();
  named.forEach((name, i) => {
    if (name === undefined || name === recorded[i]) return;
    const value = new Uint8Array(NAME_BYTES);
    value.set(encoder.encode(name).subarray(0, NAME_BYTES - 1));
    names.update(slotKey(FIRST_NAMED_SLOT + i), value);
    log.info({ peerClass: name, slot: FIRST_NAMED_SLOT + i }, 'peer class given a counter slot');
  });
  return new SlotNames(named);
}

function slotKey(slot: number): Uint8Array {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, slot, endianness() === 'LE');
  return key;
}
