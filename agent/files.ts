/** Small filesystem helpers shared by the agent's parts. */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * mkdir -p that fails instead of spinning: Node's recursive mkdirSync loops
 * forever when mkdir answers ENOENT for a path whose parent exists (e.g.
 * under /proc), and a bad --state-dir must be an error, not a hang.
 */
export function ensureDir(path: string): void {
  try {
    mkdirSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(path) === path) throw err;
    ensureDir(dirname(path));
    try {
      mkdirSync(path);
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    }
  }
}
