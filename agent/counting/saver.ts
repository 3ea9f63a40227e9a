/**
 * When the tracker's state is read and written (StateStore does the file
 * work): read once at start, with what could not be read reported; written
 * soon after an attach (batched), at once on an emptied cgroup or a final,
 * and at each interval when counts changed. A write that fails (a full or
 * read-only state dir) is logged once, counted every time, and retried at
 * every interval: counting goes on, the pins keep the counts.
 */
import type { Logger } from '../../common/log.ts';
import type { StateStore, UnitRecord } from './state.ts';

/** How long an attach waits for its state write, so a burst of attaches is written once. */
const ATTACH_BATCH_MS = 200;

export class StateSaver {
  readonly #store: StateStore;
  readonly #log: Logger;
  readonly #records: () => { live: Iterable<UnitRecord>; finals: Iterable<UnitRecord>; flowsDrained: bigint };
  readonly #onError: (err: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  /** Counts changed since the state file was last written. */
  #dirty = false;
  /** The state file could not be written last time (logged once until a write succeeds). */
  #failing = false;

  constructor(options: {
    store: StateStore;
    log: Logger;
    records: () => { live: Iterable<UnitRecord>; finals: Iterable<UnitRecord>; flowsDrained: bigint };
    onError: (err: unknown) => void;
  }) {
    this.#store = options.store;
    this.#log = options.log;
    this.#records = options.records;
    this.#onError = options.onError;
  }

  /** What the previous run saved (StateStore.load), with records dropped and an unreadable file reported. */
  load(): { live: UnitRecord[]; finals: UnitRecord[]; earlierBoot: boolean; flowsDrained: bigint } {
    const { live, finals, earlierBoot, flowsDrained, problem, dropped } = this.#store.load();
    const stateDir = this.#store.dir;
    if (dropped.length > 0) {
      // One line for the file, however many records: the first few say why.
      this.#log.warn(
        { stateDir, dropped: dropped.length, kept: live.length + finals.length, records: dropped.slice(0, 10) },
        'state file records that do not decode were dropped; the others are kept',
      );
      this.#onError(new Error(`${dropped.length} state file records dropped`));
    }
    if (problem !== undefined) {
      this.#log.warn(
        { err: problem, stateDir },
        'state file unreadable (kept as state.json.corrupt); starting without it: live cgroups keep their counts from the pinned links, ' +
          'but the finals of terminated cgroups and the last counts of cgroups removed while no agent ran are lost',
      );
    }
    return { live, finals, earlierBoot, flowsDrained };
  }

  /** Counts changed: written at the next ifChanged(). */
  changed(): void {
    this.#dirty = true;
  }

  ifChanged(): void {
    if (this.#dirty) void this.now();
  }

  /** Written within ATTACH_BATCH_MS. */
  soon(): void {
    this.#timer ??= setTimeout(() => void this.now(), ATTACH_BATCH_MS).unref();
  }

  /** Written now (off the event loop); resolves when written (true) or not (false), never rejects. */
  now(): Promise<boolean> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dirty = false;
    const { live, finals, flowsDrained } = this.#records();
    return this.#store.save(live, finals, flowsDrained).then(
      () => {
        if (this.#failing) {
          this.#failing = false;
          this.#log.info({ stateDir: this.#store.dir }, 'state file written again');
        }
        return true;
      },
      (err: unknown) => {
        this.#dirty = true;
        if (!this.#failing) {
          this.#log.error(
            { err, stateDir: this.#store.dir },
            'cannot write the state file; counting goes on, retrying at every interval',
          );
          this.#failing = true;
        }
        this.#onError(err);
        return false;
      },
    );
  }
}
