/**
 * The finals the tracker keeps: terminated units, visible (API, metrics,
 * Node finals) and persisted for the retention period, by id (a cgroup made
 * again at the same path is a new unit).
 */
import type { Unit } from './unit.ts';

export class KeptFinals {
  /** How long a final is kept after its unit terminated (--retention). */
  readonly #retentionMs: number;
  readonly #byId = new Map<bigint, Unit>();

  constructor(retentionMs: number) {
    this.#retentionMs = retentionMs;
  }

  add(unit: Unit): void {
    this.#byId.set(unit.id, unit);
  }

  get(id: bigint): Unit | undefined {
    return this.#byId.get(id);
  }

  has(id: bigint): boolean {
    return this.#byId.has(id);
  }

  values(): IterableIterator<Unit> {
    return this.#byId.values();
  }

  /** Takes out the final of an earlier cgroup of pod `uid` (not cgroup `id`), if one is kept. */
  takeOfPod(uid: string, id: bigint): Unit | undefined {
    for (const [oldId, final] of this.#byId) {
      if (final.uid !== uid || oldId === id) continue;
      this.#byId.delete(oldId);
      return final;
    }
    return undefined;
  }

  /** Drops finals older than the retention; true when any went. */
  prune(now: number): boolean {
    let dropped = false;
    for (const [id, unit] of this.#byId) {
      if ((unit.terminatedAt ?? 0) + this.#retentionMs < now) {
        this.#byId.delete(id);
        dropped = true;
      }
    }
    return dropped;
  }
}
