/**
 * Cgroup paths as processes see them (/proc/<pid>/cgroup) turned into paths
 * relative to the agent's cgroup root, through the cgroup2 mount (mountinfo).
 *
 * Inside a container with a private cgroup namespace (the containerd and
 * CRI-O default) both are relative to the container's own cgroup: a process
 * of another pod reads `/../../kubepods-besteffort.slice/...`, and the host's
 * cgroup tree the chart mounts shows in mountinfo with root `/../../../..`.
 * Those paths climb over directories whose names the kernel does not print;
 * locateNamespaceRoot finds them (the container's own cgroup2 mount, root
 * `/`, has our namespace root's inode: the host tree is walked exactly that
 * many levels down for it), and the translator rebases every path on them.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { parseMountinfo, type MountinfoEntry } from './mount.ts';

export type CgroupTranslator = (procPath: string) => string;

/** The number of leading `..` of a mount root made only of them (`/../..` -> 2), else 0. */
function climb(root: string): number {
  const parts = root.split('/').filter((s) => s !== '');
  return parts.length > 0 && parts.every((s) => s === '..') ? parts.length : 0;
}

/** Found namespace roots, by our root's inode and the climbing mount (neither changes while the agent runs). */
const located = new Map<string, string[]>();

/**
 * The directories between the highest-reaching cgroup2 mount's root and our
 * cgroup namespace's root (`['kubepods.slice', ..., 'cri-containerd-….scope']`),
 * or undefined when no mount reaches above our namespace (nothing to rebase)
 * or it cannot be placed (no cgroup2 mount of our own namespace, or not found).
 */
export async function locateNamespaceRoot(mountinfo: string | undefined): Promise<string[] | undefined> {
  if (mountinfo === undefined) return undefined;
  const mounts = parseMountinfo(mountinfo).filter((e) => e.fstype === 'cgroup2');
  const wide = mounts.reduce<MountinfoEntry | undefined>(
    (acc, e) => (climb(e.root) > (acc === undefined ? 0 : climb(acc.root)) ? e : acc),
    undefined,
  );
  if (wide === undefined) return undefined;
  let ownIno: number | undefined;
  for (const own of mounts.filter((e) => e.root === '/')) {
    ownIno = await stat(own.mountPoint).then(
      (s) => s.ino,
      () => undefined,
    );
    if (ownIno !== undefined) break;
  }
  if (ownIno === undefined) return undefined;
  const key = `${ownIno} ${wide.mountPoint} ${wide.root}`;
  const known = located.get(key);
  if (known !== undefined) return known;
  // Breadth-first, `levels` deep: only directories exactly that deep can be our root.
  const levels = climb(wide.root);
  let frontier: string[][] = [[]];
  for (let depth = 1; depth <= levels; depth++) {
    const next: string[][] = [];
    for (const parts of frontier) {
      const entries = await readdir(join(wide.mountPoint, ...parts), { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) next.push([...parts, e.name]);
    }
    frontier = next;
  }
  for (const parts of frontier) {
    const ino = await stat(join(wide.mountPoint, ...parts)).then(
      (s) => s.ino,
      () => undefined,
    );
    if (ino === ownIno) {
      located.set(key, parts);
      return parts;
    }
  }
  return undefined;
}

/** `path` (relative to our namespace root) as a path below `nsRoot`'s top; undefined when it climbs above it. */
function rebase(path: string, nsRoot: readonly string[] | undefined): string | undefined {
  if (nsRoot === undefined) return path;
  const parts = [...nsRoot];
  for (const s of path.split('/')) {
    if (s === '' || s === '.') continue;
    if (s !== '..') parts.push(s);
    else if (parts.pop() === undefined) return undefined;
  }
  return `/${parts.join('/')}`;
}

/**
 * Turns a /proc/<pid>/cgroup path into one relative to `cgroupRoot`. Both that
 * path and the mount's root in mountinfo are relative to our cgroup namespace
 * (rebased on `nsRoot`, from locateNamespaceRoot, when given), so the
 * directory is <mount point>/<path less the mount's root>. A path outside
 * `cgroupRoot` is returned as it was (it starts with '/').
 */
export function cgroupTranslator(
  cgroupRoot: string,
  mountinfo: string | undefined,
  nsRoot?: readonly string[],
): CgroupTranslator {
  const root = cgroupRoot.replace(/\/+$/, '') || '/';
  let mount = { mountPoint: root, root: '/' };
  if (mountinfo !== undefined) {
    const candidates = parseMountinfo(mountinfo).flatMap((e) => {
      const rebased = rebase(e.root, nsRoot);
      const contains = root === e.mountPoint || root.startsWith(e.mountPoint === '/' ? '/' : `${e.mountPoint}/`);
      return e.fstype === 'cgroup2' && contains && rebased !== undefined
        ? [{ mountPoint: e.mountPoint, root: rebased }]
        : [];
    });
    // The deepest mount containing the root; the last one mounted wins a tie (it shadows the others).
    const best = candidates.reduce<(typeof candidates)[number] | undefined>(
      (acc, e) => (acc === undefined || e.mountPoint.length >= acc.mountPoint.length ? e : acc),
      undefined,
    );
    if (best !== undefined) mount = best;
  }
  const mountRoot = mount.root.replace(/\/+$/, '');
  return (procPath) => {
    const path = rebase(procPath, nsRoot);
    if (path === undefined) return procPath;
    if (mountRoot !== '' && path !== mountRoot && !path.startsWith(`${mountRoot}/`)) return procPath;
    const abs = join(mount.mountPoint, path.slice(mountRoot.length));
    const rel = relative(root, abs);
    if (rel === '..' || rel.startsWith(`..${sep}`)) return procPath;
    return rel;
  };
}
