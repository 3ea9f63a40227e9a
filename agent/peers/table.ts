/**
 * Keeps the kernel's peer trie equal to what podmeter knows about peers:
 * the configured named classes (fixed for the agent's life) and, in
 * Kubernetes mode, the cluster's view (nodes by topology, Service CIDRs:
 * agent/peers/cluster.ts), replaced whole on every change and applied to
 * the trie as a diff.
 *
 * The same prefix from two sources: a configured class wins (the operator
 * said so), then node, zone, cross-region, cross-zone, service. Nested
 * prefixes need no rule: the trie's longest match decides.
 */
import type { Logger } from '../../common/log.ts';
import type { BuiltinClass, SlotNames } from './classes.ts';
import { SLOT } from './classes.ts';
import type { Prefix } from './cidr.ts';
import type { PeerClassSpec } from './config.ts';
import type { PeerTrie, TrieEntry } from './trie.ts';

/** Prefixes by built-in class, as the cluster tells them. */
export type ClusterPeers = Partial<Record<Exclude<BuiltinClass, 'loopback' | 'external'>, readonly Prefix[]>>;

const PRECEDENCE: readonly (keyof ClusterPeers)[] = ['node', 'zone', 'cross-region', 'cross-zone', 'service'];

export class PeerTable {
  readonly #trie: PeerTrie;
  readonly #configured: Map<string, TrieEntry>;
  /** Service ranges given to the agent (--service-cidr), besides the cluster's. */
  readonly #services: readonly Prefix[];
  readonly #log: Logger;
  #cluster: ClusterPeers = {};

  constructor(options: {
    trie: PeerTrie;
    slots: SlotNames;
    configured: readonly PeerClassSpec[];
    services?: readonly Prefix[];
    log: Logger;
  }) {
    this.#trie = options.trie;
    this.#services = options.services ?? [];
    this.#log = options.log;
    this.#configured = new Map();
    for (const spec of options.configured) {
      const slot = options.slots.slotOf(spec.name);
      if (slot === undefined) throw new Error(`peer class '${spec.name}' has no counter slot`); // Meter.open assigned them
      for (const prefix of spec.prefixes) this.#configured.set(prefix.text, { prefix, slot });
    }
  }

  /**
   * Writes the configured classes to the trie. `keepCluster` (Kubernetes
   * mode): the cluster entries a previous agent left stay until the first
   * cluster view arrives, so a restart never counts a known peer as external.
   */
  start(options: { keepCluster: boolean }): void {
    if (options.keepCluster) {
      const kept: Record<string, Prefix[]> = {};
      const classOf = new Map(PRECEDENCE.map((cls) => [SLOT[cls], cls]));
      for (const entry of this.#trie.entries().values()) {
        const cls = classOf.get(entry.slot);
        if (cls !== undefined) (kept[cls] ??= []).push(entry.prefix);
      }
      this.#cluster = kept;
    }
    this.#apply('start');
  }

  /** The cluster's view changed: replace it. */
  setCluster(peers: ClusterPeers): void {
    this.#cluster = peers;
    this.#apply('cluster');
  }

  /** What the trie should hold now. */
  desired(): Map<string, TrieEntry> {
    const out = new Map<string, TrieEntry>();
    for (const cls of [...PRECEDENCE].reverse()) {
      const prefixes = cls === 'service' ? [...this.#services, ...(this.#cluster.service ?? [])] : this.#cluster[cls];
      for (const prefix of prefixes ?? []) out.set(prefix.text, { prefix, slot: SLOT[cls] });
    }
    for (const [text, entry] of this.#configured) out.set(text, entry);
    return out;
  }

  #apply(why: string): void {
    const desired = this.desired();
    try {
      const changes = this.#trie.apply(desired);
      if (changes.added + changes.changed + changes.removed > 0)
        this.#log.info({ ...changes, entries: desired.size, why }, 'peer trie updated');
    } catch (err) {
      // Counting goes on (unknown peers count as external); the next change tries again.
      this.#log.error({ err, entries: desired.size, why }, 'peer trie update failed');
    }
  }
}
