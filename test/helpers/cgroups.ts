/**
 * Test cgroups on the host's cgroup v2 hierarchy.
 *
 *   cgroup2Root(): string
 *     Where cgroup2 is mounted, from /proc/self/mountinfo (fstype cgroup2):
 *     /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
 *
 *   makeTestCgroup(t?, relPath?): TestCgroup
 *     mkdir -p <root>/podmeter-test-<rand>[/relPath]. `relPath` may be nested,
 *     e.g. 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<64hex>.scope'.
 *     With `t` (a node:test context) it is removed after the test; in any case
 *     on SIGINT/SIGTERM.
 *
 *   TestCgroup: { path, relPath, id, top, child(relPath), remove() }
 *     path     absolute path of the deepest cgroup created
 *     relPath  path relative to cgroup2Root(), e.g. 'podmeter-test-x/kubepods.slice/...'
 *     id       cgroup id (inode number), the key podmeter's storage uses
 *     top      <root>/podmeter-test-<rand>: what remove() removes, with all below it
 *     child()  mkdir -p another cgroup under `top` (e.g. a second pod in the same tree)
 *     remove() kills the processes the helpers spawned into the tree (trackProcess),
 *              then any process still in it (all are descendants of those: the tree is
 *              the test's own), then rmdir's deepest-first, retrying EBUSY briefly.
 *
 *   trackProcess(cgroupPath, child)
 *     Tells remove() about a process spawned into a test cgroup (traffic.ts does it).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterOrSignal, randomSuffix, sleep, sweepStale, sweepOnce, TEST_PREFIX, type AfterHook } from './cleanup.ts';

export interface CgroupDir {
  /** Absolute path of the cgroup directory. */
  path: string;
  /** Relative to cgroup2Root(), without a leading slash. */
  relPath: string;
  /** The cgroup id: inode number of the directory. */
  id: bigint;
}

export interface TestCgroup extends CgroupDir {
  /** <root>/podmeter-test-<rand>: the tree remove() removes. */
  top: string;
  /** mkdir -p `relPath` under `top`; removed with the tree. */
  child(relPath: string): CgroupDir;
  /** Idempotent; safe to call from t.after and try/finally alike. */
  remove(): Promise<void>;
}

function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

let rootCache: string | undefined;

/** The cgroup2 mount point, detected from /proc/self/mountinfo. */
export function cgroup2Root(): string {
  if (rootCache !== undefined) return rootCache;
  const mounts: { root: string; mountPoint: string }[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (right[0] !== 'cgroup2' || left[3] === undefined || left[4] === undefined) continue;
    mounts.push({ root: unescapeMountinfo(left[3]), mountPoint: unescapeMountinfo(left[4]) });
  }
  // Prefer a mount of the hierarchy's root; then the conventional places.
  const rank = (m: { root: string; mountPoint: string }): number =>
    (m.root === '/' ? 0 : 10) +
    (m.mountPoint === '/sys/fs/cgroup' ? 0 : m.mountPoint === '/sys/fs/cgroup/unified' ? 1 : 2);
  const best = mounts.sort((a, b) => rank(a) - rank(b))[0];
  if (best === undefined) {
    throw new Error(
      'no cgroup2 filesystem in /proc/self/mountinfo: these tests need cgroup v2 ' +
        '(pure v2 at /sys/fs/cgroup, or hybrid at /sys/fs/cgroup/unified)',
    );
  }
  rootCache = best.mountPoint;
  return rootCache;
}

function checkRelPath(relPath: string): string {
  const parts = relPath.split('/').filter((p) => p !== '');
  if (relPath.startsWith('/') || parts.some((p) => p === '.' || p === '..')) {
    throw new Error(`test cgroup path '${relPath}' must be relative and stay inside the test cgroup`);
  }
  return parts.join('/');
}

function describe(path: string): CgroupDir {
  return { path, relPath: relative(cgroup2Root(), path), id: statSync(path, { bigint: true }).ino };
}

