/**
 * Service traffic counted in the class of its backend. The programs count
 * every packet to or from a Service address per flow, in the active flow
 * table (bpf/podmeter.h: Service flows); about once a second this drains
 * the tables: makes the other table active, reads the old one, resolves each
 * flow's backend (resolve.ts) and adds its bytes to its unit's counts in
 * the backend's class (the unit's `base`: counts its links' storage does not
 * hold), or in `service` when the backend is not known, writes the state
 * file, and only then empties the table. The table is read in one native
 * call; its flows are resolved SLICE at a time, the event loop served
 * between slices (a pod may open 65,536 flows per drain), and credited to
 * the units all at once after the last slice.
 *
 * Nothing is lost or counted twice across restarts: each table carries the
 * drain number it was made active at (podmeter_flow_epochs), and the state
 * file the last drain number whose bytes are in the units' counts it holds.
 * A table whose number is not above it was moved already: it is emptied
 * unread. A table is emptied only after a state file that holds its bytes
 * was written, and made active again only once empty.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Logger } from '../../common/log.ts';
import {
  DIRECTIONS,
  NO_TRAFFIC,
  unitCounts,
  type Direction,
  type Traffic,
  type UnitCounts,
} from '../../common/contract/counts.ts';
import { RESOLVE_MISSES, type FlowResolver, type ResolveMiss } from './resolve.ts';
import type { FlowBatch, FlowTables, KernelMiss, Table } from './tables.ts';

/** How often the tables are drained: often enough that a flow's conntrack entry is still there when it is first read. */
export const DRAIN_PERIOD_MS = 1000;

/**
 * Flow entries resolved per event-loop turn: one conntrack request (the
 * addon sends 256 tuples per sendto) and a few milliseconds of work, so
 * /healthz, scrapes and the API answer between slices of a flood.
 */
export const SLICE = 256;

/** Why bytes to or from a Service stayed in `service`. */
export type UnresolvedReason = KernelMiss | ResolveMiss | 'unit-gone';

/** What draining needs of the flow tables (tables.ts; unit tests use an in-memory stand-in). */
export type DrainableTables = Pick<
  FlowTables,
  'active' | 'epoch' | 'activate' | 'swapTo' | 'read' | 'clear' | 'isEmpty' | 'misses'
>;

/** What draining needs of the resolver (resolve.ts). */
export type DrainResolver = Pick<FlowResolver, 'resolve' | 'settle'>;

export interface ServiceFlowsOptions {
  tables: DrainableTables;
  resolver: DrainResolver;
  /** The last drain number whose bytes the state file holds (0 when none). */
  drained: bigint;
  /** Adds each unit's resolved flow traffic to its counts; returns the units it does not know. */
  credit: (moves: ReadonlyMap<bigint, UnitCounts>) => bigint[];
  /** Writes the state file (with drained() in it); false when it could not. */
  persist: () => Promise<boolean>;
  log: Logger;
}

export class ServiceFlows {
  readonly #tables: DrainableTables;
  readonly #resolver: DrainResolver;
  readonly #creditUnits: ServiceFlowsOptions['credit'];
  readonly #persist: ServiceFlowsOptions['persist'];
  readonly #log: Logger;
  /** The last drain number whose bytes are in the units' counts. */
  #moved: bigint;
  /** The last drain number whose bytes are in the state file. */
  #persisted: bigint;
  /** Bytes the agent left in `service`, by reason, since it started. */
  readonly #unresolved = new Map<ResolveMiss | 'unit-gone', Sum>();
  /** Flow entries drained since start (a long flow counts once per drain it sent in). */
  #entries = 0;
  #chain: Promise<void> = Promise.resolve();
  /** The drain asked for that has not started yet. */
  #waiting: Promise<void> | undefined;
  #queued = 0;
  #timer: NodeJS.Timeout | undefined;
  #failing = false;

  constructor(options: ServiceFlowsOptions) {
    this.#tables = options.tables;
    this.#resolver = options.resolver;
    this.#creditUnits = options.credit;
    this.#persist = options.persist;
    this.#log = options.log;
    this.#moved = options.drained;
    this.#persisted = options.drained;
  }

