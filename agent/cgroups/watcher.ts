/**
 * Watches the cgroup tree and reports units appearing, units going away, and
 * changes of a unit's `cgroup.events` (populated 1 -> 0 when its last process
 * exits).
 *
 * chokidar (inotify) watches the directories above the units: the root, and
 * in pods mode the kubepods and QoS slices. Its raw inotify events report a
 * unit directory the moment it is made or removed. Unit directories
 * themselves are not given to chokidar, which would read and track the ~40
 * interface files of every pod (measured: 3x the attach latency at 500
 * pods); each unit gets one inotify watch on its cgroup.events instead.
 * A scan after start, after every new directory above the units, and on each
 * resync() catches what an event could miss (a pod made in a QoS slice before
 * the slice's watch was set up).
 */
import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, statSync, watch, type FSWatcher as FileWatcher } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { classify, shouldDescend, type DiscoverMode, type UnitIdentity } from './units.ts';

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

  constructor(root: string, mode: DiscoverMode) {
    super();
    this.root = root;
    this.mode = mode;
  }

  start(): void {
    const rel = (path: string) => relative(this.root, path).split(sep).join('/');
    this.#chokidar = chokidarWatch(this.root, {
      persistent: true,
      ignoreInitial: true, // scan() reports what exists
      followSymlinks: false,
      atomic: false,
      ignorePermissionErrors: true,
      ignored: (path, stats) => {
        if (stats !== undefined && !stats.isDirectory()) return true;
        const r = rel(path);
        return classify(this.mode, r) !== undefined || !shouldDescend(this.mode, r);
      },
    });
    this.#chokidar
      // A new directory above the units (a QoS slice): watch it; units may already be in it.
      .on('addDir', (path) => {
        this.#watchParent(path);
        this.#scan(path, rel(path));
      })
      .on('unlinkDir', (path) => {
        this.#parents.get(path)?.close();
        this.#parents.delete(path);
      })
      .on('ready', () => {
        this.#watchParent(this.root);
        this.#scan(this.root, '');
        this.emit('ready');
      })
      .on('error', (err) => this.emit('error', err instanceof Error ? err : new Error(String(err))));
  }

  /** Level-triggered check: reports units not yet seen and units whose directory is gone. */
  resync(): void {
    for (const r of this.#units.keys()) if (!isDirectory(join(this.root, r))) this.#lost(r);
    this.#scan(this.root, '');
  }

  async close(): Promise<void> {
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
        if (unit === undefined) return;
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
    // Attaching comes first; the cgroup.events watch can wait for the next turn.
    setImmediate(() => this.#watchEvents(unit.relPath));
  }

  #watchEvents(relPath: string): void {
    if (!this.#units.has(relPath) || this.#units.get(relPath) !== undefined) return;
    const events = join(this.root, relPath, 'cgroup.events');
    const report = () => {
      const populated = readPopulated(events);
      if (populated !== undefined) this.emit('populated', relPath, populated);
    };
    try {
      const w = watch(events, { persistent: false }, report);
      w.on('error', () => this.#lost(relPath));
      this.#units.set(relPath, w);
    } catch {
      this.#lost(relPath); // removed already
      return;
    }
    if (readPopulated(events) === false) report(); // emptied before the watch existed
  }

  #lost(relPath: string): void {
    if (!this.#units.has(relPath)) return;
    this.#units.get(relPath)?.close();
    this.#units.delete(relPath);
    this.emit('gone', relPath);
  }

  #scan(dir: string, relPath: string): void {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed meanwhile, or unreadable: events and resync cover it
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const r = relPath === '' ? e.name : `${relPath}/${e.name}`;
      const unit = classify(this.mode, r);
      if (unit !== undefined) this.#found(unit, performance.now());
      else if (shouldDescend(this.mode, r)) {
        this.#watchParent(join(dir, e.name));
        this.#scan(join(dir, e.name), r);
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
