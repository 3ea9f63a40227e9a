/**
 * The ledger: cluster totals per namespace, workload and node that count
 * every pod exactly once and never go down when pods die, persisted in the
 * status of the operator's custom resources (so a restarted or newly
 * elected operator continues where the last one stopped).
 *
 *   total = sum of the live pods' checkpointed counts + retired
 *
 * - A live pod's counts enter the totals in two steps: first its NodeUsage
 *   is written with the pod's counts in `status.checkpoint`, then the
 *   NamespaceUsage and WorkloadUsage include them. Whatever a total ever
 *   showed is therefore on record in a NodeUsage.
 * - A pod that dies is retired: its final counts (the DELETED event's
 *   annotations) move from the checkpoint into `retired` of its NodeUsage
 *   and into `status.retiring` (the intent), in one write; then into
 *   `retired` of its namespace and workload, each guarded by its
 *   `recentlyRetired` uids (idempotent); then the intent is marked
 *   `rolledUp`. Each write is one object, made with its resourceVersion.
 * - On becoming leader the operator reads all three kinds: a checkpointed
 *   pod that no longer exists died while no operator ran (retired with its
 *   checkpointed counts, or with its final counts if this process saw the
 *   deletion as a standby); intents not rolled up are finished.
 * - The agents' Node annotation `podmeter.io/finals` (nodeFinals.ts) holds
 *   each terminated pod's final counts for 10 minutes. A pod is retired with
 *   the larger of its last annotations and that final; a final that arrives
 *   after the pod was retired with less adds the difference once (a top-up,
 *   retired under the key `<uid>+final`); a final of a pod no ledger has
 *   (deleted while no operator ran, never checkpointed) retires it.
 *
 * NodeUsage stays small because a node holds at most ~110 pods; only pods
 * with traffic are checkpointed.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { bytes } from '../cli/format.ts';
import type { WriteBudget } from '../agent/kube/budget.ts';
import { FINALS_WINDOW_MS } from '../agent/kube/finals.ts';
import { ApiError, describe, type KubeApi } from './kube/api.ts';
import { addTo, copy, equal, isZero, subFrom, sum, toStrings, wentBack, zero, type Counts, FIELDS } from './counts.ts';
import type { Workload } from './owners.ts';
import type { PodFinal } from './nodeFinals.ts';
import { contribution, type PodListener, type PodRecord, type PodStore } from './pods.ts';
import {
  GROUP,
  NAMESPACE_LABEL,
  VERSION,
  emptyLedgerState,
  parseLedger,
  statusTotals,
  usagePath,
  workloadUsageName,
  type CheckpointEntry,
  type LedgerState,
  type RetiringEntry,
  type UsageKind,
  type UsageObject,
  type UsageStatus,
} from './usage.ts';

/** A pod being retired: a live record, or one known only from a checkpoint (it died while no operator ran). */
interface Retiree {
  uid: string;
  namespace: string;
  workload: Workload | undefined;
  checkpointed: Counts | undefined;
  /** Counts from before the agent's counters restarted (added to the agent's final). */
  base?: Counts | undefined;
}

/** A top-up's retirement key: what a pod's final adds after it was retired with less. */
const TOP_UP = '+final';

interface Entry {
  kind: UsageKind;
  name: string;
  /** WorkloadUsage: which workload (its spec). */
  workload?: Workload;
  /** Sum of the checkpointed counts of the live pods counted here. */
  live: Counts;
  pods: number;
  /** NodeUsage: the live pods on the node. */
  members?: Set<PodRecord>;
  // --- as persisted (and read back) ---
  exists: boolean;
  resourceVersion: string | undefined;
  retired: Counts;
  retiredPods: number;
  /** NamespaceUsage/WorkloadUsage: uid -> when retired. */
  recent: Map<string, number>;
  /** NodeUsage: retired pods and whether their namespace and workload have them. */
  retiring: Map<string, { entry: RetiringEntry; counts: Counts; at: number }>;
  // --- not yet persisted ---
  /** NodeUsage: uid -> pod to retire with its final counts; others: uid -> final counts. */
  pendingNode: Map<string, { pod: Retiree; final: Counts }>;
  pending: Map<string, Counts>;
  bpfMapBytes: bigint | undefined;
  dirtyAt: number | undefined;
  writtenAt: number;
  /** Bumped by every change, so a change made while a write was on its way is not forgotten by it. */
  changes: number;
  /** Hash of the last status written (without its time), to skip writes that change nothing. */
  lastBody: string;
}

export interface LedgerOptions {
  api: KubeApi;
  pods: PodStore;
  identity: string;
  log: Logger;
  /** Spent by every status write (all kinds together). */
  budget: WriteBudget;
  onError: (op: string) => void;
  /** How long retired uids are kept for idempotence (default 15 min). */
  retiredTtlMs?: number;
  /** How long a deletion seen by this process is remembered for a later takeover (default 5 min). */
  rememberDeletesMs?: number;
  /** Minimum time between two writes of the same object, by kind. */
  minIntervalMs?: Partial<Record<UsageKind, number>>;
}

