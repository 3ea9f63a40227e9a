/**
 * What a BPF map costs the kernel where fdinfo's memlock does not say it:
 * before 6.4 memlock is computed from the map's shape (not its memory), and from 5.11 a
 * cgroup storage map's memlock leaves out its elements, so podmeter's own
 * storage map is estimated from its element count (inventory.ts applies it).
 */
export const OWN_STORAGE_MAP_TYPE = 'percpu_cgroup_storage';

/**
 * Kernel memory per element of a cgroup storage map besides its value:
 * struct bpf_cgroup_storage (kernel/bpf/local_storage.c, include/linux/bpf-cgroup-defs.h),
 * allocated with bpf_map_kmalloc_node() once per {cgroup, attach type} key:
 * the value buffer pointer (8), the map pointer (8), struct bpf_cgroup_storage_key
 * (u64 cgroup id + u32 attach type, padded: 16), list_map and list_cg list heads
 * (16 each), the rb_node in the map's tree (24) and an rcu_head (16) = 104 bytes
 * on 64-bit kernels (BTF of this 6.18 kernel: `STRUCT 'bpf_cgroup_storage' size=104`).
 * kmalloc serves 104 bytes from its kmalloc-128 cache, so each element costs 128.
 * The per-CPU value buffer comes on top: bpf_map_alloc_percpu(value_size, align 8)
 * per element, i.e. round_up(value_size, 8) bytes on every possible CPU.
 * (cgroup_storage_map_usage() reports only sizeof(struct bpf_cgroup_storage_map):
 * "Currently the dynamically allocated elements are not counted.")
 */
export const CGROUP_STORAGE_ELEMENT_OVERHEAD = 128;

/** For shared (non per-CPU) cgroup storage the value sits in a kmalloc'd struct bpf_storage_buffer {rcu_head; data[]}: 16 bytes + value. */
const STORAGE_BUFFER_HEADER = 16;

/** True if the release (`uname -r`) is at least major.minor; false for one that does not parse. */
function kernelAtLeast(kernelRelease: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!m) return false;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}

/**
 * memlock in fdinfo is exact from 6.4 (map_mem_usage callbacks). Before, it is
 * computed from the map's shape: whole pages charged at creation before 5.11
 * (above the memory), round_up((key + value) x entries) from 5.11 (below it for
 * a hash map, 0 for a ring buffer: measured on 5.10 and 6.1, README Requirements).
 */
export function memlockIsExact(kernelRelease: string): boolean {
  return kernelAtLeast(kernelRelease, 6, 4);
}

/**
 * Before 5.11 the kernel charged BPF maps to the creating process's
 * RLIMIT_MEMLOCK (a limit too small fails the load with EPERM), and each cgroup
 * storage element to its map's memlock, in whole pages
 * (bpf_cgroup_storage_alloc: bpf_map_charge_memlock), so memlock already
 * covers the elements (an upper bound) and nothing is added to it. 5.11 moved
 * maps to memcg accounting: no limit, and memlock leaves the elements out.
 */
export function kernelChargesMemlock(kernelRelease: string): boolean {
  return !kernelAtLeast(kernelRelease, 5, 11);
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Bytes of one element of a cgroup storage map (per-CPU or shared), including its kernel bookkeeping. */
export function cgroupStorageElementBytes(map: { type: string; valueSize: number }, cpus: number): number {
  const value =
    map.type === 'percpu_cgroup_storage'
      ? roundUp(map.valueSize, 8) * cpus
      : roundUp(STORAGE_BUFFER_HEADER + map.valueSize, 8);
  return value + CGROUP_STORAGE_ELEMENT_OVERHEAD;
}

/** The estimate for podmeter's own storage map: entries x (round_up(value, 8) x possible CPUs + overhead) + the reported memlock. */
export function estimateStorageBytes(
  map: { type: string; valueSize: number; memlock: number },
  entries: number,
  cpus: number,
): number {
  return Math.max(0, map.memlock) + Math.max(0, entries) * cgroupStorageElementBytes(map, cpus);
}
