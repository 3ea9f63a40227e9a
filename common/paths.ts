/**
 * Where podmeter is installed: the directory with package.json, found from
 * this file, so the same code works from TypeScript sources and from the
 * compiled JavaScript in build/js.
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

/** A native addon built by node-gyp (agent/native/binding.gyp): podmeter_native, podmeter_memory. */
export function nativeAddon(name: string): string {
  return join(installRoot, 'agent/native/build/Release', `${name}.node`);
}
