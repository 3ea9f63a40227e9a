/**
 * The peer trie in the kernel (bpf/podmeter.bpf.c podmeter_peers): prefix ->
 * class slot. Changes are applied as a diff against what the trie holds (it
 * is pinned: an agent restart finds the previous agent's entries), then the
 * generation is bumped so the programs drop their cached classes.
 */
import type { BpfMap } from '../kernel/bpf.ts';
import { readU32, u32Bytes } from '../kernel/bytes.ts';
import { PODMETER_GENERATION_MASK as GENERATION_MASK } from '../kernel/contract.generated.ts';
import { KEY_BYTES, keyPrefix, prefixKey, type Prefix } from './cidr.ts';

const ZERO_KEY = new Uint8Array(4);

export interface TrieEntry {
  prefix: Prefix;
  slot: number;
}

export class PeerTrie {
  readonly #trie: BpfMap;
  readonly #generation: BpfMap;

  constructor(trie: BpfMap, generation: BpfMap) {
    this.#trie = trie;
    this.#generation = generation;
  }

  /** What the kernel holds now, by canonical prefix text. */
  entries(): Map<string, TrieEntry> {
    const out = new Map<string, TrieEntry>();
    for (const key of this.#trie.keys(KEY_BYTES)) {
      const value = this.#trie.lookup(key, 4);
      if (value === undefined) continue; // deleted meanwhile
      const prefix = keyPrefix(key);
      out.set(prefix.text, { prefix, slot: readU32(value) });
    }
    return out;
  }

  /**
   * Makes the trie hold exactly `desired`; returns how many entries changed.
   * All or nothing: when a write fails part-way (the trie full, ENOMEM), the
   * writes made are undone in reverse order, so the trie holds what it held
   * before, and the error is thrown. The generation is then bumped all the
   * same: a class the programs cached from a half-written trie is dropped.
   */
  apply(desired: ReadonlyMap<string, TrieEntry>): { added: number; changed: number; removed: number } {
    const current = this.entries();
    const result = { added: 0, changed: 0, removed: 0 };
    /** What each write replaced (undefined: nothing), newest last. */
    const undo: { prefix: Prefix; slot: number | undefined }[] = [];
    try {
      // Adds and changes before removals: a prefix moving to a more specific
      // entry never falls through to `external` in between.
      for (const [text, entry] of desired) {
        const now = current.get(text);
        if (now?.slot === entry.slot) continue;
        undo.push({ prefix: entry.prefix, slot: now?.slot });
        this.#trie.update(prefixKey(entry.prefix), u32Bytes(entry.slot));
        if (now === undefined) result.added++;
        else result.changed++;
      }
      for (const [text, entry] of current) {
        if (desired.has(text)) continue;
        undo.push({ prefix: entry.prefix, slot: entry.slot });
        this.#trie.delete(prefixKey(entry.prefix));
        result.removed++;
      }
    } catch (err) {
      throw this.#rollBack(undo, err);
    }
    if (result.added + result.changed + result.removed > 0 || this.generation() === 0) this.bump();
    return result;
  }

  /** Undoes `undo` (newest first) after `cause`; returns the error to throw. */
  #rollBack(undo: readonly { prefix: Prefix; slot: number | undefined }[], cause: unknown): Error {
    let undone = 0;
    try {
      for (const { prefix, slot } of [...undo].reverse()) {
        if (slot === undefined) this.#trie.delete(prefixKey(prefix));
        else this.#trie.update(prefixKey(prefix), u32Bytes(slot));
        undone++;
      }
    } catch (undoErr) {
      this.#bumpQuietly();
      return new Error(
        `peer trie update failed after ${undo.length} writes (${(cause as Error).message}), and undoing them failed after ${undone} (${(undoErr as Error).message}): the trie is partly updated`,
        { cause },
      );
    }
    if (undo.length > 0) this.#bumpQuietly();
    return new Error(
      `peer trie update failed after ${undo.length} writes, all undone: the trie holds what it held before (${(cause as Error).message})`,
      { cause },
    );
  }

  #bumpQuietly(): void {
    try {
      this.bump();
    } catch {
      // the generation map is an array of one: an update fails only with the map gone
    }
  }

  /** The slot the programs would count a peer at `addr` (16 bytes, IPv4-mapped for IPv4) in; undefined: external. */
  slotOf(addr: Uint8Array): number | undefined {
    const value = this.#trie.lookup(prefixKey({ text: '', addr, bits: 128 }), 4);
    return value === undefined ? undefined : readU32(value);
  }

  /** Puts one prefix in (tests and benchmarks; the agent uses apply()). */
  set(prefix: Prefix, slot: number): void {
    this.#trie.update(prefixKey(prefix), u32Bytes(slot));
    this.bump();
  }

  generation(): number {
    const value = this.#generation.lookup(ZERO_KEY, 4);
    return value === undefined ? 0 : readU32(value);
  }

  /**
   * Invalidates every cached class. The programs compare 28 bits
   * (PODMETER_GENERATION_MASK), and 0 turns their cache off: never 0 there.
   */
  bump(): void {
    const next = (this.generation() + 1) & GENERATION_MASK;
    this.#generation.update(ZERO_KEY, u32Bytes(next === 0 ? 1 : next));
  }
}
