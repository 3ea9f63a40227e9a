/**
 * Status writes: each object is written whole with its resourceVersion (PUT
 * /status), created first when it does not exist. A conflict (another
 * writer: a former leader, a hand edit) reads the object back and takes its
 * ledger before writing again; a 404 (deleted by hand) creates it again
 * with the totals this process holds. An unchanged status is not written.
 * Writes spend from the status write budget; when the API server is away
 * the round ends and the totals wait (one log line per outage). A NodeUsage
 * write refused for one pod's data (422 naming its entry) quarantines that
 * pod and is written again without it (quarantine.ts).
 */
import { createHash } from 'node:crypto';
import { describe, isRefusal, isStatus } from '../../common/kube/api.ts';
import {
  emptyLedgerState,
  GROUP,
  NAMESPACE_LABEL,
  parseLedger,
  readSpill,
  usagePath,
  type LedgerState,
  VERSION,
  type UsageObject,
  type UsageStatus,
} from '../../common/contract/usage.ts';
import type { Book } from './book.ts';
import { takeNodeLedger, type Entry } from './entry.ts';
import { Quarantine } from './quarantine.ts';
import { createSpill, deleteSpills, readSpills } from './spills.ts';
import { nodeStatus, rollupStatus } from './status.ts';

export type WriteOutcome = 'written' | 'unchanged' | 'retry' | 'budget' | 'outage';

export class StatusWriter {
  readonly #book: Book;
  readonly quarantine: Quarantine;
  #outageSince: number | undefined;

  constructor(book: Book) {
    this.#book = book;
    this.quarantine = new Quarantine(book.log, book.o.onError);
  }

  async write(e: Entry): Promise<WriteOutcome> {
    const generation = this.#book.generation;
    const now = Date.now();
    const seen = e.changes;
    const built =
      e.kind === 'NodeUsage' ? nodeStatus(this.#book, e, now, this.quarantine) : rollupStatus(this.#book, e);
    const body = createHash('sha1')
      .update(JSON.stringify({ ...built.status, updated: '' }))
      .digest('base64');
    const nothingYet =
      !e.exists &&
      built.status.ingressBytes === '0' &&
      built.status.egressBytes === '0' &&
      built.status.retiredPods === 0 &&
      built.status.bpfMapBytes === undefined;
    if ((e.exists && body === e.lastBody) || nothingYet) {
      // Nothing new (or nothing worth an object yet: idle pods create no objects): no write.
      if (e.kind !== 'NodeUsage') built.commit(); // (zero retirements, or only ones it has: their rollup is done)
      this.#book.clean(e, seen, built.keepDirty ? now : undefined);
      if (built.keepDirty) e.writtenAt = now;
      return 'unchanged';
    }
    const spill = built.spill ?? [];
    for (let i = 0; i <= spill.length; i++) if (!this.#book.o.budget.take()) return 'budget';
    let spilled: string[] = []; // created for this write: deleted if it fails (they count only once listed)
    const listedBefore = [...e.spills.keys()];
    try {
      if (!e.exists && !(await this.#create(e))) return 'retry'; // someone else created it: write again from its ledger
      if (generation !== this.#book.generation) return 'retry';
      for (const entries of spill) spilled.push(await createSpill(this.#book, e.name, entries));
      if (spilled.length > 0) built.status.spills = [...(built.status.spills ?? []), ...spilled];
      const object: UsageObject = {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: e.kind,
        metadata: { name: e.name, ...(e.resourceVersion ? { resourceVersion: e.resourceVersion } : {}) },
        ...this.#spec(e),
        status: built.status,
      };
      const written = await this.#book.o.api.request<UsageObject>('PUT', usagePath(e.kind, e.name, true), {
        body: object,
        timeoutMs: 30_000,
      });
      this.#recovered();
      const listed = spilled;
      spilled = [];
      if (generation !== this.#book.generation) return 'written';
      e.resourceVersion = written.metadata.resourceVersion;
      e.writtenAt = Date.now();
      e.lastBody = body;
      built.commit(listed); // (may mark this object dirty again: the change counts)
      await deleteSpills(
        this.#book,
        listedBefore.filter((name) => !e.spills.has(name)),
      ); // every intent in them rolled up, and no longer listed
      this.#book.clean(e, seen, built.keepDirty ? e.writtenAt : undefined);
      this.#book.log.debug(
        {
          kind: e.kind,
          name: e.name,
          ingressBytes: built.status.ingressBytes,
          egressBytes: built.status.egressBytes,
          pods: built.status.pods,
          retiredPods: built.status.retiredPods,
          retiredSeq: built.status.retiredSeq,
          through: [built.status.namespacesThrough, built.status.workloadsThrough],
          marks: built.status.retiredThrough,
        },
        'status written',
      );
      return 'written';
    } catch (err) {
      // Refused: the spills made for it count for nothing. Else the write may have landed (a timeout): kept (the sweep deletes them if not listed).
      if (spilled.length > 0 && isRefusal(err)) await deleteSpills(this.#book, spilled);
      return this.#failed(e, built.status, err, generation);
    }
  }

  /** What a failed write means: write again (a conflict, a deletion, a refused pod), or an outage that ends the round. */
  async #failed(e: Entry, status: UsageStatus, err: unknown, generation: number): Promise<WriteOutcome> {
    if (generation !== this.#book.generation) return 'retry';
    e.writtenAt = Date.now();
    if (isStatus(err, 409)) {
      this.#recovered();
      await this.#reread(e); // another writer (a former leader) or a hand edit: take its ledger and write again
      return 'retry';
    }
    if (isStatus(err, 404)) {
      this.#recovered();
      e.exists = false; // deleted by hand: created again with the totals this process holds
      e.resourceVersion = undefined;
      return 'retry';
    }
    this.#book.o.onError('write_status');
    if (isStatus(err, 422) && e.kind === 'NodeUsage' && this.quarantine.reject(e.name, status, err.fields, e.members!))
      return 'retry'; // written again without the pod
    if (isRefusal(err)) {
      this.#book.log.error({ kind: e.kind, name: e.name, err: describe(err) }, 'status write rejected; retrying');
      return 'retry';
    }
    // The API server is away or overloaded: end this round, one log line per outage.
    if (this.#outageSince === undefined) {
      this.#outageSince = Date.now();
      this.#book.log.warn(
        { kind: e.kind, name: e.name, err: describe(err) },
        'status writes failing; the totals are kept and written when the API server answers',
      );
    }
    return 'outage';
  }

  #recovered(): void {
    if (this.#outageSince === undefined) return;
    this.#book.log.info({ outageMs: Date.now() - this.#outageSince }, 'status writes succeed again');
    this.#outageSince = undefined;
  }

  /** Creates the object; false when it existed already (its ledger was read back instead). */
  async #create(e: Entry): Promise<boolean> {
    const object = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: e.kind,
      metadata: {
        name: e.name,
        labels: {
          'app.kubernetes.io/managed-by': 'podmeter',
          ...(e.workload ? { [NAMESPACE_LABEL]: e.workload.namespace } : {}),
        },
      },
      ...this.#spec(e),
    };
    try {
      const created = await this.#book.o.api.request<UsageObject>('POST', usagePath(e.kind), {
        body: object,
        timeoutMs: 30_000,
      });
      e.exists = true;
      e.resourceVersion = created.metadata.resourceVersion;
      return true;
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
      await this.#reread(e);
      return false;
    }
  }

  #spec(e: Entry): { spec?: object } {
    return e.workload
      ? { spec: { namespace: e.workload.namespace, kind: e.workload.kind, name: e.workload.name } }
      : {};
  }

