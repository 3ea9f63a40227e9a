/**
 * One enumeration of every BPF map on the node: how much kernel memory each
 * holds (memlock from fdinfo, as the kernel reports it), which processes hold
 * it (scan of /proc/<pid>/fd), and so which pod; maps no process holds are
 * kept by a loaded program (`program`) or by a bpffs pin or the kernel
 * itself (`pinned`). Everything the CLI, the HTTP API, the /maps page and the
 * metrics show is computed here, once per enumeration.
 *
 * Counting rules:
 * - the node total counts every map once, however many processes share it;
 * - a map shared by processes of several owners (comm) or pods counts in full
 *   for each of them: an owner's or a pod's figure is "memory it keeps
 *   alive", and stays stable when a second process (bpftool, a debugger)
 *   opens the map for a moment. So per-owner and per-pod sums can exceed the
 *   node total; the node total is the one to add up across nodes.
 *
 * The parts: the estimate for what memlock leaves out (estimate.ts), the
 * /proc scan (holders.ts), cgroup path translation (cgroups/translate.ts).
 *
 * Races: processes exit, fds close and maps come and go during the scan;
 * whatever vanishes mid-scan (ENOENT, ESRCH) is skipped silently. A map freed
 * between the map list and the /proc scan shows up once as owner `pinned`.
 */
import { release } from 'node:os';
import { listMaps, listPrograms, possibleCpus, type MapInfo } from '../kernel/bpf.ts';
import { findCgroup2Root, readMountinfo } from '../cgroups/mount.ts';
import { podCgroupOf } from '../cgroups/podPath.ts';
import { cgroupTranslator, locateNamespaceRoot } from '../cgroups/translate.ts';
import {
  CGROUP_STORAGE_ELEMENT_OVERHEAD,
  estimateStorageBytes,
  kernelChargesMemlock,
  memlockIsExact,
  OWN_STORAGE_MAP_TYPE,
} from './estimate.ts';
import { cgroupV2Path, readSmall, scanMapHolders } from './holders.ts';
import { Slices } from './slices.ts';
import { Summary } from './summary.ts';
import { listSliced, type UnreadableObject } from './walk.ts';
import { PODMETER_MAPS } from '../kernel/contract.generated.ts';

/** Who keeps a map alive: processes holding an fd, else a loaded program using it, else a pin (or the kernel). */
export type OwnerKind = 'process' | 'program' | 'pinned';

export interface MapProcess {
  pid: number;
  comm: string;
  /**
   * The process's cgroup v2 path relative to the cgroup root (no leading '/';
   * '' is the root itself). A process outside the root keeps /proc's form
   * (leading '/'); undefined when it could not be read.
   */
  cgroup?: string;
  /** Pod UID when the cgroup is a pod's (or a container's in a pod). */
  podUid?: string;
  /** Ids of the maps this process holds, each once. */
  mapIds: number[];
  /** Sum of those maps' bytes. */
  bytes: number;
}

export interface MapHolder {
  pid: number;
  comm: string;
  podUid?: string;
}

export interface InventoryMap {
  id: number;
  name: string;
  /** libbpf's name of the map type: hash, array, percpu_array, lru_hash, ringbuf, ... */
  type: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** As the kernel reports it in fdinfo `memlock:` (bytes); -1 when it does not. */
  memlock: number;
  /** What podmeter counts: memlock, or the estimate when `estimated`. */
  bytes: number;
  /** True for podmeter's own storage map: its elements are estimated (the kernel's memlock leaves them out). */
  estimated: boolean;
  /** Own storage map only: the number of elements the estimate used. */
  entries?: number;
  owner: OwnerKind;
  /** Labels of the owners: the distinct comms of the holding processes, or ['program'] / ['pinned']. */
  owners: string[];
  /** The processes holding an fd of the map. */
  processes: MapHolder[];
  /** Distinct pod UIDs of the holding processes. */
  podUids: string[];
  /** Loaded programs that use the map. */
  programIds: number[];
  /** Caveat about the figure, when there is one. */
  note?: string;
}

export interface NameSummary {
  name: string;
  types: string[];
  maps: number;
  bytes: number;
}

export interface OwnerSummary {
  /** comm of the holding processes, or `program` / `pinned`. */
  owner: string;
  kind: OwnerKind;
  pids: number[];
  maps: number;
  bytes: number;
}

export interface PodSummary {
  uid: string;
  pids: number[];
  maps: number;
  bytes: number;
}

export interface MapInventory {
  /** When the enumeration started (ms since the epoch). */
  takenAt: number;
  /** Wall time of the whole enumeration (its slices and the waits between them). */
  durationMs: number;
  /** The longest stretch it held the event loop (see InventoryOptions.sliceMs). */
  longestSliceMs: number;
  /** os.release() */
  kernel: string;
  /** memlock is exact from kernel 6.4 on; before, computed from the map's shape (README: Requirements). */
  memlockExact: boolean;
  possibleCpus: number;
  cgroupRoot: string;
  /** Every map once. */
  totalBytes: number;
  mapCount: number;
  /** Largest first. */
  maps: InventoryMap[];
  /** Maps the agent may not open (EPERM, EACCES: an LSM's refusal): left out of every figure. */
  unreadableMaps: UnreadableObject[];
  /** Processes holding at least one map, largest first. */
  processes: MapProcess[];
  byName: NameSummary[];
  byOwner: OwnerSummary[];
  /** Pods whose processes hold maps; a map shared by two pods counts in both. */
  byPod: PodSummary[];
}

