/**
 * The tracker's edges (tracker.ts): what it uses of the Meter and of the
 * Service flows (test/unit/tracker.test.ts gives it fakes of both) and the
 * events it emits (metrics, the annotator and the Node finals listen).
 */
import type { Meter } from './meter.ts';
import type { PinDir } from './pins.ts';
import type { Unit } from './unit.ts';

/** What the tracker needs of the Service flows (agent/services/flows.ts ServiceFlows). */
export interface TrackerFlows {
  /** The drain number whose bytes the units' counts hold (written with them in the state file). */
  drained(): bigint;
  /** Resolves after a whole drain that started after the call. */
  drain(): Promise<void>;
}

/** What the tracker uses of the Meter: its links and reads of the kernel (test/unit/tracker.test.ts gives it a fake). */
export type TrackerMeter = Pick<Meter, 'attach' | 'linkState' | 'relink' | 'release' | 'read' | 'readMany'> & {
  readonly pins: Pick<PinDir, 'listLinks'>;
};

/** What failed, as podmeter_errors_total{op} counts it. */
export type TrackerErrorOp = 'attach' | 'read' | 'detach' | 'state';

export interface TrackerEvents {
  /** `latencySeconds` from the cgroup event to attached; undefined when links were adopted. */
  attached: [unit: Unit, latencySeconds: number | undefined];
  /** The unit's cgroup has no process left (cgroup.events populated 0); counters were just read. */
  emptied: [unit: Unit];
  terminated: [unit: Unit];
  error: [op: TrackerErrorOp, err: unknown];
}