// Processes spawned into test cgroups, so remove() can end them first.
const tracked = new Map<ChildProcess, string>();

/** Registers a process spawned into `cgroupPath`; remove() of its test tree kills it. */
export function trackProcess(cgroupPath: string, child: ChildProcess): void {
  tracked.set(child, cgroupPath);
  child.once('exit', () => tracked.delete(child));
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (!isRunning(child)) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Directories of the tree, deepest first. */
function postOrder(dir: string): string[] {
  const out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return out;
  }
  for (const name of entries) out.push(...postOrder(join(dir, name)));
  out.push(dir);
  return out;
}

function populated(top: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(top, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

async function removeTree(top: string): Promise<void> {
  // 1. The processes the helpers spawned into this tree.
  const mine = [...tracked].filter(([, cg]) => cg === top || cg.startsWith(`${top}/`)).map(([child]) => child);
  for (const child of mine) if (isRunning(child)) child.kill('SIGKILL');
  await Promise.all(mine.map((child) => waitExit(child, 3000)));

  // 2. Whatever is still inside (their children): the tree is the test's own.
  if (existsSync(top) && populated(top)) {
    let killFile = true;
    try {
      writeFileSync(join(top, 'cgroup.kill'), '1');
    } catch {
      killFile = false; // cgroup.kill is 5.14+
    }
    for (let i = 0; i < 100 && populated(top); i++) {
      // Without cgroup.kill, each process listed in the tree (again: one may fork meanwhile).
      if (!killFile) for (const dir of postOrder(top)) killProcs(dir);
      await sleep(20);
    }
  }

  // 3. rmdir deepest first; EBUSY while exiting tasks are still being reaped.
  for (const dir of postOrder(top)) {
    for (let attempt = 0; ; attempt++) {
      try {
        rmdirSync(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || attempt >= 100) {
          throw new Error(`could not remove test cgroup ${dir}: ${(err as Error).message}`, { cause: err });
        }
        await sleep(50);
      }
    }
  }
}

/**
 * Removes test cgroups at the cgroup2 root whose test process is gone
 * (staleTestName: killed before its cleanups ran). One with a process still
 * in it is left as it is. Returns the cgroups removed.
 */
export function sweepStaleCgroups(): string[] {
  const root = cgroup2Root();
  return sweepStale(readdirSync(root), (name) => {
    for (const dir of postOrder(join(root, name))) rmdirSync(dir); // EBUSY: a process lives in it still
  }).map((name) => join(root, name));
}

/** Creates <cgroup2 root>/podmeter-test-<rand>[/relPath] (mkdir -p). */
export function makeTestCgroup(t?: AfterHook, relPath = ''): TestCgroup {
  sweepOnce('cgroup', sweepStaleCgroups);
  const top = join(cgroup2Root(), `${TEST_PREFIX}${randomSuffix()}`);
  mkdirSync(top);
  const remove = afterOrSignal(t, () => removeTree(top));
  try {
    const rel = checkRelPath(relPath);
    const path = rel === '' ? top : join(top, rel);
    mkdirSync(path, { recursive: true });
    const child = (childRel: string): CgroupDir => {
      const p = join(top, checkRelPath(childRel));
      mkdirSync(p, { recursive: true });
      return describe(p);
    };
    return { ...describe(path), top, child, remove };
  } catch (err) {
    void remove();
    throw err;
  }
}

/** The pids in a cgroup (not its descendants). */
export function cgroupProcs(cgroupPath: string): number[] {
  return readFileSync(join(cgroupPath, 'cgroup.procs'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

/** SIGKILL to each process in one cgroup of a test tree (cgroup.kill's work, before 5.14). */
function killProcs(cgroupPath: string): void {
  try {
    for (const pid of cgroupProcs(cgroupPath)) process.kill(pid, 'SIGKILL');
  } catch {
    // the cgroup or a process went meanwhile: the caller's loop looks again
  }
}
