/**
 * Filesystems a fault test mounts for itself (never the host's own mounts).
 *
 *   makeTmpfs(t, sizeKiB): TestMount
 *     mount -t tmpfs (size `sizeKiB`) at <tmpdir>/podmeter-test-<rand>; a
 *     small state dir the test can fill (ENOSPC) or remount read-only.
 *   makeBpffsMount(t): TestMount
 *     mount -t bpf at <tmpdir>/podmeter-test-<rand>: a bpffs of the test's
 *     own that it may unmount under a running agent.
 *
 *   TestMount: { path, fill(), unfill(), readOnly(ro), unmount(), remove() }
 *     fill()      writes a filler file until the filesystem answers ENOSPC
 *     unfill()    removes it
 *     readOnly()  mount -o remount,ro / rw
 *     unmount()   umount (lazy: a process may still hold a file in it)
 *     remove()    unmount when still mounted, then rmdir (after the test and on SIGINT/SIGTERM)
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterOrSignal, TEST_PREFIX, type AfterHook } from './cleanup.ts';

export interface TestMount {
  path: string;
  fill(): void;
  unfill(): void;
  readOnly(ro: boolean): void;
  unmount(): void;
  remove(): Promise<void>;
}

function mounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === path);
}

function makeMount(t: AfterHook | undefined, type: string, options: string[]): TestMount {
  const path = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  execFileSync('mount', [
    '-t',
    type,
    ...(options.length > 0 ? ['-o', options.join(',')] : []),
    `${TEST_PREFIX}${type}`,
    path,
  ]);
  const filler = join(path, 'filler');
  const unmount = () => {
    if (mounted(path)) execFileSync('umount', ['-l', path]);
  };
  const remove = afterOrSignal(t, () => {
    unmount();
    rmdirSync(path);
  });
  return {
    path,
    fill() {
      const fd = openSync(filler, 'w');
      const chunk = Buffer.alloc(4096, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        closeSync(fd);
      }
    },
    unfill() {
      rmSync(filler, { force: true });
    },
    readOnly(ro: boolean) {
      execFileSync('mount', ['-o', `remount,${ro ? 'ro' : 'rw'}`, path]);
    },
    unmount,
    remove,
  };
}

export function makeTmpfs(t: AfterHook | undefined, sizeKiB: number): TestMount {
  return makeMount(t, 'tmpfs', [`size=${sizeKiB}k`, 'mode=0700']);
}

export function makeBpffsMount(t: AfterHook | undefined): TestMount {
  return makeMount(t, 'bpf', []);
}
