/**
 * The lifecycle of every counted unit: attach as soon as its cgroup appears
 * (or adopt the links an earlier agent pinned), read its counters on demand,
 * take the final counts when its cgroup empties and again when it is removed
 * (until the kernel releases the storage), then keep the finals visible for
 * the retention period. Nothing here loses a counted byte: finals are read
 * from the kernel while it still has them, and persisted.
 *
 * A pod is one unit across its cgroups: when a pod's cgroup is made anew
 * (a node reboot: links, counters and cgroups are gone; the kubelet starts
 * the pod again under the same uid), its new unit carries the counts of the
 * earlier cgroup (the previous run's record, or its final) as its base, and
 * that final is dropped, so the pod's counts never go back. Fresh links of a
 * cgroup whose pins went while no agent ran carry its saved counts the same way
 * (or count on into its storage, where that outlived the old links), as do
 * links made anew under the running agent after another tool detached them.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import type { Logger } from '../../common/log.ts';
import type { UnitIdentity } from '../cgroups/units.ts';
import { Cgroup } from '../kernel/bpf.ts';
import { addUnitCounts, type UnitCounts } from '../../common/contract/counts.ts';
import type { KernelRead } from './meter.ts';
import { drainStorage } from './drain.ts';
import { KeptFinals } from './keptFinals.ts';
import { AttachRetries, type UnattachedUnit } from './retries.ts';
import { StateSaver } from './saver.ts';
import type { StateStore, UnitRecord } from './state.ts';
import type { TrackerEvents, TrackerFlows, TrackerMeter } from './trackerPorts.ts';
import { countFrom, keyApart, ofThisBoot, openedUnit, takeRead, vanishedUnit, type Unit } from './unit.ts';

export class Tracker extends EventEmitter<TrackerEvents> {
  readonly #meter: TrackerMeter;
  readonly #root: string;
  /** The root with one trailing '/': a watched unit's path is this + its relPath (see #count). */
  readonly #rootSlash: string;
  readonly #saver: StateSaver;
  readonly #log: Logger;
  /** Live and draining units by relPath. */
  readonly #units = new Map<string, Unit>();
  readonly #finals: KeptFinals;
  /** Records of the previous run (until the initial scan is settled): counts to carry on, or to finalise cgroups that vanished while no agent ran. */
  #previous = new Map<bigint, UnitRecord>();
  /** The kernel read each unit's counts were last set from (handed back to the meter, which returns it while the unit is idle). */
  readonly #lastRead = new WeakMap<Unit, KernelRead>();
  /** Units whose attach failed: retried at every tick() until it works or the cgroup goes. */
  readonly #unattached: AttachRetries;
  /** Service flows (agent/services/flows.ts), whose bytes this adds to the units' counts (credit()). */
  #flows: TrackerFlows | undefined;
  /** The flow drain number the state file held at start: written back as it was while no flows are drained here. */
  #flowsDrained = 0n;

  constructor(options: { meter: TrackerMeter; root: string; store: StateStore; log: Logger; retentionMs: number }) {
    super();
    this.#meter = options.meter;
    this.#root = options.root;
    this.#rootSlash = join(options.root, '/');
    this.#saver = new StateSaver({
      store: options.store,
      log: options.log,
      records: () => ({
        live: this.#units.values(),
        finals: this.#finals.values(),
        flowsDrained: this.#flows?.drained() ?? this.#flowsDrained,
      }),
      onError: (err) => this.emit('error', 'state', err),
    });
    this.#log = options.log;
    this.#unattached = new AttachRetries(options.log);
    this.#finals = new KeptFinals(options.retentionMs);
  }

  /** Loads what the previous run persisted. Call before the first unit arrives. Returns the state file's flow drain number. */
  restore(): { flowsDrained: bigint } {
    const { live, finals, earlierBoot, flowsDrained } = this.#saver.load();
    this.#flowsDrained = flowsDrained;
    const records = keyApart({ live, finals }, earlierBoot); // (an earlier boot's cgroup ids are given out again)
    this.#previous = new Map(records.live.map((r) => [r.id, r]));
    for (const r of records.finals) this.#finals.add({ ...r, state: 'terminated', path: join(this.#root, r.relPath) });
    this.prune();
    return { flowsDrained };
  }

  /** Service flows' bytes come through credit(); a unit is finalised only after a drain that follows its last packet. */
  useFlows(flows: TrackerFlows): void {
    this.#flows = flows;
  }

  /**
   * Adds resolved Service flow traffic to units (live, draining, of the
   * previous run, or final), in their base: counts their links' storage does
   * not hold. Returns the unit ids it knows nothing of.
   */
  credit(moves: ReadonlyMap<bigint, UnitCounts>): bigint[] {
    const unknown: bigint[] = [];
    const byId = new Map<bigint, UnitRecord>([...this.#units.values()].map((u) => [u.id, u]));
    for (const [id, move] of moves) {
      const record = byId.get(id) ?? this.#previous.get(id) ?? this.#finals.get(id);
      if (record === undefined) {
        unknown.push(id);
        continue;
      }
      record.base = addUnitCounts(record.base, move);
      Object.assign(record, addUnitCounts(record, move)); // network and byClass
      this.#saver.changed();
    }
    return unknown;
  }

  /** Writes the state file now; false when it could not be written. */
  save(): Promise<boolean> {
    return this.#saver.now();
  }

  /** A unit's cgroup exists: count it. */
  onUnit(identity: UnitIdentity, seenAt: number): void {
    if (this.#units.has(identity.relPath) || this.#unattached.has(identity.relPath)) return;
    this.#count(identity, seenAt);
  }

  /** Units whose attach failed, retried at every tick(): relPath, the error's code and since when (ms since the epoch). */
  unattached(): UnattachedUnit[] {
    return this.#unattached.summary();
  }

  /**
   * Attaches again every unit whose attach failed (ENOMEM for its per-CPU
   * storage, EPERM, a cgroup at its program limit, ...): each failure is
   * counted (podmeter_errors_total{op="attach"}), but logged once per unit,
   * when it first fails, and once more when it succeeds.
   */
  retryAttach(): void {
    for (const pending of this.#unattached.all()) {
      if (this.#unattached.get(pending.identity.relPath) !== pending) continue;
      this.#count(pending.identity, pending.seenAt);
    }
  }

  /** Attaches (or adopts) a unit's links; on failure the unit waits in #unattached for retryAttach(). */
  #count(identity: UnitIdentity, seenAt: number): void {
    // relPath comes from the watcher, made of names read from the cgroup
    // tree: already normal, so no join(), whose normalisation (interpreted
    // JavaScript: the agent runs without V8's optimising compilers) was a
    // tenth of a 500-pod burst's attach time. The directory is held open
    // while the unit is counted: its id and both attaches walk its path once.
    let cgroup: Cgroup;
    try {
      cgroup = Cgroup.open(this.#rootSlash + identity.relPath);
    } catch {
      this.#unattached.delete(identity.relPath);
      return; // removed before we got to it: nothing ran in it that we could count
    }
    try {
      this.#countIn(cgroup, identity, seenAt);
    } finally {
      cgroup.close();
    }
  }

  /** #count() of the cgroup opened. */
  #countIn(cgroup: Cgroup, identity: UnitIdentity, seenAt: number): void {
    const { id, path } = cgroup;
    let previous = this.#previous.get(id);
    const unit = openedUnit(identity, id, path, previous);
    let storageKept: boolean;
    try {
      const links = this.#meter.linkState(id);
      if (links === 'attached') {
        this.#unattached.delete(identity.relPath);
        this.#units.set(identity.relPath, unit);
        this.#previous.delete(id);
        this.#read(unit);
        this.emit('attached', unit, undefined);
        return;
      }
      if (links === 'stale') this.#meter.release(id);
      storageKept = previous !== undefined && this.#meter.read(id) !== undefined;
      this.#meter.attach(cgroup);
    } catch (err) {
      if (this.#unattached.failed(identity, seenAt, err)) this.emit('error', 'attach', err);
      return;
    }
    this.#unattached.attached(identity);
    // Fresh links count from zero; what this cgroup counted before (its pins
    // went while no agent ran) or an earlier cgroup of the same pod counted
    // carries on as the base. But a cgroup's storage can outlive its links
    // (from 5.9 it lives with the cgroup; it goes with podmeter's map): the
    // new links then count on into it, and only the base it was read on
    // carries on, or the saved counts would count twice.
    if (previous !== undefined) this.#previous.delete(id);
    else previous = this.#takeEarlierOfPod(identity.uid, id);
    countFrom(unit, previous, storageKept);
    if (previous !== undefined)
      this.#log.info(
        { cgroup: identity.relPath, uid: identity.uid, counters: previous.network },
        'counting on from the counts of before (links or cgroup made anew)',
      );
    this.#units.set(identity.relPath, unit);
    if (storageKept) this.#read(unit); // what it holds, at once: the counts never show less than before
    this.emit('attached', unit, (performance.now() - seenAt) / 1000);
    this.#log.debug({ cgroup: identity.relPath, uid: identity.uid }, 'attached');
    this.#saver.soon();
  }

  /**
   * The counts of an earlier cgroup of pod `uid` (not `id`), taken out of
   * the previous run's records (read from its links while the kernel still
   * has them, which are then released) or out of the finals.
   */
  #takeEarlierOfPod(uid: string | undefined, id: bigint): UnitRecord | undefined {
    if (uid === undefined) return undefined;
    for (const [oldId, record] of this.#previous) {
      if (record.uid !== uid || oldId === id) continue;
      this.#previous.delete(oldId);
      const unit = this.#lastCounts(oldId, record);
      this.#release(oldId);
      return unit;
    }
    return this.#finals.takeOfPod(uid, id);
  }

  /** A vanished cgroup's last counts: what its links still read, else the previous run's record. */
  #lastCounts(id: bigint, record: UnitRecord | undefined): Unit {
    const read = ofThisBoot(id) ? this.#meter.read(id) : undefined;
    return vanishedUnit(id, record, this.#root, read?.counts);
  }

  /**
   * New links for a live unit whose links another tool detached under the
   * agent (relink.ts finds them). Its storage is read first: from 5.9 it
   * lives with the cgroup, so it still holds every byte the old links
   * counted and the new links count on into it; where it went with the old
   * links (unreadable now), the new links start from zero and the unit's
   * counts so far (as of its last read) become its base. Either way its
   * counts never go back nor count twice. Returns whether the storage was
   * kept; undefined when the unit's cgroup is gone (the watcher finalises
   * it). Throws what the read or the attach throws.
   */
  relink(unit: Unit): { storageKept: boolean } | undefined {
    if (this.#units.get(unit.relPath) !== unit || unit.state !== 'live') return undefined;
    let cgroup: Cgroup;
    try {
      cgroup = Cgroup.open(unit.path);
    } catch {
      return undefined;
    }
    try {
      if (cgroup.id !== unit.id) return undefined; // removed, and a new cgroup made at its path
      const storageKept = this.#take(unit, this.#meter.read(unit.id, this.#lastRead.get(unit)));
      this.#meter.relink(cgroup);
      if (!storageKept) {
        unit.base = { network: unit.network, byClass: unit.byClass };
        this.#lastRead.delete(unit);
        this.#saver.changed();
      }
      this.#read(unit);
      return { storageKept };
    } finally {
      cgroup.close();
    }
  }

  /** cgroup.events changed: on populated 0 the unit's processes are gone; take the counts now. */
  onPopulated(relPath: string, populated: boolean): void {
    const unit = this.#units.get(relPath);
    if (unit === undefined || populated) return;
    this.#read(unit);
    void this.#saver.now();
    this.emit('emptied', unit);
  }

  /** The unit's cgroup was removed: read until the kernel releases the storage, then finalise. */
  onGone(relPath: string): void {
    this.#unattached.delete(relPath);
    const unit = this.#units.get(relPath);
    if (unit === undefined || unit.state !== 'live') return;
    unit.state = 'draining';
    this.#read(unit);
    drainStorage(
      () => this.#read(unit),
      () => {
        // No socket of the unit is left: one more flow drain holds its last Service bytes.
        if (this.#flows === undefined) this.#finalise(unit);
        else void this.#flows.drain().then(() => this.#finalise(unit));
      },
    );
  }

  /**
   * After the initial scan: links pinned for cgroups that no longer exist
   * (removed while no agent ran) are finalised from what the kernel or the
   * previous run's state still has, and their pins removed.
   */
  settleLeftovers(): void {
    const liveIds = new Set([...this.#units.values()].map((u) => u.id));
    const leftovers = new Set<bigint>([...this.#previous.keys()]);
    for (const pin of this.#meter.pins.listLinks()) leftovers.add(pin.cgroupId);
    for (const id of leftovers) {
      if (liveIds.has(id) || this.#finals.has(id)) {
        if (!liveIds.has(id)) this.#release(id);
        continue;
      }
      const unit = this.#lastCounts(id, this.#previous.get(id));
      this.#log.info({ cgroup: unit.relPath, id: String(id) }, 'cgroup vanished while the agent was down: finalised');
      this.#finalise(unit);
    }
    this.#previous.clear();
    void this.#saver.now();
  }

  /** Reads every live unit now (interval tick and scrape), all in one read of the kernel's storage (Meter.readMany). */
  refresh(): void {
    const live = [...this.#units.values()].filter((unit) => unit.state === 'live');
    let reads: (KernelRead | undefined)[];
    try {
      reads = this.#meter.readMany(
        live.map((unit) => unit.id),
        live.map((unit) => this.#lastRead.get(unit)),
      );
    } catch (err) {
      this.emit('error', 'read', err);
      return;
    }
    live.forEach((unit, i) => this.#take(unit, reads[i]));
  }

  /** Live, draining and retained terminated units. */
  units(): Unit[] {
    return [...this.#units.values(), ...this.#finals.values()];
  }

  liveCount(): number {
    return this.#units.size;
  }

  /** Drops finals older than the retention. */
  prune(now = Date.now()): void {
    if (this.#finals.prune(now)) this.#saver.changed();
  }

  /** Interval work: attach what failed to, read, prune, persist (when anything changed). */
  tick(): void {
    this.retryAttach();
    this.refresh();
    this.prune();
    this.#saver.ifChanged();
  }

  /** Reads every unit a last time and persists state; links stay pinned so counting continues without us. */
  async stop(): Promise<void> {
    this.refresh();
    await this.#saver.now();
  }

  /** Updates a unit's counters from the kernel; false once the storage is gone. */
  #read(unit: Unit): boolean {
    let read: KernelRead | undefined;
    try {
      read = this.#meter.read(unit.id, this.#lastRead.get(unit));
    } catch (err) {
      this.emit('error', 'read', err);
      return false;
    }
    return this.#take(unit, read);
  }

  /** Sets a unit's counts from a read of the kernel; false when there was nothing to read (storage gone). */
  #take(unit: Unit, read: KernelRead | undefined): boolean {
    if (read === undefined) return false;
    const last = this.#lastRead.get(unit);
    if (read === last) return true; // idle since: the unit's counts stay the same objects
    this.#lastRead.set(unit, read);
    if (takeRead(unit, read.counts)) this.#saver.changed(); // (a draining unit's counts never go back)
    return true;
  }

  /** Detaches and unpins a cgroup's links (none for a record of an earlier boot). */
  #release(id: bigint): void {
    if (!ofThisBoot(id)) return;
    try {
      this.#meter.release(id);
    } catch (err) {
      this.emit('error', 'detach', err);
    }
  }

  #finalise(unit: Unit): void {
    this.#release(unit.id);
    unit.state = 'terminated';
    unit.terminatedAt = Date.now();
    if (this.#units.get(unit.relPath) === unit) this.#units.delete(unit.relPath);
    this.#finals.add(unit);
    this.emit('terminated', unit);
    this.#log.debug({ cgroup: unit.relPath, counters: unit.network }, 'finalised');
    void this.#saver.now();
  }
}
