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
 *   and into `status.retiring` (the intent, numbered: the node's
 *   retirements get seq 1, 2, ... in the order recorded), in one write;
 *   then into `retired` of its namespace and workload, each of which takes
 *   a node's retirements in their order and keeps, per node, the seq it has
 *   taken through (`retiredThrough`: idempotent); then the intent is marked
 *   `rolledUp`, and the NodeUsage writes how far every retirement is in its
 *   namespaces and workloads (`namespacesThrough`, `workloadsThrough`),
 *   after which their marks of that node may go. Each write is one object,
 *   made with its resourceVersion.
 * - On becoming leader the operator reads all four kinds: a checkpointed
 *   pod that no longer exists died while no operator ran (retired with its
 *   checkpointed counts, or with its final counts if this process saw the
 *   deletion as a standby); intents not rolled up are finished (those a
 *   mark or the node's through covers are not taken again).
 * - The agents' Node annotation `podmeter.io/finals` (finals.ts) holds
 *   each terminated pod's final counts for 10 minutes. A pod is retired with
 *   the larger of its last annotations and that final; a final that arrives
 *   after the pod was retired with less adds the difference once (a top-up,
 *   retired under the key `<uid>+final`); a final of a pod seen deleted
 *   before it had counts retires it. Finals name only pods the operator
 *   has seen bound to that node (finals.ts).
 *
 * Bounds (no object grows past 512 KiB, whatever the churn or the write
 * backlog; checked at 100 retirements a second by
 * test/operator/retention.test.ts, with 10,000 unpaced Jobs on one node
 * under a low write budget by test/operator/backlog.test.ts, and in
 * test/unit/ledger-bounds.test.ts):
 * - `checkpoint`: the node's live pods with traffic (at most ~110 per node).
 * - `retiring`: rolled-up retirements kept for late finals, newest first, at
 *   most 256 KiB of JSON (~1,000; status.ts compact), the rest only after
 *   the 15 min ttl; and the intents not yet rolled up, newest first, at
 *   most 96 KiB (~300: what a few seconds bring at 100/s while the writes
 *   keep up). When they do not (thousands of Jobs ending, each its own
 *   WorkloadUsage to create and write, faster than the status write
 *   budget allows), older intents go into NodeRetirements objects of at
 *   most 256 KiB each, listed in `status.spills` (spills.ts): as many as
 *   the backlog needs, each deleted once rolled up. Together < 400 KiB.
 * - `retiredThrough`: one mark per node whose retirements are on their way
 *   into this namespace or workload (a mark goes once its node's through
 *   passes it: a namespace's within seconds, whatever its workloads' backlog).
 * - Dropping a rolled-up retirement younger than the finals window moves
 *   the NodeUsage's `finalsAfter` to its time plus 5 minutes (the lateness
 *   and clock skew allowed): a final read before it for a pod the list no
 *   longer names is not used (its top-up is lost, it is never counted
 *   twice), nor is a deletion a standby remembered from before it.
 *
 * Retention: a WorkloadUsage with no live pod, and a NodeUsage with no
 * live pod and no Node, is gone since the `goneSince` written in its status
 * (kept across restarts and leader changes: the clock never restarts). After
 * `--usage-retention` (30 days) it is deleted, if its namespace already
 * holds all its bytes (every retirement rolled up and marked; the
 * NamespaceUsage's retired at least the workload's) and a NodeUsage has
 * nothing left to retire or top up. The NamespaceUsage is never deleted:
 * namespace totals still never go down. A gone object's entry leaves memory
 * once its status is written and nothing is on its way (Book.idle); a
 * later need reads its ledger back on its first write.
 *
 * This file: pod and Node events, leadership, the write rounds and the
 * totals the metrics show. The state they share is book.ts; loading it on
 * becoming leader load.ts; status planning status.ts; writes with conflict
 * retry writes.ts; the agents' finals and top-ups finals.ts; the retention
 * sweep's deletes retention.ts; the NodeRetirements objects spills.ts.
 */
