/**
 * The /proc scan: which processes hold BPF map fds (anon_inode:bpf-map and
 * the map_id in fdinfo), and the small /proc files the inventory reads of
 * each holder (comm, cgroup). Processes and fds come and go during the scan:
 * what vanishes is skipped.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { Slices } from './slices.ts';

export interface ScannedHolder {
  pid: number;
  mapIds: Set<number>;
}

/**
 * Errors that mean "it went away while we looked" (or was never ours to see):
 * skip. Anything else (EMFILE, EIO) fails the enumeration, which the caller
 * logs and counts, rather than silently under-reporting.
 */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return (
    code === 'ENOENT' ||
    code === 'ESRCH' ||
    code === 'EACCES' ||
    code === 'EPERM' ||
    code === 'ENOTDIR' ||
    code === 'EINVAL'
  );
}

const MAP_ID = /^map_id:\s*(\d+)/m;

/**
 * Fds of one process known not to be maps, which the scan passes over
 * without a readlink: the agent's own link fds (two per counted cgroup, so
 * a thousand at 500 pods: their readlinks were most of what the scan cost
 * beyond the other processes). `fds()` is asked when the scan reaches `pid`.
 */
export interface NotMapFds {
  pid: number;
  fds: () => ReadonlySet<number>;
}

/** Every process holding a BPF map fd, with the ids of the maps it holds; pauses between processes (slices.ts). */
export async function scanMapHolders(
  procRoot = '/proc',
  slices = new Slices(Infinity),
  notMaps?: NotMapFds,
): Promise<ScannedHolder[]> {
  const holders: ScannedHolder[] = [];
  let pids: string[];
  try {
    pids = readdirSync(procRoot);
  } catch (err) {
    throw new Error(`cannot list ${procRoot}: ${(err as Error).message}`, { cause: err });
  }
  for (const name of pids) {
    const first = name.charCodeAt(0);
    if (first < 48 || first > 57) continue; // not a pid
    await slices.pause();
    const fdDir = `${procRoot}/${name}/fd`;
    let fds: string[];
    try {
      fds = readdirSync(fdDir);
    } catch (err) {
      if (vanished(err)) continue; // exited, or not ours to read
      throw err;
    }
    let mapIds: Set<number> | undefined;
    const skip = notMaps !== undefined && Number(name) === notMaps.pid ? notMaps.fds() : undefined;
    for (const fd of fds) {
      if (skip?.has(Number(fd))) continue;
      await slices.pause(); // a process can hold thousands of fds (an apiserver, a proxy)
      let target: string;
      try {
        target = readlinkSync(`${fdDir}/${fd}`);
      } catch (err) {
        if (vanished(err)) continue; // closed meanwhile
        throw err;
      }
      if (target !== 'anon_inode:bpf-map') continue;
      let info: string;
      try {
        info = readFileSync(`${procRoot}/${name}/fdinfo/${fd}`, 'latin1');
      } catch (err) {
        if (vanished(err)) continue;
        throw err;
      }
      const m = MAP_ID.exec(info);
      if (!m) continue;
      (mapIds ??= new Set()).add(Number(m[1]));
    }
    if (mapIds !== undefined) holders.push({ pid: Number(name), mapIds });
  }
  return holders;
}

export function readSmall(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch (err) {
    if (vanished(err)) return undefined;
    throw err;
  }
}

/** The unified-hierarchy line of /proc/<pid>/cgroup (`0::<path>`). */
export function cgroupV2Path(procCgroup: string): string | undefined {
  for (const line of procCgroup.split('\n')) {
    if (line.startsWith('0::')) return line.slice(3);
  }
  return undefined;
}
