/**
 * Units whose attach failed (ENOMEM for the per-CPU storage, EPERM, a
 * cgroup at its program limit, ...), by relPath: the tracker attaches them
 * again at every interval until it works or the cgroup goes. Each failure is
 * counted by the caller; the log has one line per unit when it first fails
 * and one when it is attached at last.
 */
import type { Logger } from '../../common/log.ts';
import type { UnitIdentity } from '../cgroups/units.ts';
import { errorReason } from '../kernel/errors.ts';

/** What the tracker's API and metrics say of a unit waiting for its attach. */
export interface UnattachedUnit {
  relPath: string;
  reason: string;
  since: number;
  attempts: number;
}

export interface PendingAttach {
  identity: UnitIdentity;
  seenAt: number;
  /** When the first attempt failed (ms since the epoch). */
  since: number;
  /** The last failure's error code. */
  reason: string;
  attempts: number;
}

export class AttachRetries {
  readonly #pending = new Map<string, PendingAttach>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  has(relPath: string): boolean {
    return this.#pending.has(relPath);
  }

  get(relPath: string): PendingAttach | undefined {
    return this.#pending.get(relPath);
  }

  /** The cgroup went: nothing to retry. */
  delete(relPath: string): void {
    this.#pending.delete(relPath);
  }

  /** A snapshot, to retry each (an attempt may change the set). */
  all(): PendingAttach[] {
    return [...this.#pending.values()];
  }

  /** Each unit waiting: relPath, the error's code, since when (ms since the epoch) and how many attempts. */
  summary(): UnattachedUnit[] {
    return this.all().map(({ identity, reason, since, attempts }) => ({
      relPath: identity.relPath,
      reason,
      since,
      attempts,
    }));
  }

  /** An attempt failed: the unit waits for the next (unless its cgroup went meanwhile: false). */
  failed(identity: UnitIdentity, seenAt: number, err: unknown): boolean {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      this.#pending.delete(identity.relPath);
      return false; // raced with removal
    }
    const reason = errorReason(err);
    const pending = this.#pending.get(identity.relPath);
    if (pending === undefined) {
      this.#pending.set(identity.relPath, { identity, seenAt, since: Date.now(), reason, attempts: 1 });
      this.#log.error(
        { err, cgroup: identity.relPath, uid: identity.uid, reason },
        'attach failed: this cgroup is not counted until an attach works; retrying at every interval',
      );
    } else {
      pending.attempts++;
      pending.reason = reason;
    }
    return true;
  }

  /** An attempt worked: logged when earlier ones had failed. */
  attached(identity: UnitIdentity): void {
    const pending = this.#pending.get(identity.relPath);
    this.#pending.delete(identity.relPath);
    if (pending === undefined) return;
    this.#log.info(
      {
        cgroup: identity.relPath,
        uid: identity.uid,
        attempts: pending.attempts + 1,
        uncountedMs: Date.now() - pending.since,
      },
      'attached after failed attempts; counting from now',
    );
  }
}
