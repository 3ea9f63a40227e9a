/**
 * Loads the native addon (agent/native) and declares its raw, fd-level API.
 * Only kernel/*.ts use it; everything else goes through the facade in bpf.ts.
 */
import { createRequire } from 'node:module';
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from './errors.ts';
import { nativeAddonPath } from '../paths.ts';

export interface RawProgram {
  name: string;
  section: string;
  attachType: number;
  fd: number;
}
export interface RawObject {
  programs: RawProgram[];
  maps: { name: string; fd: number }[];
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  /** Bytes of a value as lookup and update move it: valueSize, or for per-CPU maps round_up(valueSize, 8) x possible CPUs. */
  valueBytes: number;
  maxEntries: number;
  flags: number;
  /** Bytes, from /proc/self/fdinfo `memlock:`; -1 when the kernel does not report it. */
  memlock: number;
  btfId: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  typeName: string;
  /** The kernel's hash of the instructions as loaded (map references left out), 16 hex digits: the same code has the same tag. */
  tag: string;
  /** Cumulative; only advances while run-time statistics are enabled. */
  runTimeNs: bigint;
  runCnt: bigint;
  mapIds: number[];
}

export interface LinkInfo {
  id: number;
  type: number;
  typeName: string;
  progId: number;
  /** For cgroup links; 0n once the cgroup is gone (the link is defunct). */
  cgroupId?: bigint;
  attachType?: number;
}

/** A map as a BPF object file declares it (objectSpec: the ELF read, nothing loaded). */
export interface RawMapSpec {
  name: string;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** A program as a BPF object file declares it. */
export interface RawProgramSpec {
  name: string;
  type: number;
  typeName: string;
  attachType: number;
  attachTypeName: string;
}

/**
 * Every function taking a map fd and a buffer (or a size the addon allocates)
 * also takes `mapId`, the id of the map the caller means: the addon asks the
 * kernel what the fd is before any map syscall and throws (TypeError, or
 * BpfError EBADF for a closed fd) when it is not that map or a buffer's
 * length is not the map's key or value size (agent/native/src/shape.h).
 */
export interface NativeAddon {
  setErrorClass(ctor: typeof BpfError): void;
  /** `reuse`: fds of existing maps by map name, used instead of creating those maps. */
  openObject(path: string, reuse?: Readonly<Record<string, number>>): RawObject;
  objectSpec(path: string): { maps: RawMapSpec[]; programs: RawProgramSpec[] };
  /** The cgroup2 directory at `cgroupPath` opened (O_DIRECTORY), and its id (the inode number). */
  openCgroup(cgroupPath: string): { fd: number; id: bigint };
  /** BPF_LINK_CREATE on an open cgroup directory; `cgroupPath` only names it in errors. */
  attachCgroupLink(progFd: number, cgroupFd: number, attachType: number, cgroupPath: string): number;
  attachCgroupMulti(progFd: number, cgroupPath: string, attachType: number): void;
  detachCgroupMulti(progFd: number, cgroupPath: string, attachType: number): void;
  queryCgroup(cgroupPath: string, attachType: number): number[];
  linkDetach(linkFd: number): void;
  /** BPF_LINK_UPDATE with BPF_F_REPLACE: fails (EPERM) unless the link still runs `oldProgFd`'s program. */
  linkUpdate(linkFd: number, newProgFd: number, oldProgFd: number): void;
  progFdById(id: number): number;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  storageLookup(
    mapFd: number,
    cgroupId: bigint,
    attachType: number,
    valueSize: number,
    mapId: number,
  ): BigUint64Array | undefined;
  storageSums(
    mapFd: number,
    cgroupId: bigint,
    valueSize: number,
    words: number,
    previous: BigUint64Array | undefined,
    mapId: number,
  ): BigUint64Array | undefined;
  storageSumsMany(
    mapFd: number,
    cgroupIds: readonly bigint[],
    valueSize: number,
    words: number,
    previous: readonly (BigUint64Array | undefined)[],
    mapId: number,
  ): (BigUint64Array | undefined)[];
  storageKeys(mapFd: number, mapId: number): { cgroupId: bigint; attachType: number }[];
  possibleCpus(): number;
  mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, mapId: number): void;
  mapDelete(fd: number, key: Uint8Array, mapId: number): boolean;
  mapLookup(fd: number, key: Uint8Array, valueSize: number, mapId: number): Uint8Array | undefined;
  /** At most `limit` keys when given (1: whether the map has any). */
  mapKeys(fd: number, keySize: number, mapId: number, limit?: number): Uint8Array[];
  /** Every entry in one call (BPF_MAP_LOOKUP_BATCH, or a native walk): `count` keys and values, each laid end to end. */
  mapEntries(
    fd: number,
    keySize: number,
    valueSize: number,
    mapId: number,
  ): { count: number; keys: Uint8Array; values: Uint8Array };
  /** Deletes the keys laid end to end in `keys` (BPF_MAP_DELETE_BATCH, or one by one); how many were there. */
  mapDeleteKeys(fd: number, keys: Uint8Array, mapId: number): number;
  /** mapUpdate on libuv's thread pool: bad arguments throw here; the update's own failure rejects. */
  mapUpdateAsync(fd: number, key: Uint8Array, value: Uint8Array, mapId: number): Promise<void>;
  listMaps(afterId?: number, limit?: number): MapInfo[];
  listPrograms(afterId?: number, limit?: number): ProgInfo[];
  mapInfo(fd: number): MapInfo;
  progInfo(fd: number): ProgInfo;
  linkInfo(fd: number): LinkInfo;
  /**
   * Per fd, the cgroup id of the cgroup link (0n once detached or its cgroup
   * gone) with errno 0; or 0n and why the kernel cannot say: EBADF (not open,
   * or negative), EINVAL (not a BPF link), EOPNOTSUPP (not a cgroup link), or
   * BPF_OBJ_GET_INFO_BY_FD's errno (agent/native/src/inventory.h).
   */
  linkCgroupIds(fds: Int32Array): { cgroupIds: BigUint64Array; errnos: Int32Array };
  enableRunTimeStats(): number;
  /** RLIMIT_MEMLOCK raised as far as allowed; the soft limit now in bytes, -1 for unlimited. */
  raiseMemlockLimit(): number;
  /** Grows the fd table to `count` slots at once (capped at RLIMIT_NOFILE); the slots reserved, 0 when it could not. */
  reserveFds(count: number): number;
  /**
   * A NETLINK_NETFILTER socket for conntrack lookups, made inside the network
   * namespace at `netnsPath` when given (agent/native/src/conntrack.h).
   */
  conntrackOpen(netnsPath?: string): number;
  /**
   * For n tuple records (conntrack.h: 40 bytes each), n answer records (24
   * bytes each): who answers each tuple in the conntrack table, or zeros.
   */
  conntrackReplies(fd: number, tuples: Uint8Array): Uint8Array;
}

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const path = nativeAddonPath;
  let addon: NativeAddon;
  try {
    addon = require(path) as NativeAddon;
  } catch (cause) {
    throw new BpfError(
      {
        code: ErrorCodes.nativeAddonMissing,
        message: `podmeter's native addon is not built or does not load (${path}); run 'make build' (or 'make setup' on a new machine)`,
        path,
      },
      { cause },
    );
  }
  addon.setErrorClass(BpfError);
  return addon;
}

export const native: NativeAddon = load();
