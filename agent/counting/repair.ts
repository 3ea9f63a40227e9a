/**
 * Puts back pins removed under the running agent (rm -r of --bpffs, the
 * bpffs unmounted), from the fds it holds: logged once when some are
 * missing, once when all are back, or once that they cannot be made (e.g.
 * --bpffs is no longer on a bpffs), retried at every check. Meanwhile the
 * held fds keep every link counting; if the agent stopped then, its links
 * would detach.
 *
 * Cheap when nothing changed: removing or adding a pin changes its
 * directory's modification time, so while both directories have the
 * identity and times of the last complete check, the pins are not listed
 * (except every FULL_CHECK_EVERY checks, whatever the times say).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import type { Logger } from '../../common/log.ts';
import { DIRECTIONS } from '../kernel/bpf.ts';
import type { Links } from './links.ts';
import { MAP_KEYS, type PinDir, type PodmeterObjects } from './pins.ts';

/** The pins are listed at least this often, even when their directories look unchanged. */
const FULL_CHECK_EVERY = 30;

export class PinRepair {
  readonly #pins: PinDir;
  readonly #objects: PodmeterObjects;
  readonly #links: Links;
  readonly #log: Logger;
  /** Pins were found missing and could not all be put back yet (logged once until they are). */
  #missing = false;
  /** #stamp() after the last check that found every pin in place. */
  #checkedStamp: string | undefined;
  #skipped = 0;

  constructor(pins: PinDir, objects: PodmeterObjects, links: Links, log: Logger) {
    this.#pins = pins;
    this.#objects = objects;
    this.#links = links;
    this.#log = log;
  }

  check(): void {
    const stamp = this.#stamp();
    if (stamp !== undefined && stamp === this.#checkedStamp && ++this.#skipped < FULL_CHECK_EVERY) return;
    if (this.#repin()) {
      this.#checkedStamp = this.#stamp();
      this.#skipped = 0;
    }
  }

  /** Device, inode and modification time of the pin directories, or undefined when one is missing. */
  #stamp(): string | undefined {
    try {
      return [this.#pins.root, this.#pins.linksDir]
        .map((dir) => {
          const st = statSync(dir, { bigint: true });
          return `${st.dev}:${st.ino}:${st.mtimeNs}`;
        })
        .join(' ');
    } catch {
      return undefined;
    }
  }

  /** Every pin there should be, with the object that makes it. */
  #expected(): [string, { pin(path: string): void }][] {
    const { programs, maps } = this.#objects;
    const objects: [string, { pin(path: string): void }][] = [
      ...DIRECTIONS.map((d): [string, { pin(path: string): void }] => [this.#pins.program(d), programs[d]]),
      ...MAP_KEYS.map((key): [string, { pin(path: string): void }] => [this.#pins.map(key), maps[key]]),
    ];
    let names: Set<string>;
    try {
      names = new Set(readdirSync(this.#pins.linksDir));
    } catch {
      names = new Set();
    }
    for (const [cgroupId, links] of this.#links.held()) {
      DIRECTIONS.forEach((direction, i) => {
        if (!names.has(`${cgroupId}_${direction}`)) objects.push([this.#pins.link(cgroupId, direction), links[i]!]);
      });
    }
    return objects;
  }

  /** Pins what is missing; true when every pin is in place afterwards. */
  #repin(): boolean {
    const missing = this.#expected().filter(([path]) => !existsSync(path));
    if (missing.length === 0) return true;
    const root = this.#pins.root;
    const wasMissing = this.#missing;
    if (!wasMissing) {
      this.#missing = true;
      this.#log.warn(
        { bpffs: root, missing: missing.length },
        'pins removed under the running agent; its fds keep every link counting: pinning them again',
      );
    }
    try {
      this.#pins.ensure();
      for (const [path, object] of missing) object.pin(path);
    } catch (err) {
      if (!wasMissing) {
        this.#log.error(
          { err, bpffs: root },
          'cannot pin again (retrying at every interval): counting goes on while this agent runs, but if it stops before the pins are back its links detach and nothing is counted until the next start',
        );
      }
      return false;
    }
    this.#missing = false;
    this.#log.info({ bpffs: root, pinned: missing.length }, 'pins made again');
    return true;
  }
}