import { addTo, copy, equal, isZero, sum, type Counts } from '../../common/contract/counts.ts';
import type { PodFinal } from '../../common/contract/finals.ts';
import { parseLedger, usagePath, type UsageKind, type UsageObject } from '../../common/contract/usage.ts';
import type { Workload } from '../../common/contract/workloads.ts';
import { listAll } from '../../common/kube/list.ts';
import type { NodeListener } from '../nodes.ts';
import type { PodListener, PodRecord } from '../pods.ts';
import { Book, KINDS, maxOf, type LedgerOptions } from './book.ts';
import { withBase, type Entry } from './entry.ts';
import { applyFinal, dropStale, finalOf, isStale } from './finals.ts';
import { loadLedger, type Loaded, type LoadedObject } from './load.ts';
import { deleteExpired } from './retention.ts';
import { deleteOrphanSpills, listSpills } from './spills.ts';
import { describe } from '../../common/kube/api.ts';
import { StatusWriter } from './writes.ts';

export type { LedgerOptions } from './book.ts';

export interface UsageTotal {
  kind: UsageKind;
  name: string;
  workload?: Workload;
  total: Counts;
  pods: number;
  bpfMapBytes?: bigint;
}

/** Status writes a round keeps in flight (of different objects). */
const WRITES_IN_FLIGHT = 8;
/** A round's longest run of writing (it ends sooner when nothing is due). */
const ROUND_MS = 2000;
/** How often settled entries of gone objects leave memory. */
const FORGET_EVERY_MS = 30_000;
/** How often the objects are listed for those past the retention (at most; a quarter of the retention when shorter). */
const EXPIRE_EVERY_MS = 30 * 60_000;

export class Ledger implements PodListener, NodeListener {
  readonly #book: Book;
  readonly #writer: StatusWriter;
  readonly #minInterval: Record<UsageKind, number>;
  #active = false;
  #writing = false;
  #sweeping = false;
  #forgotAt = 0;
  #expiredAt = 0;

  constructor(options: LedgerOptions) {
    this.#book = new Book(options);
    this.#writer = new StatusWriter(this.#book);
    this.#minInterval = { NodeUsage: 1000, NamespaceUsage: 1000, WorkloadUsage: 2000, ...options.minIntervalMs };
  }

  /** True while this process is the leader and has read the persisted ledger. */
  get active(): boolean {
    return this.#active;
  }

  // --- pod events (PodListener) -------------------------------------------

