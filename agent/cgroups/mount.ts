/**
 * Finds the cgroup2 (unified hierarchy) mount that podmeter attaches under.
 * cgroup_skb programs attach to cgroup2 directories only, and where cgroup2 is
 * mounted differs by host: /sys/fs/cgroup on pure-v2 hosts, /sys/fs/cgroup/unified
 * on hybrid hosts (v1 controllers plus a v2 tree), elsewhere in containers.
 */
import { ErrorCodes } from '../../common/errors.ts';
import { readFileSync, statfsSync } from 'node:fs';

/** statfs f_type of a cgroup2 filesystem (linux/magic.h CGROUP2_SUPER_MAGIC). */
export const CGROUP2_SUPER_MAGIC = 0x63677270;

/** f_type names for the filesystems a wrong --cgroup-root most likely points at. */
const FS_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [0x27e0eb, 'cgroup v1'],
  [0x01021994, 'tmpfs'],
  [0x62656572, 'sysfs'],
  [0x9fa0, 'proc'],
  [0xcafe4a11, 'bpf'],
  [0xef53, 'ext4'],
  [0x58465342, 'xfs'],
  [0x794c7630, 'overlay'],
]);

const WELL_KNOWN_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

export type CgroupMountErrorCode = typeof ErrorCodes.noCgroup2 | typeof ErrorCodes.notCgroup2;

export class CgroupMountError extends Error {
  readonly code: CgroupMountErrorCode;
  /** The path that was checked (the override), or undefined when no cgroup2 mount exists at all. */
  readonly path: string | undefined;

  constructor(code: CgroupMountErrorCode, message: string, path?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CgroupMountError';
    this.code = code;
    this.path = path;
  }
}

export interface MountinfoEntry {
  /** Root of the mount within its filesystem (for cgroups: relative to the reader's cgroup namespace). */
  root: string;
  mountPoint: string;
  fstype: string;
}

/**
 * Parses /proc/self/mountinfo (proc(5)): `id parent maj:min root mountpoint
 * options [optional fields...] - fstype source superoptions`. The optional
 * fields vary in number, so the fstype is found after the lone '-'.
 */
export function parseMountinfo(mountinfo: string): MountinfoEntry[] {
  const entries: MountinfoEntry[] = [];
  for (const line of mountinfo.split('\n')) {
    const fields = line.trim().split(' ');
    const separator = fields.indexOf('-', 6);
    const root = fields[3];
    const mountPoint = fields[4];
    const fstype = fields[separator + 1];
    if (separator < 0 || root === undefined || mountPoint === undefined || fstype === undefined) continue;
    entries.push({ root: unescapeOctal(root), mountPoint: unescapeOctal(mountPoint), fstype });
  }
  return entries;
}

/** Mount points of every cgroup2 filesystem, in mountinfo order, each once. */
export function parseCgroup2Mounts(mountinfo: string): string[] {
  const points = parseMountinfo(mountinfo)
    .filter((entry) => entry.fstype === 'cgroup2')
    .map((entry) => entry.mountPoint);
  return [...new Set(points)];
}

/** Preference order: pure v2 at /sys/fs/cgroup, then hybrid /sys/fs/cgroup/unified, then the rest as listed. */
export function rankCgroup2Mounts(mountPoints: readonly string[]): string[] {
  const wellKnown = WELL_KNOWN_ROOTS.filter((root) => mountPoints.includes(root));
  return [...wellKnown, ...mountPoints.filter((point) => !WELL_KNOWN_ROOTS.includes(point))];
}

export function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/**
 * The directory to treat as the cgroup2 root. `override` (--cgroup-root) wins
 * and may be any directory on a cgroup2 filesystem. Otherwise every cgroup2
 * mount from mountinfo is tried in `rankCgroup2Mounts` order and the first one
 * that statfs confirms wins (a later mount may shadow an earlier one).
 */
export function findCgroup2Root(opts: { override?: string; mountinfoPath?: string } = {}): string {
  const mountinfoPath = opts.mountinfoPath ?? '/proc/self/mountinfo';
  if (opts.override !== undefined) return checkOverride(opts.override, mountinfoPath);

  const mountinfo = readMountinfo(mountinfoPath);
  // Without a readable mountinfo (no /proc in a minimal sandbox) the well-known places are still worth a look.
  const candidates = mountinfo === undefined ? WELL_KNOWN_ROOTS : rankCgroup2Mounts(parseCgroup2Mounts(mountinfo));
  const root = candidates.find(isCgroup2);
  if (root !== undefined) return root;
  throw new CgroupMountError(ErrorCodes.noCgroup2, noCgroup2Message(mountinfo, mountinfoPath));
}

function checkOverride(override: string, mountinfoPath: string): string {
  let type: number;
  try {
    type = statfsSync(override).type;
  } catch (cause) {
    const reason =
      (cause as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'does not exist'
        : `cannot be read (${(cause as Error).message})`;
    throw new CgroupMountError(
      ErrorCodes.notCgroup2,
      `--cgroup-root ${override} ${reason}.${suggestMounts(mountinfoPath)}`,
      override,
      { cause },
    );
  }
  if (type === CGROUP2_SUPER_MAGIC) return override;
  const fsName = FS_TYPE_NAMES.get(type) ?? `filesystem type 0x${type.toString(16)}`;
  throw new CgroupMountError(
    ErrorCodes.notCgroup2,
    `--cgroup-root ${override} is on ${fsName}, not cgroup2: podmeter attaches only to cgroup v2 directories.${suggestMounts(mountinfoPath)}`,
    override,
  );
}

function suggestMounts(mountinfoPath: string): string {
  const mountinfo = readMountinfo(mountinfoPath);
  const mounts = mountinfo === undefined ? [] : rankCgroup2Mounts(parseCgroup2Mounts(mountinfo));
  return mounts.length > 0 ? ` cgroup2 is mounted at: ${mounts.join(', ')}.` : '';
}

function noCgroup2Message(mountinfo: string | undefined, mountinfoPath: string): string {
  const v1Mounts =
    mountinfo === undefined ? [] : parseMountinfo(mountinfo).filter((entry) => entry.fstype === 'cgroup');
  const found =
    mountinfo === undefined
      ? `${mountinfoPath} is unreadable and neither ${WELL_KNOWN_ROOTS.join(' nor ')} is cgroup2`
      : v1Mounts.length > 0
        ? `this host has only cgroup v1 mounted (${v1Mounts.map((entry) => entry.mountPoint).join(', ')})`
        : 'no cgroup2 filesystem is mounted';
  return (
    `podmeter needs cgroup v2 (the unified hierarchy), but ${found}. ` +
    'Either mount cgroup2 next to v1 (`mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`), ' +
    'or boot the node with systemd.unified_cgroup_hierarchy=1 for pure cgroup v2. ' +
    "In a container, mount the host's cgroup2 directory into it and pass --cgroup-root."
  );
}

/** mountinfo's text, or undefined when it cannot be read (no /proc in a minimal sandbox). */
export function readMountinfo(path = '/proc/self/mountinfo'): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The kernel writes space, tab, newline and backslash in paths as \ooo. */
function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
