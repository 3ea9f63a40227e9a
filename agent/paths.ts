/**
 * Where podmeter's built artefacts live (below the install root, common/paths.ts).
 */
import { join } from 'node:path';
import { installRoot, nativeAddon } from '../common/paths.ts';

/** The native addon built by node-gyp. */
export const nativeAddonPath: string = nativeAddon('podmeter_native');

/** A compiled BPF object: bpf/<name>.bpf.c -> build/bpf/<name>.bpf.o. */
export function bpfObjectPath(name: string): string {
  return join(installRoot, 'build/bpf', `${name}.bpf.o`);
}