export interface UsageTotal {
  kind: UsageKind;
  name: string;
  workload?: Workload;
  total: Counts;
  pods: number;
  bpfMapBytes?: bigint;
}

const KINDS: readonly UsageKind[] = ['NodeUsage', 'NamespaceUsage', 'WorkloadUsage'];

export class Ledger implements PodListener {
  readonly #o: LedgerOptions;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #dirtySet = new Set<Entry>();
  /** uid -> the NodeUsage whose intent waits for its namespace (ns) and workload (wl). */
  readonly #rollup = new Map<string, { node: Entry; ns: boolean; wl: boolean }>();
  /** Deletions this process saw, leader or not: the final counts for a takeover. */
  readonly #deleted = new Map<string, { pod: Retiree; node: string; final: Counts; at: number }>();
  readonly #nodeMapBytes = new Map<string, bigint>();
  /** The agents' finals (Node annotations), by node then pod uid; kept for their usable time. */
  readonly #nodeFinals = new Map<string, Map<string, PodFinal>>();
  readonly #problemsLogged = new Set<string>();
  readonly #ttlMs: number;
  readonly #rememberMs: number;
  readonly #minInterval: Record<UsageKind, number>;
  #active = false;
  #generation = 0;
  #writing = false;
  #outageSince: number | undefined;

  constructor(options: LedgerOptions) {
    this.#o = options;
    this.#log = options.log;
    this.#ttlMs = options.retiredTtlMs ?? 15 * 60_000;
    this.#rememberMs = options.rememberDeletesMs ?? 5 * 60_000;
    this.#minInterval = { NodeUsage: 1000, NamespaceUsage: 1000, WorkloadUsage: 2000, ...options.minIntervalMs };
  }

  /** True while this process is the leader and has read the persisted ledger. */
  get active(): boolean {
    return this.#active;
  }

  // --- pod events (PodListener) -------------------------------------------

