/**
 * Gives the C allocator's free memory back to the kernel: glibc's malloc
 * keeps what connections freed (OpenSSL's and node's per-socket buffers)
 * resident until malloc_trim (agent/native/src/memory.cc says why). The
 * V8 heap is not concerned: its garbage collector returns its own pages.
 */
import { createRequire } from 'node:module';
import type { Logger } from './log.ts';
import { nativeAddon } from './paths.ts';

interface MemoryAddon {
  /** True if pages were given back; undefined without glibc's malloc_trim. */
  trimMemory(): boolean | undefined;
}

let addon: MemoryAddon | Error | undefined;

/**
 * Releases malloc's free pages; false when there were none or the addon is
 * not built (then logged once: memory freed by closed connections stays
 * resident until reused, as without podmeter_memory).
 */
export function trimMemory(log: Logger): boolean {
  if (addon === undefined) {
    const path = nativeAddon('podmeter_memory');
    try {
      addon = createRequire(import.meta.url)(path) as MemoryAddon;
    } catch (err) {
      addon = err as Error;
      log.warn(
        { err: addon.message, path },
        "cannot load podmeter_memory ('make build'): memory freed by closed connections is not given back to the kernel",
      );
    }
  }
  return !(addon instanceof Error) && addon.trimMemory() === true;
}
