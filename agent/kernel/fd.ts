/**
 * What every BPF object of the facade is: an fd it owns and closes (OwnedFd,
 * which the conntrack socket is too), and can pin; the checks that say why a path fails (not a cgroup2 directory, not on
 * a bpffs) where the kernel's own answer does not; and closing on a failure
 * part-way, so nothing is left open.
 */
import { closeSync, statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from './errors.ts';
import { native } from './native.ts';

const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

function fsType(path: string): number | undefined {
  try {
    return statfsSync(path).type;
  } catch {
    return undefined;
  }
}

export function assertCgroup2Dir(path: string, what: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? 'ENOENT';
    throw new BpfError({ code, message: `${what} '${path}': no such cgroup directory (${code})`, path }, { cause });
  }
  if (!isDir || fsType(path) !== CGROUP2_SUPER_MAGIC) {
    throw new BpfError({
      code: ErrorCodes.notCgroup2,
      message: `${what} '${path}': not a cgroup2 directory (cgroup_skb programs attach to cgroup v2 only)`,
      path,
    });
  }
}

/** Pins must be created inside a mounted bpffs; the kernel's own answer (EPERM) says nothing of why. */
export function assertBpffsDir(dir: string, what: string): void {
  const type = fsType(dir);
  if (type === undefined) {
    throw new BpfError({
      code: 'ENOENT',
      message: `${what} '${dir}': directory does not exist (it must be on a bpffs, e.g. under /sys/fs/bpf)`,
      path: dir,
    });
  }
  if (type !== BPF_FS_MAGIC) {
    throw new BpfError({
      code: ErrorCodes.notBpffs,
      message: `${what} '${dir}': not on a bpffs (mount one with: mount -t bpf bpffs /sys/fs/bpf)`,
      path: dir,
    });
  }
}

/** An fd this object owns: `fd` throws once closed, close() closes it once. */
export abstract class OwnedFd {
  #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
  }

  get fd(): number {
    if (this.#fd < 0) throw new BpfError({ code: 'EBADF', message: `${this.constructor.name} is closed` });
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

export abstract class FdObject extends OwnedFd {
  /** Pins the object at `path` (its directory must be on a bpffs). */
  pin(path: string): void {
    try {
      native.objPin(this.fd, path);
    } catch (err) {
      assertBpffsDir(dirname(path), 'pin'); // says why when the kernel's answer (EPERM, ENOENT) does not
      throw err;
    }
  }
}

/**
 * Runs `make`, handing it `keep` to record each fd object it opens; when
 * `make` throws, everything kept is closed before the error goes on: a step
 * that fails part-way leaves nothing open.
 */
export function closingOnThrow<T>(make: (keep: <O extends { close(): void }>(object: O) => O) => T): T {
  const kept: { close(): void }[] = [];
  try {
    return make((object) => (kept.push(object), object));
  } catch (err) {
    for (const object of kept) object.close();
    throw err;
  }
}

/** `object` once `check` passes on it; closed (nothing left open) when it throws. */
export function closedUnless<T extends { close(): void }>(object: T, check: (object: T) => void): T {
  return closingOnThrow((keep) => {
    check(keep(object));
    return object;
  });
}
