/**
 * Layout of podmeter's bpffs directory. Pins keep programs, the storage map
 * and every cgroup link alive when the agent exits, so a restarted agent
 * adopts them and counters continue where they were:
 *
 *   <bpffs>/prog_ingress, prog_egress   the two cgroup_skb programs
 *   <bpffs>/map_stats                   the per-CPU cgroup storage map
 *   <bpffs>/links/<cgroup id>_<direction>
 */
import { readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Direction } from '../kernel/bpf.ts';
import { assertBpffsDir } from '../kernel/bpf.ts';
import { ensureDir } from '../files.ts';

export interface LinkPin {
  cgroupId: bigint;
  direction: Direction;
  path: string;
}

export class PinDir {
  readonly root: string;
  readonly linksDir: string;

  constructor(root: string) {
    this.root = root;
    this.linksDir = join(root, 'links');
  }

  /** Creates the directories; the parent must already be a mounted bpffs. */
  ensure(): void {
    const parent = join(this.root, '..');
    assertBpffsDir(parent, 'bpffs directory (--bpffs) parent');
    ensureDir(this.linksDir);
    assertBpffsDir(this.root, 'bpffs directory (--bpffs)');
  }

  program(direction: Direction): string {
    return join(this.root, `prog_${direction}`);
  }

  get map(): string {
    return join(this.root, 'map_stats');
  }

  link(cgroupId: bigint, direction: Direction): string {
    return join(this.linksDir, `${cgroupId}_${direction}`);
  }

  listLinks(): LinkPin[] {
    const pins: LinkPin[] = [];
    let names: string[];
    try {
      names = readdirSync(this.linksDir);
    } catch {
      return pins;
    }
    for (const name of names) {
      const m = /^(\d+)_(ingress|egress)$/.exec(name);
      if (m) pins.push({ cgroupId: BigInt(m[1]!), direction: m[2] as Direction, path: join(this.linksDir, name) });
    }
    return pins;
  }

  /** Removes a pin; a pin already gone is fine. */
  static unpin(path: string): void {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Removes every pin and the directories (used by `podmeter agent --uninstall` and tests). */
  removeAll(): void {
    for (const pin of this.listLinks()) PinDir.unpin(pin.path);
    for (const path of [this.program('ingress'), this.program('egress'), this.map]) PinDir.unpin(path);
    for (const dir of [this.linksDir, this.root]) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty (someone else's files) or already gone: leave it
      }
    }
  }
}
