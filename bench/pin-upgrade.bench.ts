/**
 * What the in-place upgrade (agent/counting/upgrade.ts) costs at start, with
 * CGROUPS cgroups counted (two pinned links each):
 *  - a start over pins of the same version (the fast path: the object is
 *    loaded over the pinned maps to compare programs, then dropped): median
 *    of RUNS Meter.open + close, and of the object load alone;
 *  - a start over an earlier version's pins (test/helpers/earlier.ts): every
 *    link moved, the program pins replaced: median of UPGRADES.
 *
 *   node bench/pin-upgrade.bench.ts        (CGROUPS=500 RUNS=20 UPGRADES=5 by default)
 *
 * Needs root, cgroup v2, bpffs and clang. Removes its cgroups and pins at the
 * end (on Ctrl-C too). Prints figures and a final JSON line.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { Meter } from '../agent/counting/meter.ts';
import { MAP_KEYS, PinDir } from '../agent/counting/pins.ts';
import { BpfMap, BpfObject, bpfObjectPath, type MapObject } from '../agent/kernel/bpf.ts';
import { PODMETER_MAPS } from '../agent/kernel/contract.generated.ts';
import { attachMeter } from '../test/helpers/bpf.ts';
import { makeBpffsDir } from '../test/helpers/bpffs.ts';
import { makeTestCgroup, type CgroupDir } from '../test/helpers/cgroups.ts';
import { runMain } from '../test/helpers/cleanup.ts';
import { buildEarlier, pinAsAgent } from '../test/helpers/earlier.ts';
import { median } from './stats.ts';
import { yieldToSignals } from './timing.ts';

const CGROUPS = Number(process.env.CGROUPS ?? 500);
const RUNS = Number(process.env.RUNS ?? 20);
const UPGRADES = Number(process.env.UPGRADES ?? 5);
const silent = pino({ level: 'silent' });

function ms(fn: () => void): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

await runMain(async () => {
  const parent = makeTestCgroup(undefined);
  const cgroups: CgroupDir[] = Array.from({ length: CGROUPS }, (_, i) => parent.child(`c${i}`));

  // Same version: the pins one agent left, opened again and again.
  const same = new PinDir(join(makeBpffsDir().path, 'podmeter'));
  const first = Meter.open(same.root, silent);
  for (const c of cgroups) attachMeter(first, c);
  first.close();
  const fastPath: number[] = [];
  const loadOnly: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    fastPath.push(ms(() => Meter.open(same.root, silent).close()));
    const reuse = new Map<string, MapObject>(MAP_KEYS.map((k) => [PODMETER_MAPS[k].name, BpfMap.fromPin(same.map(k))]));
    loadOnly.push(ms(() => BpfObject.load(bpfObjectPath('podmeter'), reuse).close()));
    for (const map of reuse.values()) map.close();
  }
  same.removeAll();
  await yieldToSignals();

  // An earlier version's pins: every link moved.
  const earlier = buildEarlier();
  const upgrade: number[] = [];
  for (let i = 0; i < UPGRADES; i++) {
    const pins = new PinDir(join(makeBpffsDir().path, 'podmeter'));
    pinAsAgent(pins, earlier, cgroups);
    upgrade.push(ms(() => Meter.open(pins.root, silent).close()));
    pins.removeAll();
    await yieldToSignals();
  }

  const figures = {
    cgroups: CGROUPS,
    links: 2 * CGROUPS,
    fastPathMs: median(fastPath),
    objectLoadMs: median(loadOnly),
    upgradeMs: median(upgrade),
    upgradeUsPerLink: (median(upgrade) * 1000) / (2 * CGROUPS),
  };
  console.log(
    `start over pins of the same version (fast path), ${CGROUPS} cgroups: ${figures.fastPathMs.toFixed(1)} ms median of ${RUNS}`,
  );
  console.log(`  of which the object load over the pinned maps: ${figures.objectLoadMs.toFixed(1)} ms`);
  console.log(
    `start over an earlier version's pins (upgrade, ${2 * CGROUPS} links moved): ${figures.upgradeMs.toFixed(1)} ms median of ${UPGRADES} (${figures.upgradeUsPerLink.toFixed(1)} µs per link)`,
  );
  console.log(JSON.stringify(figures));
});
