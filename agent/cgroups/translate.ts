/**
 * Cgroup paths as processes see them (/proc/<pid>/cgroup) turned into paths
 * relative to the agent's cgroup root, through the cgroup2 mount (mountinfo).
 */
import { join, relative, sep } from 'node:path';
import { parseMountinfo } from './mount.ts';

/**
 * Turns a /proc/<pid>/cgroup path into one relative to `cgroupRoot`. Both that
 * path and the mount's root in mountinfo are relative to our cgroup namespace,
 * so the directory is <mount point>/<path less the mount's root>.
 */
export type CgroupTranslator = (procPath: string) => string;

export function cgroupTranslator(cgroupRoot: string, mountinfo: string | undefined): CgroupTranslator {
  const root = cgroupRoot.replace(/\/+$/, '') || '/';
  let mount = { mountPoint: root, root: '/' };
  if (mountinfo !== undefined) {
    const candidates = parseMountinfo(mountinfo).filter(
      (e) => e.fstype === 'cgroup2' && (root === e.mountPoint || root.startsWith(e.mountPoint === '/' ? '/' : `${e.mountPoint}/`)),
    );
    // The deepest mount containing the root; the last one mounted wins a tie (it shadows the others).
    const best = candidates.reduce<(typeof candidates)[number] | undefined>(
      (acc, e) => (acc === undefined || e.mountPoint.length >= acc.mountPoint.length ? e : acc),
      undefined,
    );
    if (best !== undefined) mount = best;
  }
  const mountRoot = mount.root.replace(/\/+$/, '');
  return (procPath) => {
    if (mountRoot !== '' && procPath !== mountRoot && !procPath.startsWith(`${mountRoot}/`)) return procPath;
    const abs = join(mount.mountPoint, procPath.slice(mountRoot.length));
    const rel = relative(root, abs);
    if (rel === '..' || rel.startsWith(`..${sep}`)) return procPath;
    return rel;
  };
}