  /** The intents of the NodeRetirements objects a NodeUsage's status lists, into `state` (false: not readable now, or leadership changed). */
  async #readSpills(e: Entry, state: LedgerState, generation: number): Promise<boolean> {
    try {
      const { objects, missing } = await readSpills(this.#book, state.spills);
      if (generation !== this.#book.generation) return false;
      const known = state.problems.length;
      for (const o of objects) readSpill(o, state);
      this.#book.reportProblems(e.kind, e.name, [
        ...state.problems.slice(known),
        ...missing.map((name) => `lists NodeRetirements ${name}, which is gone: its intents are lost`),
      ]);
      return true;
    } catch (err) {
      this.#book.o.onError('read_status');
      this.#book.log.warn({ name: e.name, err: describe(err) }, 'cannot read the NodeRetirements objects; retrying');
      return false;
    }
  }

  /** Takes the persisted ledger of one object after a conflict. */
  async #reread(e: Entry): Promise<void> {
    const generation = this.#book.generation;
    let object: UsageObject | undefined;
    try {
      object = await this.#book.o.api.find<UsageObject>(usagePath(e.kind, e.name), { timeoutMs: 30_000 });
    } catch (err) {
      this.#book.o.onError('read_status');
      this.#book.log.warn(
        { kind: e.kind, name: e.name, err: describe(err) },
        'cannot read back after a conflict; retrying',
      );
      return;
    }
    if (generation !== this.#book.generation) return;
    if (object === undefined) {
      e.exists = false;
      e.resourceVersion = undefined;
      return;
    }
    const state = object.status === undefined ? emptyLedgerState() : parseLedger(object.status);
    this.#book.reportProblems(e.kind, e.name, state.problems);
    e.exists = true;
    e.resourceVersion = object.metadata.resourceVersion;
    if (state.problems.length > 0 || object.status === undefined) {
      // Keep this process's ledger: it is written over the unreadable one.
      return;
    }
    if (e.kind === 'NodeUsage' && !(await this.#readSpills(e, state, generation))) return;
    e.retired = state.retired;
    e.retiredPods = state.retiredPods;
    if (e.kind === 'NodeUsage') {
      // (markers this process knows of are kept: the rollups are done)
      for (const [uid, r] of state.retiring)
        if (e.retiring.get(uid)?.entry.rolledUp && !r.entry.rolledUp) r.entry = { ...r.entry, rolledUp: true };
      takeNodeLedger(e, state);
      e.finalsAfter = Math.max(e.finalsAfter, state.finalsAfter);
      for (const [uid, p] of [...e.pendingNode]) {
        if (!state.retiring.has(uid)) continue;
        // Already retired by the other writer: finish the rollup with its counts.
        e.pendingNode.delete(uid);
        const r = state.retiring.get(uid)!;
        if (p.pod.checkpointed !== undefined) this.#book.subLive(p.pod, p.pod.checkpointed);
        if (!r.entry.rolledUp && p.pod.workload) this.#book.rollUp(e, uid, r.seq, p.pod.workload, r.counts);
      }
    } else {
      e.marks = state.marks;
      for (const [uid, p] of [...e.pending]) {
        const node = this.#book.entries.get(`NodeUsage/${p.node}`);
        if (node !== undefined && this.#book.has(e, node, p.seq)) {
          e.pending.delete(uid);
          this.#book.rolledUp(uid, e.kind);
        }
      }
    }
    this.#book.dirty(e);
  }
}
