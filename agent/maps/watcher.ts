/**
 * Keeps the latest map inventory: one enumeration at start, then one per
 * interval. It never throws: a failed enumeration is logged and counted, and
 * the previous inventory stays the latest (a scrape sees the last good one).
 * The enumeration is synchronous (tens of milliseconds for thousands of maps);
 * at a 10-30 s interval that is well under 1% of a core.
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
  latest(): MapInventory | undefined;
  /** Enumerates now; returns the (possibly previous) latest inventory. */
  refresh(): MapInventory | undefined;
  /** Failed enumerations so far. */
  errors(): number;
  stop(): void;
}

export function startMapInventory(options: MapInventoryOptions): MapInventoryHandle {
  const { intervalMs, log, onError, ...inventoryOptions } = options;
  let latest: MapInventory | undefined;
  let errors = 0;
  let stopped = false;

  const refresh = (): MapInventory | undefined => {
    if (stopped) return latest;
    try {
      latest = takeInventory(inventoryOptions);
      log?.debug({ maps: latest.mapCount, bytes: latest.totalBytes, ms: Math.round(latest.durationMs) }, 'BPF map inventory');
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

  refresh();
  const timer = setInterval(refresh, intervalMs);
  timer.unref();

  return {
    latest: () => latest,
    refresh,
    errors: () => errors,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
