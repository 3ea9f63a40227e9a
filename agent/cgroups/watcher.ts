/**
 * Watches the cgroup tree (chokidar over inotify, after an initial scan) and
 * reports units appearing, units going away, and changes of a unit's
 * `cgroup.events` (populated 1 -> 0 when its last process exits).
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { relative, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { classify, shouldDescend, type DiscoverMode, type UnitIdentity } from './units.ts';

export interface WatcherEvents {
  /** A unit directory exists (initial scan or new); `seenAt` is performance.now() when the event arrived. */
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

  constructor(root: string, mode: DiscoverMode) {
    super();
    this.root = root;
    this.mode = mode;
  }

  start(): void {
    const rel = (path: string) => relative(this.root, path).split(sep).join('/');
    this.#chokidar = watch(this.root, {
      persistent: true,
      ignoreInitial: false,
      followSymlinks: false,
      atomic: false, // a removed cgroup must be reported at once, not held back to detect "atomic writes"
      depth: this.mode === 'children' ? 1 : 12,
      ignorePermissionErrors: true,
      ignored: (path, stats) => {
        const r = rel(path);
        if (stats?.isFile()) return true; // cgroup.events changes arrive as raw events of the unit's dir
        if (stats?.isDirectory()) return !shouldDescend(this.mode, r) && classify(this.mode, r) === undefined;
        return false; // unknown yet: chokidar asks again with stats
      },
    });
    this.#chokidar
      .on('addDir', (path) => {
        const unit = classify(this.mode, rel(path));
        if (unit) this.emit('unit', unit, performance.now());
      })
      .on('unlinkDir', (path) => {
        const r = rel(path);
        if (classify(this.mode, r)) this.emit('gone', r);
      })
      // kernfs does not touch cgroup.events' mtime, so chokidar's 'change'
      // (which compares stats) never fires for it; the raw inotify event does.
      .on('raw', (event, name, details) => {
        if (event !== 'change' || name !== 'cgroup.events') return;
        const dir = (details as { watchedPath?: string } | undefined)?.watchedPath;
        if (dir === undefined) return;
        const r = rel(dir);
        if (!classify(this.mode, r)) return;
        const populated = readPopulated(`${dir}/cgroup.events`);
        if (populated !== undefined) this.emit('populated', r, populated);
      })
      .on('ready', () => this.emit('ready'))
      .on('error', (err) => this.emit('error', err instanceof Error ? err : new Error(String(err))));
  }

  async close(): Promise<void> {
    await this.#chokidar?.close();
    this.#chokidar = undefined;
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