  added(p: PodRecord): void {
    if (this.#active) this.#attach(p);
  }

  assigned(p: PodRecord): void {
    if (this.#active && p.workload) this.#entry('WorkloadUsage', p.workload).pods++;
  }

  changed(p: PodRecord, previous: { node: string }): void {
    if (!this.#active) return;
    if (previous.node === '' && p.node !== '') this.#entry('NodeUsage', p.node).members!.add(p);
    if (p.node !== '') this.#dirty(this.#entry('NodeUsage', p.node));
  }

  deleted(p: PodRecord, last: Counts): void {
    const now = Date.now();
    const agentFinal = this.#nodeFinals.get(p.node)?.get(p.uid);
    const final = agentFinal === undefined ? last : maxOf(last, withBase(p, agentFinal.counts));
    if (p.node !== '' && !isZero(final)) this.#deleted.set(p.uid, { pod: p, node: p.node, final: copy(final), at: now });
    if (!this.#active) return;
    this.#detach(p);
    this.#retire(p, p.node, final, now);
  }

  /** A Node's `podmeter.io/bpf-map-bytes` (undefined: none or the Node went away). */
  nodeMapBytes(node: string, value: bigint | undefined): void {
    if (value === undefined) this.#nodeMapBytes.delete(node);
    else this.#nodeMapBytes.set(node, value);
    if (!this.#active) return;
    const key = `NodeUsage/${node}`;
    if (value === undefined && !this.#entries.has(key)) return;
    const e = this.#entry('NodeUsage', node);
    if (e.bpfMapBytes !== value) {
      e.bpfMapBytes = value;
      this.#dirty(e);
    }
  }

  /** A Node's `podmeter.io/finals` (new entries are added; entries stay for their usable time even if the Node goes). */
  nodeFinals(node: string, finals: PodFinal[]): void {
    const now = Date.now();
    let known = this.#nodeFinals.get(node);
    if (known !== undefined) dropStale(known, now);
    for (const f of finals) {
      if (isStale(f, now)) continue;
      const before = known?.get(f.uid);
      if (before !== undefined && equal(before.counts, f.counts)) continue;
      if (known === undefined) this.#nodeFinals.set(node, (known = new Map()));
      known.set(f.uid, f);
      if (this.#active) this.#applyFinal(node, f, now);
    }
  }

  get clusterMapBytes(): bigint {
    let total = 0n;
    for (const v of this.#nodeMapBytes.values()) total += v;
    return total;
  }

  // --- leadership ---------------------------------------------------------

  /**
   * Reads the persisted ledger and rebuilds the totals from it and the pods
   * now known; then this process writes. Throws if the CRs cannot be read
   * (not installed, no permission): the caller retries.
   */
  async activate(): Promise<void> {
    const generation = ++this.#generation;
    const loaded = new Map<UsageKind, { name: string; object: UsageObject; state: LedgerState }[]>();
    for (const kind of KINDS) loaded.set(kind, await this.#listAll(kind));
    if (generation !== this.#generation) return; // stepped down meanwhile
    this.#entries.clear();
    this.#dirtySet.clear();
    this.#rollup.clear();
    const now = Date.now();
    const pods = this.#o.pods;
    for (const p of pods.values()) p.checkpointed = undefined;

    for (const kind of KINDS) {
      for (const { name, object, state } of loaded.get(kind)!) {
        const e = kind === 'WorkloadUsage' ? this.#workloadEntryFromObject(name, object) : this.#entry(kind, name);
        if (e === undefined) continue;
        e.exists = true;
        e.resourceVersion = object.metadata.resourceVersion;
        e.retired = state.retired;
        e.retiredPods = state.retiredPods;
        e.recent = state.recent;
        e.retiring = state.retiring;
        this.#reportProblems(kind, name, state.problems);
      }
    }
    const ghosts: Retiree[] = [];
    for (const { name, state } of loaded.get('NodeUsage')!) {
      const node = this.#entry('NodeUsage', name);
      for (const [uid, cp] of state.checkpoint) {
        const w = this.#workloadOf(cp.entry.namespace, cp.entry.workloadKind, cp.entry.workload);
        const p = pods.get(uid);
        if (p !== undefined) {
          pods.pin(p, w);
          if (cp.base !== undefined) p.base = cp.base;
          // A counter whose annotation this process never read is the checkpoint's, not zero (zero would look like a counter restart and count the pod twice).
          if (p.unread !== undefined) {
            p.annotated = copy(p.annotated);
            for (const f of p.unread) {
              const read = cp.counts[f] - (p.base?.[f] ?? 0n);
              p.annotated[f] = read > 0n ? read : 0n;
            }
            p.unread = undefined;
          }
          if (wentBack(contribution(p), cp.counts)) p.base = copy(cp.counts); // the agent's counters restarted while no operator ran
          p.checkpointed = cp.counts;
          continue;
        }
        // Died while no operator was leader: retire it with the best final known.
        const ghost: Retiree = { uid, namespace: cp.entry.namespace, workload: w, checkpointed: cp.counts, base: cp.base };
        const seen = this.#deleted.get(uid);
        const final = seen === undefined ? cp.counts : maxOf(seen.final, cp.counts);
        node.pendingNode.set(uid, { pod: ghost, final });
        ghosts.push(ghost);
      }
      for (const [uid, r] of node.retiring) {
        if (!r.entry.rolledUp) this.#rollUp(node, uid, this.#workloadOf(r.entry.namespace, r.entry.workloadKind, r.entry.workload), r.counts);
      }
    }
    // Deletions this process saw that no NodeUsage has on record (never checkpointed, or died during the handover).
    for (const [uid, d] of this.#deleted) {
      if (now - d.at > this.#rememberMs) continue;
      const node = this.#entry('NodeUsage', d.node);
      if (node.pendingNode.has(uid) || node.retiring.has(uid)) continue;
      // Not in any checkpoint, so in no total yet: retired with nothing to take back.
      const workload = d.pod.workload ?? (isPodRecord(d.pod) ? this.#o.pods.workloadOf(d.pod, now, true) : undefined);
      this.#retire({ uid, namespace: d.pod.namespace, workload, checkpointed: undefined }, d.node, d.final, now);
    }
    for (const p of pods.values()) this.#attach(p);
    for (const p of pods.values()) if (p.checkpointed !== undefined) this.#addLive(p, p.checkpointed);
    for (const g of ghosts) if (g.checkpointed !== undefined) this.#addLive(g, g.checkpointed);
    for (const e of this.#entries.values()) if (e.members) e.live = checkpointedSum(e.members);
    for (const [node, bytes] of this.#nodeMapBytes) this.#entry('NodeUsage', node).bpfMapBytes = bytes;
    for (const [node, finals] of this.#nodeFinals) for (const f of finals.values()) this.#applyFinal(node, f, now);
    for (const e of this.#entries.values()) this.#dirty(e, now);
    this.#active = true;
    this.#log.info({ namespaces: loaded.get('NamespaceUsage')!.length, workloads: loaded.get('WorkloadUsage')!.length, nodes: loaded.get('NodeUsage')!.length, pods: pods.size, diedWhileAway: ghosts.length }, 'ledger loaded');
  }

  /** Stops writing and forgets the persisted state (a later activate() reads it again). */
  deactivate(): void {
    this.#generation++;
    this.#active = false;
    this.#entries.clear();
    this.#dirtySet.clear();
    this.#rollup.clear();
    for (const p of this.#o.pods.values()) p.checkpointed = undefined;
  }

  // --- writing ------------------------------------------------------------

  /** Objects waiting to be written. */
  get dirty(): number {
    return this.#dirtySet.size;
  }

  /**
   * One round: writes the objects that changed (NodeUsage first: the others
   * only include what a NodeUsage has on record), within the write budget
   * and each object's minimum interval. Returns the number of writes.
   */
  async reconcile(now = Date.now(), options: { ignoreIntervals?: boolean } = {}): Promise<number> {
    if (!this.#active || this.#writing) return 0;
    this.#writing = true;
    let writes = 0;
    try {
      this.#forget(now);
      for (const kind of KINDS) {
        const due = [...this.#dirtySet]
          .filter((e) => e.kind === kind && e.dirtyAt !== undefined && (options.ignoreIntervals || now - e.writtenAt >= this.#minInterval[kind]))
          .sort((a, b) => a.dirtyAt! - b.dirtyAt!);
        for (const e of due) {
          if (!this.#active) return writes;
          const result = await this.#write(e);
          if (result === 'written') writes++;
          if (result === 'budget' || result === 'outage') return writes;
        }
      }
      return writes;
    } finally {
      this.#writing = false;
    }
  }

  /** Totals as the metrics show them (leader only; empty otherwise). */
  totals(kind: UsageKind): UsageTotal[] {
    if (!this.#active) return [];
    const out: UsageTotal[] = [];
    for (const e of this.#entries.values()) {
      if (e.kind !== kind) continue;
      const total = sum(e.live, e.retired);
      if (kind === 'NodeUsage') for (const p of e.pendingNode.values()) addTo(total, p.final);
      else for (const [uid, f] of e.pending) if (!e.recent.has(uid)) addTo(total, f);
      out.push({ kind, name: e.name, ...(e.workload ? { workload: e.workload } : {}), total, pods: e.members?.size ?? e.pods, ...(e.bpfMapBytes !== undefined ? { bpfMapBytes: e.bpfMapBytes } : {}) });
    }
    return out;
  }

  // --- internals ----------------------------------------------------------

  #entry(kind: UsageKind, nameOrWorkload: string | Workload): Entry {
    const name = typeof nameOrWorkload === 'string' ? nameOrWorkload : workloadUsageName(nameOrWorkload);
    const key = `${kind}/${name}`;
    let e = this.#entries.get(key);
    if (e === undefined) {
      e = {
        kind,
        name,
        ...(typeof nameOrWorkload === 'string' ? {} : { workload: nameOrWorkload }),
        live: zero(),
        pods: 0,
        ...(kind === 'NodeUsage' ? { members: new Set<PodRecord>() } : {}),
        exists: false,
        resourceVersion: undefined,
        retired: zero(),
        retiredPods: 0,
        recent: new Map(),
        retiring: new Map(),
        pendingNode: new Map(),
        pending: new Map(),
        bpfMapBytes: kind === 'NodeUsage' ? this.#nodeMapBytes.get(name) : undefined,
        dirtyAt: undefined,
        writtenAt: 0,
        changes: 0,
        lastBody: '',
      };
      this.#entries.set(key, e);
    }
    return e;
  }

  #workloadEntryFromObject(name: string, object: UsageObject): Entry | undefined {
    const s = object.spec;
    if (!s?.namespace || !s.kind || !s.name) {
      this.#reportProblems('WorkloadUsage', name, ['spec has no namespace/kind/name: ignored']);
      return undefined;
    }
    const w = this.#workloadOf(s.namespace, s.kind, s.name);
    if (workloadUsageName(w) !== name) {
      this.#reportProblems('WorkloadUsage', name, [`spec names workload ${w.key}, whose object is ${workloadUsageName(w)}: ignored`]);
      return undefined;
    }
    return this.#entry('WorkloadUsage', w);
  }

  #workloadOf(namespace: string, kind: string, name: string): Workload {
    return { namespace, kind, name, key: `${namespace}/${kind}/${name}` };
  }

  #dirty(e: Entry, now = Date.now()): void {
    e.dirtyAt ??= now;
    e.changes++;
    this.#dirtySet.add(e);
  }

  /** Written (or nothing to write) as of change `seen`: clean, unless it changed since or `again` asks for another write later. */
  #clean(e: Entry, seen: number, again: number | undefined): void {
    if (e.changes !== seen) return; // changed while the write was on its way: stays dirty
    e.dirtyAt = again;
    if (again === undefined) this.#dirtySet.delete(e);
  }

  #attach(p: PodRecord): void {
    this.#entry('NamespaceUsage', p.namespace).pods++;
    if (p.workload) this.#entry('WorkloadUsage', p.workload).pods++;
    if (p.node !== '') {
      const node = this.#entry('NodeUsage', p.node);
      node.members!.add(p);
      this.#dirty(node);
    }
  }

  #detach(p: PodRecord): void {
    this.#entry('NamespaceUsage', p.namespace).pods--;
    if (p.workload) this.#entry('WorkloadUsage', p.workload).pods--;
    if (p.node !== '') this.#entry('NodeUsage', p.node).members!.delete(p);
  }

  /** Adds checkpointed counts of a pod to its namespace's and workload's live sums. */
  #addLive(p: Retiree, counts: Counts): void {
    addTo(this.#entry('NamespaceUsage', p.namespace).live, counts);
    if (p.workload) addTo(this.#entry('WorkloadUsage', p.workload).live, counts);
  }

  #retire(p: Retiree, nodeName: string, final: Counts, now: number): void {
    if (nodeName === '') {
      if (!isZero(final)) this.#log.warn({ namespace: p.namespace, uid: p.uid }, 'a pod with counts but no node died: not counted (only pods on nodes are)');
      return;
    }
    if (p.workload === undefined && isPodRecord(p)) p.workload = this.#o.pods.workloadOf(p, now, true);
    if (isZero(final) && p.checkpointed === undefined) return; // never counted anywhere: nothing to retire
    const node = this.#entry('NodeUsage', nodeName);
    if (node.retiring.has(p.uid)) return; // already retired (seen again after a relist or takeover)
    if (p.checkpointed !== undefined) subFrom(node.live, p.checkpointed);
    node.pendingNode.set(p.uid, { pod: p, final: copy(final) });
    this.#dirty(node, now);
  }

  /** After a NodeUsage retired `uid`: its namespace and workload retire it too (unless they already have). */
  #rollUp(node: Entry, uid: string, workload: Workload, final: Counts): void {
    const ns = this.#entry('NamespaceUsage', workload.namespace);
    const wl = this.#entry('WorkloadUsage', workload);
    const state = { node, ns: ns.recent.has(uid), wl: wl.recent.has(uid) };
    if (!state.ns) {
      ns.pending.set(uid, final);
      this.#dirty(ns);
    }
    if (!state.wl) {
      wl.pending.set(uid, final);
      this.#dirty(wl);
    }
    this.#rollup.set(uid, state);
    this.#rolledUp(uid);
  }

  #rolledUp(uid: string, kind?: UsageKind): void {
    const state = this.#rollup.get(uid);
    if (state === undefined) return;
    if (kind === 'NamespaceUsage') state.ns = true;
    if (kind === 'WorkloadUsage') state.wl = true;
    if (!state.ns || !state.wl) return;
    this.#rollup.delete(uid);
    const r = state.node.retiring.get(uid);
    if (r !== undefined && !r.entry.rolledUp) {
      r.entry = { ...r.entry, rolledUp: true };
      this.#dirty(state.node);
    }
  }

  /** Drops remembered deletions past their time. */
  #forget(now: number): void {
    for (const [uid, d] of this.#deleted) if (now - d.at > this.#rememberMs) this.#deleted.delete(uid);
    for (const [node, finals] of this.#nodeFinals) {
      dropStale(finals, now);
      if (finals.size === 0) this.#nodeFinals.delete(node);
    }
  }

  /**
   * An agent's final for a pod on `nodeName` (leader only): raises the
   * pod's retirement if it is on its way, tops it up if it was retired with
   * less, or retires a pod that was deleted while no operator ran. A pod
   * still in the API waits for its deletion (deleted() takes the final).
   */
  #applyFinal(nodeName: string, f: PodFinal, now: number): void {
    if (isStale(f, now) || this.#o.pods.get(f.uid) !== undefined) return;
    const node = this.#entry('NodeUsage', nodeName);
    const pending = node.pendingNode.get(f.uid);
    if (pending !== undefined) {
      pending.final = maxOf(pending.final, withBase(pending.pod, f.counts));
      this.#dirty(node, now);
      return;
    }
    const retired = node.retiring.get(f.uid);
    if (retired !== undefined) {
      const key = f.uid + TOP_UP;
      const more = zero();
      for (const field of FIELDS) if (f.counts[field] > retired.counts[field]) more[field] = f.counts[field] - retired.counts[field];
      if (isZero(more) || node.retiring.has(key) || node.pendingNode.has(key)) return;
      const e = retired.entry;
      this.#log.info({ namespace: e.namespace, uid: f.uid, ...toStrings(more) }, 'the agent\'s final counts exceed what the pod was retired with: adding the difference');
      this.#retire({ uid: key, namespace: e.namespace, workload: this.#workloadOf(e.namespace, e.workloadKind, e.workload), checkpointed: undefined }, nodeName, more, now);
      return;
    }
    if (f.namespace === undefined) {
      this.#log.warn({ node: nodeName, uid: f.uid }, 'a final of a pod the operator never saw carries no namespace (its agent restarted after the pod went): not counted');
      return;
    }
    if (this.#entries.get(`NamespaceUsage/${f.namespace}`)?.recent.has(f.uid)) return; // retired (counted under another node)
    const workload = this.#o.pods.resolveWorkload(f.namespace, f.name ?? f.uid, f.owner);
    this.#log.info({ namespace: f.namespace, pod: f.name, uid: f.uid }, 'a pod deleted while no operator watched: counted from its agent\'s final');
    this.#retire({ uid: f.uid, namespace: f.namespace, workload, checkpointed: undefined }, nodeName, f.counts, now);
  }

  async #write(e: Entry): Promise<'written' | 'unchanged' | 'retry' | 'budget' | 'outage'> {
    const generation = this.#generation;
    const now = Date.now();
    const seen = e.changes;
    const built = e.kind === 'NodeUsage' ? this.#nodeStatus(e, now) : this.#rollupStatus(e, now);
    const body = createHash('sha1').update(JSON.stringify({ ...built.status, updated: '' })).digest('base64');
    const nothingYet = !e.exists && built.status.ingressBytes === '0' && built.status.egressBytes === '0' && built.status.retiredPods === 0 && built.status.bpfMapBytes === undefined;
    if ((e.exists && body === e.lastBody) || nothingYet) {
      // Nothing new (or nothing worth an object yet: idle pods create no objects): no write.
      if (nothingYet && e.kind !== 'NodeUsage') built.commit(); // (zero retirements: their rollup is done)
      this.#clean(e, seen, built.keepDirty ? now : undefined);
      if (built.keepDirty) e.writtenAt = now;
      return 'unchanged';
    }
    if (!this.#o.budget.take()) return 'budget';
    try {
      if (!e.exists && !(await this.#create(e))) return 'retry'; // someone else created it: write again from its ledger
      if (generation !== this.#generation) return 'retry';
      const object: UsageObject = {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: e.kind,
        metadata: { name: e.name, ...(e.resourceVersion ? { resourceVersion: e.resourceVersion } : {}) },
        ...this.#spec(e),
        status: built.status,
      };
      const written = await this.#o.api.request<UsageObject>('PUT', usagePath(e.kind, e.name, true), { body: object, timeoutMs: 30_000 });
      this.#recovered();
      if (generation !== this.#generation) return 'written';
      e.resourceVersion = written.metadata.resourceVersion;
      e.writtenAt = Date.now();
      e.lastBody = body;
      built.commit(); // (may mark this object dirty again: the change counts)
      this.#clean(e, seen, built.keepDirty ? e.writtenAt : undefined);
      this.#log.debug({ kind: e.kind, name: e.name, ingressBytes: built.status.ingressBytes, egressBytes: built.status.egressBytes, pods: built.status.pods, retiredPods: built.status.retiredPods }, 'status written');
      return 'written';
    } catch (err) {
      if (generation !== this.#generation) return 'retry';
      e.writtenAt = Date.now();
      if (err instanceof ApiError && err.code === 409) {
        this.#recovered();
        await this.#reread(e); // another writer (a former leader) or a hand edit: take its ledger and write again
        return 'retry';
      }
      if (err instanceof ApiError && err.code === 404) {
        this.#recovered();
        e.exists = false; // deleted by hand: created again with the totals this process holds
        e.resourceVersion = undefined;
        return 'retry';
      }
      this.#o.onError('write_status');
      if (err instanceof ApiError && err.code < 500 && err.code !== 429) {
        this.#log.error({ kind: e.kind, name: e.name, err: describe(err) }, 'status write rejected; retrying');
        return 'retry';
      }
      // The API server is away or overloaded: end this round, one log line per outage.
      if (this.#outageSince === undefined) {
        this.#outageSince = Date.now();
        this.#log.warn({ kind: e.kind, name: e.name, err: describe(err) }, 'status writes failing; the totals are kept and written when the API server answers');
      }
      return 'outage';
    }
  }

  #recovered(): void {
    if (this.#outageSince === undefined) return;
    this.#log.info({ outageMs: Date.now() - this.#outageSince }, 'status writes succeed again');
    this.#outageSince = undefined;
  }

  /** Creates the object; false when it existed already (its ledger was read back instead). */
  async #create(e: Entry): Promise<boolean> {
    const object = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: e.kind,
      metadata: { name: e.name, labels: { 'app.kubernetes.io/managed-by': 'podmeter', ...(e.workload ? { [NAMESPACE_LABEL]: e.workload.namespace } : {}) } },
      ...this.#spec(e),
    };
    try {
      const created = await this.#o.api.request<UsageObject>('POST', usagePath(e.kind), { body: object, timeoutMs: 30_000 });
      e.exists = true;
      e.resourceVersion = created.metadata.resourceVersion;
      return true;
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 409)) throw err;
      await this.#reread(e);
      return false;
    }
  }

  #spec(e: Entry): { spec?: object } {
    return e.workload ? { spec: { namespace: e.workload.namespace, kind: e.workload.kind, name: e.workload.name } } : {};
  }

  /** Takes the persisted ledger of one object after a conflict. */
  async #reread(e: Entry): Promise<void> {
    const generation = this.#generation;
    let object: UsageObject | undefined;
    try {
      object = await this.#o.api.find<UsageObject>(usagePath(e.kind, e.name), { timeoutMs: 30_000 });
    } catch (err) {
      this.#o.onError('read_status');
      this.#log.warn({ kind: e.kind, name: e.name, err: describe(err) }, 'cannot read back after a conflict; retrying');
      return;
    }
    if (generation !== this.#generation) return;
    if (object === undefined) {
      e.exists = false;
      e.resourceVersion = undefined;
      return;
    }
    const state = object.status === undefined ? emptyLedgerState() : parseLedger(object.status);
    this.#reportProblems(e.kind, e.name, state.problems);
    e.exists = true;
    e.resourceVersion = object.metadata.resourceVersion;
    if (state.problems.length > 0 || object.status === undefined) {
      // Keep this process's ledger: it is written over the unreadable one.
      return;
    }
    e.retired = state.retired;
    e.retiredPods = state.retiredPods;
    if (e.kind === 'NodeUsage') {
      e.retiring = state.retiring;
      for (const [uid, p] of [...e.pendingNode]) {
        if (!state.retiring.has(uid)) continue;
        // Already retired by the other writer: finish the rollup with its counts.
        e.pendingNode.delete(uid);
        const r = state.retiring.get(uid)!;
        if (p.pod.checkpointed !== undefined) this.#subLive(p.pod, p.pod.checkpointed);
        if (!r.entry.rolledUp && p.pod.workload) this.#rollUp(e, uid, p.pod.workload, r.counts);
      }
    } else {
      e.recent = state.recent;
      for (const uid of [...e.pending.keys()]) {
        if (state.recent.has(uid)) {
          e.pending.delete(uid);
          this.#rolledUp(uid, e.kind);
        }
      }
    }
    this.#dirty(e);
  }

  #subLive(p: Retiree, counts: Counts): void {
    subFrom(this.#entry('NamespaceUsage', p.namespace).live, counts);
    if (p.workload) subFrom(this.#entry('WorkloadUsage', p.workload).live, counts);
  }

  #nodeStatus(e: Entry, now: number): { status: UsageStatus; keepDirty: boolean; commit: () => void } {
    let keepDirty = false;
    const snapshot: { p: PodRecord; counts: Counts }[] = [];
    const checkpoint: CheckpointEntry[] = [];
    const live = zero();
    for (const p of e.members!) {
      const counts = contribution(p);
      if (isZero(counts) && p.checkpointed === undefined) continue; // idle pods need no checkpoint
      const w = this.#o.pods.workloadOf(p, now, false);
      if (w === undefined) {
        keepDirty = true; // its owner may still appear: counted a little later
        continue;
      }
      snapshot.push({ p, counts: copy(counts) });
      addTo(live, counts);
      checkpoint.push({ uid: p.uid, namespace: p.namespace, workloadKind: w.kind, workload: w.name, ...toStrings(counts), ...(p.base ? { base: toStrings(p.base) } : {}) });
    }
    const retiring = new Map([...e.retiring].filter(([, r]) => !(r.entry.rolledUp && now - r.at > this.#ttlMs)));
    const retired = copy(e.retired);
    let retiredPods = e.retiredPods;
    const newlyRetired: [string, { pod: Retiree; final: Counts }][] = [];
    for (const [uid, pend] of e.pendingNode) {
      if (retiring.has(uid)) continue;
      newlyRetired.push([uid, pend]);
      const w = pend.pod.workload ?? this.#workloadOf(pend.pod.namespace, 'Pod', uid);
      const entry: RetiringEntry = { uid, namespace: pend.pod.namespace, workloadKind: w.kind, workload: w.name, ...toStrings(pend.final), at: new Date(now).toISOString(), rolledUp: false };
      retiring.set(uid, { entry, counts: pend.final, at: now });
      addTo(retired, pend.final);
      if (!uid.endsWith(TOP_UP)) retiredPods++;
    }
    const status: UsageStatus = {
      ...statusTotals(sum(live, retired), retired, e.members!.size, retiredPods, this.#o.identity),
      ...(e.bpfMapBytes !== undefined ? { bpfMapBytes: String(e.bpfMapBytes), bpfMaps: bytes(e.bpfMapBytes) } : {}),
      checkpoint: checkpoint.sort((a, b) => a.uid.localeCompare(b.uid)),
      retiring: [...retiring.values()].map((r) => r.entry).sort((a, b) => a.uid.localeCompare(b.uid)),
    };
    const pendingSnapshot = new Map(e.pendingNode);
    return {
      status,
      keepDirty,
      commit: () => {
        e.retired = retired;
        e.retiredPods = retiredPods;
        e.retiring = retiring;
        for (const { p, counts } of snapshot) {
          const before = p.checkpointed ?? zero();
          if (equal(before, counts)) continue;
          const delta = copy(counts);
          subFrom(delta, before);
          p.checkpointed = counts; // (a pod that died meanwhile: its retirement takes back this new checkpoint)
          this.#addLive(p, delta);
          this.#dirty(this.#entry('NamespaceUsage', p.namespace));
          if (p.workload) this.#dirty(this.#entry('WorkloadUsage', p.workload));
        }
        e.live = checkpointedSum(e.members!);
        for (const [uid, pend] of pendingSnapshot) {
          if (e.pendingNode.get(uid) === pend) e.pendingNode.delete(uid);
        }
        for (const [uid, pend] of newlyRetired) {
          if (pend.pod.checkpointed !== undefined) this.#subLive(pend.pod, pend.pod.checkpointed);
          const w = pend.pod.workload ?? this.#workloadOf(pend.pod.namespace, 'Pod', uid);
          this.#rollUp(e, uid, w, pend.final);
        }
      },
    };
  }

  #rollupStatus(e: Entry, now: number): { status: UsageStatus; keepDirty: boolean; commit: () => void } {
    const retired = copy(e.retired);
    const recent = new Map(e.recent);
    let retiredPods = e.retiredPods;
    const snapshot = new Map(e.pending);
    for (const [uid, final] of snapshot) {
      if (recent.has(uid)) continue;
      addTo(retired, final);
      recent.set(uid, now);
      if (!uid.endsWith(TOP_UP)) retiredPods++;
    }
    for (const [uid, at] of recent) {
      if (now - at > this.#ttlMs && !this.#rollup.has(uid) && !snapshot.has(uid)) recent.delete(uid);
    }
    const status: UsageStatus = {
      ...statusTotals(sum(e.live, retired), retired, e.pods, retiredPods, this.#o.identity),
      recentlyRetired: [...recent].map(([uid, at]) => ({ uid, at: new Date(at).toISOString() })),
    };
    return {
      status,
      keepDirty: false,
      commit: () => {
        e.retired = retired;
        e.recent = recent;
        e.retiredPods = retiredPods;
        for (const [uid, final] of snapshot) {
          if (e.pending.get(uid) === final) e.pending.delete(uid);
          this.#rolledUp(uid, e.kind);
        }
      },
    };
  }

  async #listAll(kind: UsageKind): Promise<{ name: string; object: UsageObject; state: LedgerState }[]> {
    const out: { name: string; object: UsageObject; state: LedgerState }[] = [];
    let cont: string | undefined;
    do {
      const page = await this.#o.api.get<{ items?: UsageObject[]; metadata?: { continue?: string } }>(usagePath(kind), { query: { limit: 500, continue: cont }, timeoutMs: 60_000 });
      for (const object of page.items ?? []) out.push({ name: object.metadata.name, object, state: parseLedger(object.status) });
      cont = page.metadata?.continue || undefined;
    } while (cont !== undefined);
    return out;
  }

  #reportProblems(kind: UsageKind, name: string, problems: string[]): void {
    if (problems.length === 0) return;
    const key = `${kind}/${name}/${problems.join(';')}`;
    if (this.#problemsLogged.has(key)) return;
    this.#problemsLogged.add(key);
    this.#o.onError('bad_status');
    this.#log.error({ kind, name, problems }, 'custom resource status edited into a shape the operator cannot read: the unreadable parts are ignored and rewritten');
  }
}

function maxOf(a: Counts, b: Counts): Counts {
  const m = zero();
  for (const f of FIELDS) m[f] = a[f] > b[f] ? a[f] : b[f];
  return m;
}

/** An agent's final is used for as long as the agent publishes it. */
function isStale(f: PodFinal, now: number): boolean {
  return now - f.terminatedAt > FINALS_WINDOW_MS;
}

function dropStale(finals: Map<string, PodFinal>, now: number): void {
  for (const [uid, f] of finals) if (isStale(f, now)) finals.delete(uid);
}

/** An agent's final counts plus what the pod was counted with before the agent's counters restarted. */
function withBase(p: Retiree, counts: Counts): Counts {
  return p.base === undefined ? counts : sum(p.base, counts);
}

function checkpointedSum(pods: Iterable<PodRecord>): Counts {
  const total = zero();
  for (const p of pods) if (p.checkpointed !== undefined) addTo(total, p.checkpointed);
  return total;
}

function isPodRecord(p: Retiree): p is PodRecord {
  return 'firstSeen' in p;
}