export interface OwnStorageOption {
  /** Id of podmeter's storage map; without it every map named podmeter_stats of type percpu_cgroup_storage. */
  mapId?: number;
  /** Elements in the map now: 2 per attached cgroup (ingress and egress keys). */
  entries: () => number;
}

export interface InventoryOptions {
  /** The agent's cgroup2 root (--cgroup-root); default: the cgroup2 mount. Pod paths are matched relative to it. */
  cgroupRoot?: string;
  /** podmeter's own storage map and its element count, for the estimate. */
  ownStorage?: OwnStorageOption;
  /** This process's fds that are not maps (the agent's links), passed over by the /proc scan (holders.ts). */
  ownNonMapFds?: () => ReadonlySet<number>;
  /** Defaults to /proc (tests only). */
  procRoot?: string;
  /** Defaults to os.release() (tests only). */
  kernelRelease?: string;
  /** The enumeration yields to the event loop after this much synchronous work (default 1 ms; a scrape waits about that long at most). */
  sliceMs?: number;
  /** Defaults to the kernel's map walk (tests only). */
  listMaps?: (afterId: number, limit: number) => MapInfo[];
}

// --- the enumeration -----------------------------------------------------------

/** The cgroup2 mount; without one (cgroup v1 only) maps are still listed, with no pods. */
function defaultCgroupRoot(): string {
  try {
    return findCgroup2Root();
  } catch {
    return '/';
  }
}

function isOwnStorage(map: MapInfo, own: OwnStorageOption | undefined): boolean {
  if (own === undefined) return false;
  if (own.mapId !== undefined) return map.id === own.mapId;
  return map.name === PODMETER_MAPS.stats.name && map.typeName === OWN_STORAGE_MAP_TYPE;
}

function isCgroupStorage(type: string): boolean {
  return type === 'cgroup_storage' || type === 'percpu_cgroup_storage';
}

/**
 * Enumerates every BPF map on the node, its memory and who keeps it, in
 * slices of about `sliceMs` between which the event loop runs (thousands of
 * maps and processes take tens of milliseconds in all). Needs root
 * (CAP_SYS_ADMIN).
 */
export async function takeInventory(opts: InventoryOptions = {}): Promise<MapInventory> {
  const started = performance.now();
  const slices = new Slices(opts.sliceMs ?? 1);
  const takenAt = Date.now();
  const procRoot = opts.procRoot ?? '/proc';
  const kernel = opts.kernelRelease ?? release();
  const cgroupRoot = opts.cgroupRoot ?? defaultCgroupRoot();
  const cpus = possibleCpus();

  const unreadableMaps: UnreadableObject[] = [];
  const infos = await listSliced(opts.listMaps ?? listMaps, slices, unreadableMaps);
  const holders = await scanMapHolders(
    procRoot,
    slices,
    opts.ownNonMapFds && { pid: process.pid, fds: opts.ownNonMapFds },
  );
  const programsOf = programsByMap(await listSliced(listPrograms, slices, []));
  const { processes, holdersOf } = await holdingProcesses(holders, new Set(infos.map((m) => m.id)), {
    procRoot,
    cgroupRoot,
    slices,
  });

  const maps: InventoryMap[] = [];
  const summary = new Summary();
  let totalBytes = 0;
  const sizing: Sizing = { own: opts.ownStorage, elementsInMemlock: kernelChargesMemlock(kernel), cpus };
  for (const info of infos) {
    await slices.pause();
    const procs = holdersOf.get(info.id) ?? [];
    const map = describeMap(info, procs, programsOf.get(info.id) ?? [], sizing);
    totalBytes += map.bytes;
    maps.push(map);
    summary.add(map);
    for (const p of procs) p.bytes += map.bytes;
  }
  await slices.pause();
  maps.sort((a, b) => b.bytes - a.bytes || a.id - b.id); // largest first (numeric keys: 2,000 maps sort in a slice)
  await slices.pause();
  const views = summary.result();
  await slices.pause();
  const holding = [...processes].filter((p) => p.mapIds.length > 0).sort((a, b) => b.bytes - a.bytes || a.pid - b.pid);
  return {
    takenAt,
    durationMs: performance.now() - started,
    longestSliceMs: slices.longestMs,
    kernel,
    memlockExact: memlockIsExact(kernel),
    possibleCpus: cpus,
    cgroupRoot,
    totalBytes,
    mapCount: maps.length,
    maps,
    unreadableMaps,
    processes: holding,
    ...views,
  };
}