  /** Makes a table active if none is (before any program is attached), then drains every DRAIN_PERIOD_MS. */
  start(): void {
    if (this.#tables.active() === undefined) {
      this.#tables.clear(0);
      this.#tables.clear(1);
      this.#tables.activate(0, this.#moved + 1n);
    }
    this.#timer = setInterval(() => {
      if (this.#queued === 0) void this.drain();
    }, DRAIN_PERIOD_MS).unref();
  }

  /**
   * One drain of both tables, after any running one; resolves when it is done
   * (never rejects). Callers while one waits to start share it (it starts
   * after each of them): 500 pods removed at once wait for one drain, not 500
   * (each swap waits out an RCU grace period).
   */
  drain(): Promise<void> {
    if (this.#waiting !== undefined) return this.#waiting;
    this.#queued++;
    const next = this.#chain
      .then(() => {
        this.#waiting = undefined;
        return this.#cycle();
      })
      .then(
        () => this.#ok(),
        (err: unknown) => this.#failed(err),
      );
    this.#waiting = next;
    this.#chain = next.finally(() => this.#queued--);
    return next;
  }

  /** Flow table entries drained since start (counted as each slice is resolved): what the Service flows cost the agent. */
  entriesDrained(): number {
    return this.#entries;
  }

  /** The drain number the state file must record with the counts it writes now. */
  drained(): bigint {
    return this.#moved;
  }

  /** Bytes and packets to or from Services that stayed in `service`, by reason (the kernel's since its maps were made). */
  unresolved(): Record<UnresolvedReason, Traffic> {
    const out: Partial<Record<UnresolvedReason, Traffic>> = this.#tables.misses();
    for (const reason of [...RESOLVE_MISSES, 'unit-gone'] as const) {
      const sum = this.#unresolved.get(reason);
      out[reason] = sum === undefined ? NO_TRAFFIC : { bytes: sum.bytes, packets: sum.packets };
    }
    return out as Record<UnresolvedReason, Traffic>;
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#chain;
  }

  async #cycle(): Promise<void> {
    const active = this.#tables.active();
    if (active === undefined) return; // start() sets one
    const inactive: Table = active === 0 ? 1 : 0;
    if (!(await this.#empty(inactive))) return;
    if (this.#tables.isEmpty(active)) return;
    const epoch = this.#tables.epoch(active);
    await this.#tables.swapTo(inactive, (epoch > this.#moved ? epoch : this.#moved) + 1n);
    await this.#empty(active);
  }

  /** Moves an inactive table's bytes (unless moved before), gets them written, empties it; false when it stays full. */
  async #empty(table: Table): Promise<boolean> {
    if (this.#tables.isEmpty(table)) return true;
    const epoch = this.#tables.epoch(table);
    let read: FlowBatch | undefined;
    if (epoch > this.#moved) {
      read = this.#tables.read(table);
      const tally = await this.#resolve(read);
      // Credited and recorded as moved in one synchronous step: a state file written at any time holds both or neither.
      this.#credit(tally);
      this.#moved = epoch;
    }
    if (epoch > this.#persisted) {
      if (!(await this.#persist())) return false; // the saver logs and counts it; the table waits
      this.#persisted = epoch;
    }
    this.#tables.clear(table, read);
    return true;
  }

  /** Each flow's bytes by unit, direction and class (and what stays in `service`, by reason), SLICE flows per event-loop turn. */
  async #resolve(read: FlowBatch): Promise<Tally> {
    const units = new Map<bigint, UnitSums>();
    const misses = new Map<ResolveMiss, Sum>();
    for (let from = 0; from < read.length; from += SLICE) {
      if (from > 0) await nextTurn();
      const entries = read.entries(from, Math.min(from + SLICE, read.length));
      const resolutions = this.#resolver.resolve(entries);
      this.#entries += entries.length;
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        const r = resolutions[i]!;
        let unit = units.get(entry.unit);
        if (unit === undefined) units.set(entry.unit, (unit = { ingress: new Map(), egress: new Map(), total: sum() }));
        const cls = 'cls' in r ? r.cls : 'service';
        for (const d of DIRECTIONS) {
          const t = entry.traffic[d];
          if (t.packets === 0n) continue;
          let c = unit[d].get(cls);
          if (c === undefined) unit[d].set(cls, (c = sum()));
          add(c, t);
          add(unit.total, t);
          if ('miss' in r) addTo(misses, r.miss, t);
        }
      }
    }
    this.#resolver.settle();
    return { units, misses };
  }

  /** Adds the resolved flows to their units, in their backends' classes, and the rest to the unresolved counts. */
  #credit({ units, misses }: Tally): void {
    for (const [reason, t] of misses) addTo(this.#unresolved, reason, t);
    const moves = new Map<bigint, UnitCounts>();
    for (const [unit, sums] of units) {
      const peers = { ingress: {}, egress: {} } as Record<Direction, Record<string, Traffic>>;
      for (const d of DIRECTIONS)
        for (const [cls, s] of sums[d]) peers[d][cls] = { bytes: s.bytes, packets: s.packets };
      moves.set(unit, unitCounts(peers));
    }
    for (const unit of this.#creditUnits(moves)) {
      const lost = units.get(unit)?.total ?? sum();
      addTo(this.#unresolved, 'unit-gone', lost);
      this.#log.warn(
        { unit: String(unit), bytes: String(lost.bytes) },
        'Service flow traffic of a cgroup no longer tracked: not counted for any pod',
      );
    }
  }

  #ok(): void {
    if (!this.#failing) return;
    this.#failing = false;
    this.#log.info('Service flow tables drained again');
  }

  #failed(err: unknown): void {
    if (this.#failing) return;
    this.#failing = true;
    this.#log.error(
      { err },
      'draining the Service flow tables failed; retrying every second (their bytes wait in the tables, then count in service)',
    );
  }
}

/** Bytes and packets added up in place (a drain adds thousands of flows: no new object per flow). */
interface Sum {
  bytes: bigint;
  packets: bigint;
}

/** One unit's flows of a drain: per direction, by class; and both directions together. */
interface UnitSums {
  ingress: Map<string, Sum>;
  egress: Map<string, Sum>;
  total: Sum;
}

/** A drain's flows, resolved: by unit, and what stays in `service` by reason (credited together, or not at all). */
interface Tally {
  units: Map<bigint, UnitSums>;
  misses: Map<ResolveMiss, Sum>;
}

function sum(): Sum {
  return { bytes: 0n, packets: 0n };
}

function add(to: Sum, t: Traffic): void {
  to.bytes += t.bytes;
  to.packets += t.packets;
}

function addTo<K>(sums: Map<K, Sum>, key: K, t: Traffic): void {
  let s = sums.get(key);
  if (s === undefined) sums.set(key, (s = sum()));
  add(s, t);
}
