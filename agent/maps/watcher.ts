/**
 * Keeps the latest map inventory: one enumeration at start, then one per
 * interval. It never throws: a failed enumeration is logged and counted, and
 * the previous inventory stays the latest (a scrape sees the last good one).
 * The enumeration runs in slices of about 1 ms between which the event loop
 * serves scrapes and cgroup events (inventory.ts); tens of milliseconds in
 * all for thousands of maps, well under 1% of a core at a 10-30 s interval.
 * A refresh still running when the next is due is not doubled.
 */
import type { Logger } from '../../common/log.ts';
import { takeInventory, type InventoryOptions, type MapInventory } from './inventory.ts';

export interface MapInventoryOptions extends InventoryOptions {
  intervalMs: number;
  log?: Logger;
  /** Called with every failed enumeration (e.g. `() => metrics.errors.inc({ op: 'maps' })`). */
  onError?: (err: unknown) => void;
}

export interface MapInventoryHandle {
  /** The latest successful inventory; undefined until the first one succeeds. */
  latest(this: void): MapInventory | undefined;
  /** Enumerates now (or joins the enumeration under way); resolves with the (possibly previous) latest inventory. */
  refresh(): Promise<MapInventory | undefined>;
  /** Settles when the first enumeration has (succeeded or failed). */
  readonly first: Promise<unknown>;
  /** Failed enumerations so far. */
  errors(): number;
  stop(): void;
}

export function startMapInventory(options: MapInventoryOptions): MapInventoryHandle {
  const { intervalMs, log, onError, ...inventoryOptions } = options;
  let latest: MapInventory | undefined;
  let errors = 0;
  let stopped = false;

  let running: Promise<MapInventory | undefined> | undefined;
  /** Unreadable map ids already logged. */
  const reported = new Set<number>();
  const enumerate = async (): Promise<MapInventory | undefined> => {
    try {
      latest = await takeInventory(inventoryOptions);
      for (const map of latest.unreadableMaps) {
        // Once per map: it stays left out at every round while it exists.
        if (reported.has(map.id)) continue;
        reported.add(map.id);
        log?.warn(
          { mapId: map.id, code: map.code },
          'a BPF map cannot be opened (refused by the kernel or an LSM): left out of the inventory, the others are counted',
        );
      }
      log?.debug(
        {
          maps: latest.mapCount,
          bytes: latest.totalBytes,
          ms: Math.round(latest.durationMs),
          longestSliceMs: Math.round(latest.longestSliceMs * 10) / 10,
        },
        'BPF map inventory',
      );
    } catch (err) {
      errors++;
      try {
        log?.warn({ err }, 'BPF map inventory failed');
        onError?.(err);
      } catch {
        // a broken logger or callback must not stop the timer
      }
    }
    return latest;
  };
  const refresh = (): Promise<MapInventory | undefined> => {
    if (stopped) return Promise.resolve(latest);
    running ??= enumerate().finally(() => (running = undefined));
    return running;
  };

  const first = refresh();
  const timer = setInterval(() => void refresh(), intervalMs);
  timer.unref();

  return {
    latest: () => latest,
    refresh,
    first,
    errors: () => errors,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