/** For each map id, the loaded programs that use it. */
function programsByMap(programs: readonly { id: number; mapIds: readonly number[] }[]): Map<number, number[]> {
  const programsOf = new Map<number, number[]>();
  for (const p of programs) {
    for (const id of new Set(p.mapIds)) {
      const list = programsOf.get(id);
      if (list === undefined) programsOf.set(id, [p.id]);
      else list.push(p.id);
    }
  }
  return programsOf;
}

/**
 * The processes holding the listed maps (`known`), with their comm, cgroup
 * and pod, and for each map id the processes holding it. A map made after
 * the list is left for the next round; a process that exited meanwhile is
 * skipped.
 */
async function holdingProcesses(
  holders: Awaited<ReturnType<typeof scanMapHolders>>,
  known: ReadonlySet<number>,
  where: { procRoot: string; cgroupRoot: string; slices: Slices },
): Promise<{ processes: MapProcess[]; holdersOf: Map<number, MapProcess[]> }> {
  const { procRoot, slices } = where;
  const mountinfo = readMountinfo(`${procRoot}/self/mountinfo`);
  const translate = cgroupTranslator(where.cgroupRoot, mountinfo, await locateNamespaceRoot(mountinfo));
  const processes: MapProcess[] = [];
  const holdersOf = new Map<number, MapProcess[]>();
  for (const h of holders) {
    await slices.pause();
    const mapIds = [...h.mapIds].filter((id) => known.has(id));
    if (mapIds.length === 0) continue;
    const comm = readSmall(`${procRoot}/${h.pid}/comm`)?.replace(/\n$/, '');
    if (comm === undefined) continue;
    const proc: MapProcess = { pid: h.pid, comm, mapIds: mapIds.sort((a, b) => a - b), bytes: 0 };
    const rawCgroup = readSmall(`${procRoot}/${h.pid}/cgroup`);
    const v2 = rawCgroup === undefined ? undefined : cgroupV2Path(rawCgroup);
    if (v2 !== undefined) {
      proc.cgroup = translate(v2);
      const pod = proc.cgroup.startsWith('/') ? undefined : podCgroupOf(proc.cgroup);
      if (pod !== undefined) proc.podUid = pod.uid;
    }
    processes.push(proc);
    for (const id of mapIds) {
      const list = holdersOf.get(id);
      if (list === undefined) holdersOf.set(id, [proc]);
      else list.push(proc);
    }
  }
  return { processes, holdersOf };
}

/** What sizing a map's figure needs: podmeter's own storage map, whether memlock includes elements, the CPUs. */
interface Sizing {
  own: OwnStorageOption | undefined;
  elementsInMemlock: boolean;
  cpus: number;
}

/** One map's entry: who keeps it and what it costs (for podmeter's own storage map, the estimate where memlock leaves elements out). */
function describeMap(
  info: MapInfo,
  procs: readonly MapProcess[],
  programIds: readonly number[],
  sizing: Sizing,
): InventoryMap {
  const owner: OwnerKind = procs.length > 0 ? 'process' : programIds.length > 0 ? 'program' : 'pinned';
  const map: InventoryMap = {
    id: info.id,
    name: info.name,
    type: info.typeName,
    keySize: info.keySize,
    valueSize: info.valueSize,
    maxEntries: info.maxEntries,
    flags: info.flags,
    memlock: info.memlock,
    bytes: Math.max(0, info.memlock),
    estimated: false,
    owner,
    owners: owner === 'process' ? [...new Set(procs.map((p) => p.comm))].sort() : [owner],
    processes: procs
      .map((p): MapHolder =>
        p.podUid === undefined ? { pid: p.pid, comm: p.comm } : { pid: p.pid, comm: p.comm, podUid: p.podUid },
      )
      .sort((a, b) => a.pid - b.pid),
    podUids: [...new Set(procs.flatMap((p) => (p.podUid === undefined ? [] : [p.podUid])))].sort(),
    programIds: [...programIds].sort((a, b) => a - b),
  };
  const entries = isOwnStorage(info, sizing.own) ? ownEntries(sizing.own) : undefined;
  if (entries !== undefined) {
    map.entries = entries;
    if (!sizing.elementsInMemlock) {
      map.bytes = estimateStorageBytes(map, entries, sizing.cpus);
      map.estimated = true;
      map.note = `estimated: ${entries} elements x (round_up(${info.valueSize}, 8) x ${sizing.cpus} CPUs + ${CGROUP_STORAGE_ELEMENT_OVERHEAD}) + memlock ${info.memlock}`;
    }
  }
  if (isCgroupStorage(info.typeName) && !map.estimated) {
    map.note = sizing.elementsInMemlock
      ? 'cgroup storage: the kernel memlock includes its elements (whole pages each, before 5.11)'
      : 'cgroup storage: the kernel memlock leaves out its elements';
  }
  if (info.memlock < 0 && !map.estimated) map.note = 'the kernel reports no memlock for this map';
  return map;
}

/** The own storage map's element count, when its counter answers with a sane number. */
function ownEntries(own: OwnStorageOption | undefined): number | undefined {
  try {
    const entries = own?.entries();
    return entries !== undefined && Number.isFinite(entries) && entries >= 0 ? entries : undefined;
  } catch {
    return undefined;
  }
}
