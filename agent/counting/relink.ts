/**
 * Puts back links detached under the running agent. Another tool can
 * detach them (`bpftool link detach id N`, BPF_LINK_DETACH, an operator's
 * mistake): the agent's fds and pins stay, but the links count nothing, and
 * the kernel says so only when asked (the link's cgroup id becomes 0). At
 * every check each held link is asked (Meter.detachedLinks); a live unit
 * whose cgroup still exists gets new links, pinned in place of the old,
 * with its counts kept (Tracker.relink). Traffic between the detach and
 * the check is not counted (no program ran for it); kernels before 5.9
 * also drop the cgroup's storage with its links, so there the bytes
 * between the last read and the detach are lost too.
 *
 * Each detach is a warning (once per unit and detach) and one
 * podmeter_errors_total{op="link_detached"}; a re-attach that fails counts
 * as op="attach" with its reason, each attempt (retried at every check),
 * logged once until it works.
 */
import type { Logger } from '../../common/log.ts';
import type { Meter } from './meter.ts';
import type { Tracker } from './tracker.ts';
import type { Unit } from './unit.ts';

/** What LinkRepair counts in podmeter_errors_total{op}. */
export type LinkRepairErrorOp = 'link_detached' | 'attach';

export class LinkRepair {
  readonly #meter: Pick<Meter, 'detachedLinks'>;
  readonly #tracker: Pick<Tracker, 'units' | 'relink'>;
  readonly #log: Logger;
  readonly #onError: (op: LinkRepairErrorOp, err: unknown) => void;
  /** Detached cgroups whose re-attach failed: said once, retried at every check. */
  readonly #failing = new Set<bigint>();

  constructor(options: {
    meter: Pick<Meter, 'detachedLinks'>;
    tracker: Pick<Tracker, 'units' | 'relink'>;
    log: Logger;
    onError: (op: LinkRepairErrorOp, err: unknown) => void;
  }) {
    this.#meter = options.meter;
    this.#tracker = options.tracker;
    this.#log = options.log;
    this.#onError = options.onError;
  }

  check(): void {
    const detached = new Set(this.#meter.detachedLinks());
    for (const id of this.#failing) if (!detached.has(id)) this.#failing.delete(id); // released meanwhile
    if (detached.size === 0) return;
    for (const unit of this.#tracker.units()) {
      if (unit.state !== 'live' || !detached.has(unit.id)) continue; // a removed cgroup's links: the watcher's
      const failing = this.#failing.has(unit.id);
      let relinked: { storageKept: boolean } | undefined;
      try {
        relinked = this.#tracker.relink(unit);
      } catch (err) {
        if (!failing) {
          this.#detached(unit);
          this.#log.error(
            { err, cgroup: unit.relPath, uid: unit.uid },
            'cannot attach again (retrying at every interval): its traffic is not counted until then',
          );
          this.#failing.add(unit.id);
        }
        this.#onError('attach', err);
        continue;
      }
      if (relinked === undefined) continue; // its cgroup is gone after all
      if (failing) this.#failing.delete(unit.id);
      else this.#detached(unit);
      this.#log.info(
        { cgroup: unit.relPath, uid: unit.uid, storageKept: relinked.storageKept, counters: unit.network },
        relinked.storageKept
          ? 'attached again; its counts go on (the storage kept every byte counted before the detach)'
          : 'attached again; its counts go on from its last read (the kernel dropped its storage with the links: bytes between that read and the detach are lost)',
      );
    }
  }

  /** Says (once per unit and detach) that a unit's links were detached by someone else. */
  #detached(unit: Unit): void {
    this.#onError('link_detached', undefined);
    this.#log.warn(
      { cgroup: unit.relPath, uid: unit.uid, id: String(unit.id) },
      'links detached under the running agent (another tool: bpftool link detach, BPF_LINK_DETACH): its traffic since then is not counted; attaching again',
    );
  }
}
