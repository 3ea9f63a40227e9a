/**
 * Service traffic counted in the class of its backend. The programs count
 * every packet to or from a Service address per flow, in the active flow
 * table (bpf/podmeter.h: Service flows); about once a second this drains
 * the tables: makes the other table active, reads the old one, resolves each
 * flow's backend (resolve.ts) and adds its bytes to its unit's counts in
 * the backend's class (the unit's `base`: counts its links' storage does not
 * hold), or in `service` when the backend is not known, writes the state
 * file, and only then empties the table.
 *
 * Nothing is lost or counted twice across restarts: each table carries the
 * drain number it was made active at (podmeter_flow_epochs), and the state
 * file the last drain number whose bytes are in the units' counts it holds.
 * A table whose number is not above it was moved already: it is emptied
 * unread. A table is emptied only after a state file that holds its bytes
 * was written, and made active again only once empty.
 */
import type { Logger } from '../../common/log.ts';
import {
  addClassTraffic,
  addTraffic,
  DIRECTIONS,
  NO_TRAFFIC,
  unitCounts,
  type ClassTraffic,
  type Direction,
  type Traffic,
  type UnitCounts,
} from '../../common/contract/counts.ts';
import { RESOLVE_MISSES, type FlowResolver, type ResolveMiss } from './resolve.ts';
import type { FlowEntry, FlowTables, KernelMiss, Table } from './tables.ts';

/** How often the tables are drained: often enough that a flow's conntrack entry is still there when it is first read. */
export const DRAIN_PERIOD_MS = 1000;

/** Why bytes to or from a Service stayed in `service`. */
export type UnresolvedReason = KernelMiss | ResolveMiss | 'unit-gone';

/** What draining needs of the flow tables (tables.ts; unit tests use an in-memory stand-in). */
export type DrainableTables = Pick<
  FlowTables,
  'active' | 'epoch' | 'activate' | 'read' | 'clear' | 'isEmpty' | 'misses'
>;

export interface ServiceFlowsOptions {
  tables: DrainableTables;
  resolver: Pick<FlowResolver, 'resolve'>;
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
  readonly #resolver: Pick<FlowResolver, 'resolve'>;
  readonly #credit: ServiceFlowsOptions['credit'];
  readonly #persist: ServiceFlowsOptions['persist'];
  readonly #log: Logger;
  /** The last drain number whose bytes are in the units' counts. */
  #moved: bigint;
  /** The last drain number whose bytes are in the state file. */
  #persisted: bigint;
  /** Bytes the agent left in `service`, by reason, since it started. */
  readonly #unresolved = new Map<ResolveMiss | 'unit-gone', Traffic>();
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
    this.#credit = options.credit;
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

  /** Flow table entries drained since start: what the Service flows cost the agent. */
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
    for (const reason of [...RESOLVE_MISSES, 'unit-gone'] as const)
      out[reason] = this.#unresolved.get(reason) ?? NO_TRAFFIC;
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
    this.#tables.activate(inactive, (epoch > this.#moved ? epoch : this.#moved) + 1n);
    await this.#empty(active);
  }

  /** Moves an inactive table's bytes (unless moved before), gets them written, empties it; false when it stays full. */
  async #empty(table: Table): Promise<boolean> {
    if (this.#tables.isEmpty(table)) return true;
    const epoch = this.#tables.epoch(table);
    let entries: FlowEntry[] = [];
    if (epoch > this.#moved) {
      entries = this.#tables.read(table);
      this.#move(entries);
      this.#moved = epoch;
    }
    if (epoch > this.#persisted) {
      if (!(await this.#persist())) return false; // the saver logs and counts it; the table waits
      this.#persisted = epoch;
    }
    this.#tables.clear(table, entries);
    return true;
  }

  /** Adds a drained table's flows to their units, in their backends' classes. */
  #move(entries: readonly FlowEntry[]): void {
    this.#entries += entries.length;
    const resolutions = this.#resolver.resolve(entries);
    const byUnit = new Map<bigint, Record<Direction, ClassTraffic>>();
    const totals = new Map<bigint, Traffic>();
    entries.forEach((entry, i) => {
      const r = resolutions[i]!;
      const cls = 'cls' in r ? r.cls : 'service';
      if ('miss' in r) this.#count(r.miss, entry);
      const unit = byUnit.get(entry.unit) ?? { ingress: {}, egress: {} };
      for (const d of DIRECTIONS) {
        const t = entry.traffic[d];
        if (t.packets !== 0n) unit[d] = addClassTraffic(unit[d], { [cls]: t });
      }
      byUnit.set(entry.unit, unit);
      totals.set(entry.unit, addTraffic(totals.get(entry.unit) ?? NO_TRAFFIC, both(entry)));
    });
    const moves = new Map([...byUnit].map(([unit, peers]) => [unit, unitCounts(peers)]));
    const unknown = this.#credit(moves);
    for (const unit of unknown) {
      const lost = totals.get(unit) ?? NO_TRAFFIC;
      this.#unresolved.set('unit-gone', addTraffic(this.#unresolved.get('unit-gone') ?? NO_TRAFFIC, lost));
      this.#log.warn(
        { unit: String(unit), bytes: String(lost.bytes) },
        'Service flow traffic of a cgroup no longer tracked: not counted for any pod',
      );
    }
  }

  #count(reason: ResolveMiss, entry: FlowEntry): void {
    this.#unresolved.set(reason, addTraffic(this.#unresolved.get(reason) ?? NO_TRAFFIC, both(entry)));
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

function both(entry: FlowEntry): Traffic {
  return addTraffic(entry.traffic.ingress, entry.traffic.egress);
}
