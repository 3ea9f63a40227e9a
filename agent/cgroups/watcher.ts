/**
 * Watches the cgroup tree and reports units appearing, units going away, and
 * changes of a unit's `cgroup.events` (populated 1 -> 0 when its last process
 * exits).
 *
 * Every directory that can hold units (the root; in pods mode the kubepods
 * and QoS slices) gets one direct inotify watch: a unit directory made or
 * removed there is reported the moment its event arrives, and a new
 * directory that can hold units (a QoS slice) is watched and scanned.
 * chokidar watches the tree above the kubepods trees (kind-style nested
 * roots, a kubepods tree made after the agent started). It never sees the
 * kubepods trees themselves: its per-event reconcile of a 500-pod QoS slice
 * doubled the attach latency. Unit directories are given to neither (each
 * would track ~40 interface files); each unit gets one inotify watch on its
 * cgroup.events instead, set up after a burst of new units is attached.
 * A scan after start, after every new directory above the units, and on each
 * resync() catches what an event could miss (a pod made in a QoS slice before
 * the slice's watch was set up).
 */
import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, statSync, watch, type FSWatcher as FileWatcher } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { classify, inKubepodsTree, shouldDescend, type DiscoverMode, type UnitIdentity } from './units.ts';

export interface WatcherEvents {
  /** A unit directory exists (scan or new); `seenAt` is performance.now() when it was seen. */
  unit: [unit: UnitIdentity, seenAt: number];
  /** A unit directory was removed. */
  gone: [relPath: string];
  /** A unit's cgroup.events changed; `populated` is its new value. */
  populated: [relPath: string, populated: boolean];
  /** The initial scan is complete. */
  ready: [];
  error: [err: Error];
}

export class CgroupWatcher extends EventEmitter<WatcherEvents> {
  readonly root: string;
  readonly mode: DiscoverMode;
  #chokidar: FSWatcher | undefined;
  /** Directories that hold units (root, kubepods and QoS slices): one inotify watch each, by path. */
  readonly #parents = new Map<string, FileWatcher>();
  /** One cgroup.events watch per known unit, by relPath. */
  readonly #units = new Map<string, FileWatcher | undefined>();
  /** Units whose cgroup.events watch is still to be set up, since when, and when the last was found. */
  #eventsPending: string[] = [];
  #eventsSince: number | undefined;
  #eventsLast = 0;
  #eventsTimer: NodeJS.Timeout | undefined;

  constructor(root: string, mode: DiscoverMode) {
    super();
    this.root = root;
    this.mode = mode;
  }

