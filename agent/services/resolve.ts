/**
 * Which class a Service flow's bytes belong in: the class of the backend
 * that kube-proxy's DNAT (iptables, nftables or IPVS, all through
 * conntrack) picked for it, found in the node's conntrack table (the reply
 * tuple's source) and classed by the peer trie, as the programs would class
 * a packet sent to the backend itself. A flow keeps its class from drain to
 * drain while it counts (its conntrack entry may be gone by the time a
 * later drain reads it: a closed TCP connection's last bytes).
 */
import type { Conntrack, FlowTuple } from '../kernel/conntrack.ts';
import { SLOT, type SlotNames } from '../peers/classes.ts';
import type { PeerTrie } from '../peers/trie.ts';
import type { FlowEntry } from './tables.ts';

/** Why a flow's bytes stayed in `service` (besides the kernel's reasons, tables.ts KernelMiss). */
export const RESOLVE_MISSES = ['no-conntrack-entry', 'backend-is-a-service', 'conntrack-unavailable'] as const;
export type ResolveMiss = (typeof RESOLVE_MISSES)[number];

export type Resolution = { cls: string } | { miss: ResolveMiss };

export class FlowResolver {
  /** Undefined when the node's conntrack table cannot be read (logged where it was opened). */
  readonly #conntrack: Conntrack | undefined;
  readonly #trie: PeerTrie;
  readonly #slots: SlotNames;
  readonly #onError: (err: unknown) => void;
  /** Each flow's class as last resolved, for the flows of the last drain. */
  #known = new Map<string, string>();
  /** The same for the flows of this drain so far (settle() makes it #known). */
  #next = new Map<string, string>();

  constructor(options: {
    conntrack: Conntrack | undefined;
    trie: PeerTrie;
    slots: SlotNames;
    onError: (err: unknown) => void;
  }) {
    this.#conntrack = options.conntrack;
    this.#trie = options.trie;
    this.#slots = options.slots;
    this.#onError = options.onError;
  }

  /** The class of each flow, `entries[i]` for `out[i]`: one slice of a drain's flows (called once or more per drain). */
  resolve(entries: readonly FlowEntry[]): Resolution[] {
    const out: Resolution[] = new Array<Resolution>(entries.length);
    const ask: number[] = [];
    entries.forEach((e, i) => {
      const cls = this.#known.get(e.id);
      if (cls === undefined) ask.push(i);
      else out[i] = { cls };
    });
    if (ask.length > 0) {
      const tuples = ask.map((i): FlowTuple => {
        const e = entries[i]!;
        return {
          protocol: e.protocol,
          local: e.local,
          localPort: e.localPort,
          remote: e.remote,
          remotePort: e.remotePort,
        };
      });
      const backends = this.#backends(tuples);
      ask.forEach((i, n) => {
        const backend = backends?.[n];
        if (backends === undefined) out[i] = { miss: 'conntrack-unavailable' };
        else out[i] = backend === undefined ? { miss: 'no-conntrack-entry' } : this.#classOf(backend.address);
      });
    }
    entries.forEach((e, i) => {
      const r = out[i]!;
      if ('cls' in r) this.#next.set(e.id, r.cls);
    });
    return out;
  }

  /** A drain's flows are all resolved: flows not in it are forgotten. */
  settle(): void {
    this.#known = this.#next;
    this.#next = new Map();
  }

  /** The backends of `tuples`; undefined when conntrack cannot be asked (the error reported). */
  #backends(tuples: readonly FlowTuple[]): ReturnType<Conntrack['backends']> | undefined {
    if (this.#conntrack === undefined) return undefined;
    try {
      return this.#conntrack.backends(tuples);
    } catch (err) {
      this.#onError(err);
      return undefined;
    }
  }

  #classOf(address: Uint8Array): Resolution {
    const slot = this.#trie.slotOf(address);
    if (slot === SLOT.service) return { miss: 'backend-is-a-service' };
    if (slot === undefined) return { cls: 'external' };
    return { cls: this.#slots.name(slot) ?? `slot-${slot}` };
  }
}
