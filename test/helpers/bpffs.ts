/**
 * Test directories on bpffs, for pins.
 *
 *   bpffsRoot(): string
 *     The bpffs mount, from /proc/self/mountinfo (fstype bpf; /sys/fs/bpf preferred).
 *
 *   makeBpffsDir(t?): TestBpffsDir
 *     mkdir <bpffs>/podmeter-test-<rand>. With `t` it is removed after the
 *     test; in any case on SIGINT/SIGTERM.
 *
 *   TestBpffsDir: { path, remove() }
 *     remove() unlinks every pin below `path` (depth first) and rmdir's it. An
 *     unpinned link whose last fd is closed detaches: detach links explicitly
 *     first (Link.fromPin(p).detach()) when some process may still hold one.
 */
import { mkdirSync, readdirSync, readFileSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterOrSignal, randomSuffix, sweepOnce, sweepStale, TEST_PREFIX, type AfterHook } from './cleanup.ts';

export interface TestBpffsDir {
  path: string;
  remove(): Promise<void>;
}

let rootCache: string | undefined;

export function bpffsRoot(): string {
  if (rootCache !== undefined) return rootCache;
  const points: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0 || line.slice(sep + 3).split(' ')[0] !== 'bpf') continue;
    const mountPoint = line.slice(0, sep).split(' ')[4];
    if (mountPoint !== undefined)
      points.push(mountPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  const best = points.includes('/sys/fs/bpf') ? '/sys/fs/bpf' : points[0];
  if (best === undefined) throw new Error('no bpffs mounted (mount -t bpf bpffs /sys/fs/bpf)');
  rootCache = best;
  return best;
}

function removeTree(dir: string): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) removeTree(p);
    else unlinkSync(p);
  }
  rmdirSync(dir);
}

/**
 * Removes test directories on bpffs whose test process is gone
 * (staleTestName), with their pins: the links they pinned belong to no
 * running test. Returns the directories removed.
 */
export function sweepStaleBpffsDirs(): string[] {
  return sweepStale(readdirSync(bpffsRoot()), (name) => removeTree(join(bpffsRoot(), name))).map((name) =>
    join(bpffsRoot(), name),
  );
}

export function makeBpffsDir(t?: AfterHook): TestBpffsDir {
  sweepOnce('bpffs dir', sweepStaleBpffsDirs);
  const path = join(bpffsRoot(), `${TEST_PREFIX}${randomSuffix()}`);
  mkdirSync(path);
  const remove = afterOrSignal(t, () => removeTree(path));
  return { path, remove };
}