  start(): void {
    // chokidar asks `ignored` about every entry of every event: slicing the
    // root off is a tenth of what path.relative (two resolves) costs.
    const prefix = this.root.endsWith(sep) ? this.root : this.root + sep;
    const rel = (path: string) =>
      (path.startsWith(prefix) ? path.slice(prefix.length) : relative(this.root, path)).split(sep).join('/');
    this.#chokidar = chokidarWatch(this.root, {
      persistent: true,
      ignoreInitial: true, // scan() reports what exists
      followSymlinks: false,
      atomic: false,
      ignorePermissionErrors: true,
      // Not the units, and not the kubepods trees, where pods come and go:
      // the direct watches see those (#watchParent).
      ignored: (path, stats) => {
        if (stats !== undefined && !stats.isDirectory()) return true;
        const r = rel(path);
        return r !== '' && (inKubepodsTree(r) || classify(this.mode, r) !== undefined || !shouldDescend(this.mode, r));
      },
    });
    this.#chokidar
      // A new directory above the units (a QoS slice): watch it; units may already be in it.
      .on('addDir', (path) => {
        this.#enter(path, rel(path));
      })
      .on('unlinkDir', (path) => {
        this.#parents.get(path)?.close();
        this.#parents.delete(path);
      })
      .on('ready', () => {
        this.#enter(this.root, '');
        this.emit('ready');
      })
      .on('error', (err) => this.emit('error', err instanceof Error ? err : new Error(String(err))));
  }

  /** Level-triggered check: reports units not yet seen and units whose directory is gone. */
  resync(): void {
    const seen = new Set<string>();
    this.#scan(this.root, '', seen);
    // Only units the scan did not list cost a stat (a directory it could not read).
    for (const r of this.#units.keys()) if (!seen.has(r) && !isDirectory(join(this.root, r))) this.#lost(r);
  }

  async close(): Promise<void> {
    clearTimeout(this.#eventsTimer);
    for (const w of this.#parents.values()) w.close();
    this.#parents.clear();
    for (const w of this.#units.values()) w?.close();
    this.#units.clear();
    await this.#chokidar?.close();
    this.#chokidar = undefined;
  }

  /**
   * The fast path: inotify's event for an entry made or removed in a
   * directory above the units, handled directly. (chokidar's own handling of
   * the same event reconciles the whole directory, which at 500 pods in one
   * QoS slice doubled the attach latency.)
   */
  #watchParent(dir: string): void {
    if (this.#parents.has(dir)) return;
    const relDir = relative(this.root, dir).split(sep).join('/');
    try {
      const w = watch(dir, { persistent: false }, (event, name) => {
        if (event !== 'rename' || name === null) return;
        const r = relDir === '' ? name : `${relDir}/${name}`;
        const unit = classify(this.mode, r);
        if (unit === undefined) {
          // A directory that may hold units (a QoS slice): watch and scan it; or its removal.
          const path = join(dir, name);
          const known = this.#parents.get(path);
          if (known !== undefined) {
            if (!isDirectory(path)) {
              known.close();
              this.#parents.delete(path);
            }
          } else if (shouldDescend(this.mode, r) && isDirectory(path)) {
            this.#enter(path, r);
          }
          return;
        }
        // A rename of an unknown unit is its creation (if it is already gone
        // again, attaching fails harmlessly); of a known one, maybe its removal.
        if (!this.#units.has(r)) this.#found(unit, performance.now());
        else if (!isDirectory(join(dir, name))) this.#lost(r);
      });
      w.on('error', () => {
        w.close();
        this.#parents.delete(dir);
      });
      this.#parents.set(dir, w);
    } catch {
      // gone already: chokidar reports its removal
    }
  }

  #found(unit: UnitIdentity, seenAt: number): void {
    if (this.#units.has(unit.relPath)) return;
    this.#units.set(unit.relPath, undefined);
    this.emit('unit', unit, seenAt);
    // Attaching comes first: the cgroup.events watches of a burst of new
    // units are set up once the burst is over (20 ms without a new unit, or
    // 200 ms after its start), so they never delay the next unit's attach.
    // One timer per burst, not one per unit: clearing and setting a timer
    // for each was a twentieth of a 500-pod burst's attach time.
    this.#eventsPending.push(unit.relPath);
    this.#eventsLast = performance.now();
    this.#eventsSince ??= this.#eventsLast;
    this.#eventsTimer ??= setTimeout(() => this.#watchPendingEvents(), 20);
  }

  #watchPendingEvents(): void {
    this.#eventsTimer = undefined;
    const now = performance.now();
    if (this.#eventsSince !== undefined && now - this.#eventsSince < 200 && now - this.#eventsLast < 20) {
      this.#eventsTimer = setTimeout(() => this.#watchPendingEvents(), 20 - (now - this.#eventsLast));
      return; // the burst goes on
    }
    const pending = this.#eventsPending;
    this.#eventsPending = [];
    this.#eventsSince = undefined;
    for (const relPath of pending) this.#watchEvents(relPath);
  }

  #watchEvents(relPath: string): void {
    if (!this.#units.has(relPath) || this.#units.get(relPath) !== undefined) return;
    const events = join(this.root, relPath, 'cgroup.events');
    // Only changes are reported: a new pod cgroup starts empty, and that is
    // no reason to take its final counts. (One that emptied before this
    // watch existed gets them when it is removed.)
    let last = readPopulated(events);
    const report = () => {
      const populated = readPopulated(events);
      if (populated === undefined || populated === last) return;
      last = populated;
      this.emit('populated', relPath, populated);
    };
    try {
      const w = watch(events, { persistent: false }, report);
      w.on('error', () => this.#lost(relPath));
      this.#units.set(relPath, w);
    } catch {
      this.#lost(relPath); // removed already
      return;
    }
  }

  #lost(relPath: string): void {
    if (!this.#units.has(relPath)) return;
    this.#units.get(relPath)?.close();
    this.#units.delete(relPath);
    this.emit('gone', relPath);
  }

  /** A directory that can hold units: watch it, and report what is in it already. */
  #enter(dir: string, relPath: string, seen?: Set<string>): void {
    this.#watchParent(dir);
    this.#scan(dir, relPath, seen);
  }

  /** Reports units below `dir` not yet seen; adds every unit listed to `seen`. */
  #scan(dir: string, relPath: string, seen?: Set<string>): void {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed meanwhile, or unreadable: events and resync cover it
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const r = relPath === '' ? e.name : `${relPath}/${e.name}`;
      if (this.#units.has(r)) {
        // Classified when found: every resync lists the 500 pods of a busy
        // node, and parsing each path again was most of what a resync cost.
        seen?.add(r);
        continue;
      }
      const unit = classify(this.mode, r);
      if (unit !== undefined) {
        seen?.add(r);
        this.#found(unit, performance.now());
      } else if (shouldDescend(this.mode, r)) {
        this.#enter(join(dir, e.name), r, seen);
      }
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** `populated` from a cgroup.events file; undefined when it cannot be read (cgroup gone). */
export function readPopulated(eventsPath: string): boolean | undefined {
  try {
    const m = /^populated (\d)$/m.exec(readFileSync(eventsPath, 'latin1'));
    return m ? m[1] === '1' : undefined;
  } catch {
    return undefined;
  }
}
