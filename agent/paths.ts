/**
 * Where podmeter's built artefacts live: found from the install root (the
 * directory with package.json), so the same code works from TypeScript
 * sources and from the compiled JavaScript in build/js.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findInstallRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`podmeter: no package.json above ${start}`);
  }
}

export const installRoot: string = findInstallRoot(dirname(fileURLToPath(import.meta.url)));

/** The native addon built by node-gyp. */
export const nativeAddonPath: string = join(installRoot, 'agent/native/build/Release/podmeter_native.node');

/** A compiled BPF object: bpf/<name>.bpf.c -> build/bpf/<name>.bpf.o. */
export function bpfObjectPath(name: string): string {
  return join(installRoot, 'build/bpf', `${name}.bpf.o`);
}
