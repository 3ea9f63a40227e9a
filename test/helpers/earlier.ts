/**
 * An earlier version of podmeter's BPF object, and the pins its agent
 * leaves, for the in-place upgrade (agent/counting/upgrade.ts).
 *
 *   buildEarlier(t?): string
 *     bpf/podmeter.bpf.c built with -DPODMETER_TEST_EARLIER (the Makefile's
 *     clang line) into a podmeter-test- temporary directory, removed after
 *     the test (t) and on SIGINT/SIGTERM: other code, the same counts, no
 *     podmeter_gen. Returns the object's path. Needs clang.
 *
 *   pinAsAgent(pins, objectPath, cgroups)
 *     What an agent of that object leaves in `pins`: its programs and maps
 *     (those it has) pinned under the contract's names, and both links of
 *     each cgroup pinned at links/<cgroup id>_<direction>. No fd stays open.
 *
 *   pinLinks(pins, cgroup, program(direction))
 *     Attaches a program per direction to `cgroup` and pins the links there.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAP_KEYS, takeMap, type PinDir } from '../../agent/counting/pins.ts';
import { attachCgroup, BpfObject, DIRECTIONS, type Direction, type Program } from '../../agent/kernel/bpf.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../../agent/kernel/contract.generated.ts';
import { afterOrSignal, TEST_PREFIX, type AfterHook } from './cleanup.ts';
import type { CgroupDir } from './cgroups.ts';

const SOURCE = new URL('../../bpf/podmeter.bpf.c', import.meta.url).pathname;

export function buildEarlier(t?: AfterHook): string {
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  afterOrSignal(t, () => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'podmeter-earlier.bpf.o');
  const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  const flags = ['-g', '-O2', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`];
  execFileSync('clang', [...flags, '-DPODMETER_TEST_EARLIER', '-c', SOURCE, '-o', out]);
  return out;
}

export function pinAsAgent(pins: PinDir, objectPath: string, cgroups: readonly CgroupDir[]): void {
  const object = BpfObject.load(objectPath);
  try {
    pins.ensure();
    const program = (d: Direction) => object.program(PODMETER_PROGRAMS[d].name);
    for (const d of DIRECTIONS) program(d).pin(pins.program(d));
    for (const key of MAP_KEYS) {
      if (!object.mapFds.has(PODMETER_MAPS[key].name)) continue;
      const map = takeMap(object, key);
      try {
        map.pin(pins.map(key));
      } finally {
        map.close();
      }
    }
    for (const cgroup of cgroups) pinLinks(pins, cgroup, program);
  } finally {
    object.close();
  }
}

export function pinLinks(pins: PinDir, cgroup: CgroupDir, program: (d: Direction) => Program): void {
  for (const d of DIRECTIONS) {
    const link = attachCgroup({ cgroupPath: cgroup.path, program: program(d) });
    try {
      link.pin(pins.link(cgroup.id, d));
    } finally {
      link.close();
    }
  }
}