  added(p: PodRecord): void {
    if (this.#active) this.#book.attach(p);
  }

  assigned(p: PodRecord): void {
    if (this.#active && p.workload) this.#book.assign(p.workload);
  }

  changed(p: PodRecord, previous: { node: string }): void {
    if (!this.#active) return;
    if (previous.node === '' && p.node !== '') this.#book.entry('NodeUsage', p.node).members!.add(p);
    if (p.node !== '') this.#book.dirty(this.#book.entry('NodeUsage', p.node));
  }

  deleted(p: PodRecord, last: Counts): void {
    const now = Date.now();
    const agentFinal = finalOf(this.#book, p);
    const final = agentFinal === undefined ? last : maxOf(last, withBase(p, agentFinal.counts));
    if (p.node !== '' && !isZero(final))
      this.#book.deleted.set(p.uid, { pod: p, node: p.node, final: copy(final), at: now });
    if (!this.#active) return;
    this.#book.detach(p);
    this.#book.retire(p, p.node, final, now);
  }

  /** A Node's `podmeter.io/bpf-map-bytes` (undefined: none or the Node went away). */
  nodeMapBytes(node: string, value: bigint | undefined): void {
    if (value === undefined) this.#book.nodeMapBytes.delete(node);
    else this.#book.nodeMapBytes.set(node, value);
    if (!this.#active) return;
    const key = `NodeUsage/${node}`;
    if (value === undefined && !this.#book.entries.has(key)) return;
    const e = this.#book.entry('NodeUsage', node);
    if (e.bpfMapBytes !== value) {
      e.bpfMapBytes = value;
      this.#book.dirty(e);
    }
  }

  /** A Node appeared or went (a NodeUsage is gone only when its Node and its pods are). */
  nodeExists(node: string, exists: boolean): void {
    if (exists === this.#book.liveNodes.has(node)) return;
    if (exists) this.#book.liveNodes.add(node);
    else this.#book.liveNodes.delete(node);
    const e = this.#book.entries.get(`NodeUsage/${node}`);
    if (this.#active && e !== undefined) this.#book.updateGone(e);
  }

  /** A Node's `podmeter.io/finals` (new entries are added; entries stay for their usable time even if the Node goes). */
  nodeFinals(node: string, finals: PodFinal[]): void {
    const now = Date.now();
    let known = this.#book.nodeFinals.get(node);
    if (known !== undefined) dropStale(known, now);
    for (const f of finals) {
      if (isStale(f, now)) continue;
      const before = known?.get(f.uid);
      if (before !== undefined && equal(before.counts, f.counts)) continue;
      if (known === undefined) this.#book.nodeFinals.set(node, (known = new Map<string, PodFinal>()));
      known.set(f.uid, f);
      if (this.#active) applyFinal(this.#book, node, f, now);
    }
  }

  get clusterMapBytes(): bigint {
    let total = 0n;
    for (const v of this.#book.nodeMapBytes.values()) total += v;
    return total;
  }

  // --- leadership ---------------------------------------------------------

  /**
   * Reads the persisted ledger and rebuilds the totals from it and the pods
   * now known; then this process writes. Throws if the CRs cannot be read
   * (not installed, no permission): the caller retries.
   */
  async activate(): Promise<void> {
    const generation = ++this.#book.generation;
    const loaded: Loaded = new Map();
    for (const kind of KINDS) loaded.set(kind, await this.#listAll(kind));
    const spills = await listSpills(this.#book);
    if (generation !== this.#book.generation) return; // stepped down meanwhile
    const { diedWhileAway } = loadLedger(this.#book, loaded, spills, Date.now());
    this.#active = true;
    this.#book.log.info(
      {
        namespaces: loaded.get('NamespaceUsage')!.length,
        workloads: loaded.get('WorkloadUsage')!.length,
        nodes: loaded.get('NodeUsage')!.length,
        pods: this.#book.o.pods.size,
        diedWhileAway,
      },
      'ledger loaded',
    );
  }

  /** Stops writing and forgets the persisted state (a later activate() reads it again). */
  deactivate(): void {
    this.#book.generation++;
    this.#active = false;
    this.#book.clear();
    for (const p of this.#book.o.pods.values()) p.checkpointed = undefined;
  }

  // --- writing ------------------------------------------------------------

  /** Pods left out of their NodeUsage's writes (quarantine.ts). */
  get quarantined(): number {
    return this.#writer.quarantine.size;
  }

  /** Objects waiting to be written. */
  get dirty(): number {
    return this.#book.dirtySet.size;
  }

  /**
   * One round: writes the objects that changed, within the write budget and
   * each object's minimum interval, up to WRITES_IN_FLIGHT at a time, from
   * one pool across the kinds: the longest-waiting change first (on a tie,
   * in KINDS order: NodeUsage first), and a NamespaceUsage or WorkloadUsage made
   * due by a NodeUsage written in this round is taken up by the next free
   * writer (the rollups include only what a NodeUsage has on record, so they
   * follow their NodeUsage by one write, not by a whole round of every
   * kind). Each object is written at most once a round. The round ends when
   * nothing is due, the budget is spent, the API server is away, or after
   * ROUND_MS (the timer's other work runs between rounds). Returns the
   * number of writes.
   */
  async reconcile(options: { ignoreIntervals?: boolean } = {}): Promise<number> {
    if (!this.#active || this.#writing) return 0;
    this.#writing = true;
    const started = Date.now();
    this.#forget(started);
    const taken = new Set<Entry>(); // each object at most once a round
    let inFlight = 0;
    let writes = 0;
    let stop = false;
    let finished: () => void = () => {};
    let aWriteFinished = new Promise<void>((r) => (finished = r));
    const pick = (): Entry | undefined => {
      const now = Date.now();
      let best: Entry | undefined;
      for (const e of this.#book.dirtySet) {
        if (e.dirtyAt === undefined || taken.has(e)) continue;
        if (!options.ignoreIntervals && now - e.writtenAt < this.#minInterval[e.kind]) continue;
        if (
          best === undefined ||
          e.dirtyAt < best.dirtyAt! ||
          (e.dirtyAt === best.dirtyAt && KINDS.indexOf(e.kind) < KINDS.indexOf(best.kind))
        )
          best = e;
      }
      return best;
    };
    const worker = async () => {
      while (!stop && this.#active) {
        if (!options.ignoreIntervals && Date.now() - started > ROUND_MS) return;
        const e = pick();
        if (e === undefined) {
          if (inFlight === 0) return;
          await aWriteFinished; // its commit may make a rollup due
          continue;
        }
        taken.add(e);
        inFlight++;
        const result = await this.#writer.write(e).finally(() => {
          inFlight--;
          finished(); // (also when it threw: no writer waits forever)
          aWriteFinished = new Promise<void>((r) => (finished = r));
        });
        if (result === 'written') writes++;
        if (result === 'budget' || result === 'outage') stop = true;
      }
    };
    try {
      await Promise.all(Array.from({ length: WRITES_IN_FLIGHT }, worker));
      return writes;
    } finally {
      this.#writing = false;
    }
  }

  /** Totals as the metrics show them (leader only; empty otherwise). */
  totals(kind: UsageKind): UsageTotal[] {
    if (!this.#active) return [];
    const out: UsageTotal[] = [];
    for (const e of this.#book.entries.values()) {
      if (e.kind !== kind) continue;
      const total = sum(e.live, e.retired);
      if (kind === 'NodeUsage') for (const p of e.pendingNode.values()) addTo(total, p.final);
      else for (const p of e.pending.values()) if (!((e.marks.get(p.node) ?? 0) >= p.seq)) addTo(total, p.final);
      out.push({
        kind,
        name: e.name,
        ...(e.workload ? { workload: e.workload } : {}),
        total,
        pods: e.members?.size ?? e.pods,
        ...(e.bpfMapBytes !== undefined ? { bpfMapBytes: e.bpfMapBytes } : {}),
      });
    }
    return out;
  }

  // --- retention ----------------------------------------------------------

  /**
   * Leader only, from the timer: forgets the entries of gone objects that
   * have settled (Book.idle), and now and then lists the WorkloadUsage and
   * NodeUsage objects page by page and deletes those gone for longer than
   * the retention whose bytes their NamespaceUsage carries (#expired). Each
   * delete is made with the object's resourceVersion (a write since then
   * keeps it) and spends from the status write budget. Returns the number
   * of objects deleted.
   */
  async sweep(now = Date.now()): Promise<number> {
    if (!this.#active || this.#sweeping) return 0;
    if (now - this.#forgotAt >= Math.min(FORGET_EVERY_MS, this.#book.retentionMs)) {
      this.#forgotAt = now;
      for (const [key, e] of this.#book.entries) if (this.#book.idle(e)) this.#book.entries.delete(key);
    }
    if (now - this.#expiredAt < Math.max(1000, Math.min(EXPIRE_EVERY_MS, this.#book.retentionMs / 4))) return 0;
    this.#expiredAt = now;
    this.#sweeping = true;
    try {
      await deleteOrphanSpills(this.#book, now).catch((err: unknown) => {
        this.#book.o.onError('read_status');
        this.#book.log.warn(
          { err: describe(err) },
          'cannot list the NodeRetirements objects; retrying at the next sweep',
        );
      });
      return await deleteExpired(this.#book);
    } finally {
      this.#sweeping = false;
    }
  }

  // --- internals ----------------------------------------------------------

  /** Drops remembered deletions past their time. */
  #forget(now: number): void {
    for (const [uid, d] of this.#book.deleted) if (now - d.at > this.#book.rememberMs) this.#book.deleted.delete(uid);
    for (const [node, finals] of this.#book.nodeFinals) {
      dropStale(finals, now);
      if (finals.size === 0) this.#book.nodeFinals.delete(node);
    }
  }

  async #listAll(kind: UsageKind): Promise<LoadedObject[]> {
    const objects = await listAll<UsageObject>(this.#book.o.api, usagePath(kind));
    return objects.map((object) => ({ name: object.metadata.name, object, state: parseLedger(object.status) }));
  }
}
