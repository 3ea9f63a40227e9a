/**
 * Cost of reading podmeter's counters from user space: µs per
 * StatsMap.readUnit (one cgroup, both directions, every slot summed over
 * CPUs), the time to read 1,000 cgroups that way, and to read them all in
 * one StatsMap.readUnits call (the map checked once, not per cgroup: the
 * agent's read on every interval and scrape).
 *
 *   node bench/read-counters.bench.ts       (CGROUPS=1000 REPEAT=20000 by default)
 *
 * Creates CGROUPS test cgroups under one podmeter-test- parent, attaches
 * ingress + egress links to each, reads, then closes every link and removes
 * every cgroup (on Ctrl-C too). Prints figures and a final JSON line.
 */
import { performance } from 'node:perf_hooks';
import { availableParallelism, release } from 'node:os';
import { possibleCpus, type Link } from '../agent/kernel/bpf.ts';
import { loadPodmeter } from '../test/helpers/bpf.ts';
import { makeTestCgroup, type CgroupDir } from '../test/helpers/cgroups.ts';
import { runMain } from '../test/helpers/cleanup.ts';
import { median } from './stats.ts';
import { timed, yieldToSignals } from './timing.ts';

const CGROUPS = Number(process.env.CGROUPS ?? 1000);
const REPEAT = Number(process.env.REPEAT ?? 20_000);

await runMain(async () => {
  console.log(
    `read-counters: ${CGROUPS} cgroups, ${possibleCpus()} possible CPUs (${availableParallelism()} online); kernel ${release()}`,
  );
  const parent = makeTestCgroup();
  const pm = loadPodmeter();
  const map = pm.stats!;

  const created = timed(() => {
    const out: CgroupDir[] = [];
    for (let i = 0; i < CGROUPS; i++) out.push(parent.child(`cg-${String(i).padStart(4, '0')}`));
    return out;
  });
  const cgroups = created.value;
  await yieldToSignals();
  const links: Link[] = [];
  const attached = timed(() => {
    for (const cg of cgroups) links.push(...Object.values(pm.attach(cg.path)));
  });
  await yieldToSignals();
  console.log(
    `setup: mkdir ${CGROUPS} cgroups ${created.ms.toFixed(0)} ms; attach ${links.length} links ${attached.ms.toFixed(0)} ms (${((attached.ms * 1000) / links.length).toFixed(1)} µs each)`,
  );

  // One cgroup, one direction, REPEAT times (after a warm-up).
  const one = cgroups[0]!.id;
  for (let i = 0; i < 1000; i++) map.readUnit(one);
  const single: number[] = [];
  const singleLookup: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    await yieldToSignals();
    single.push(
      (timed(() => {
        for (let i = 0; i < REPEAT; i++) map.readUnit(one);
      }).ms *
        1000) /
        REPEAT,
    );
    singleLookup.push(
      (timed(() => {
        for (let i = 0; i < REPEAT; i++) map.lookup(one, 'egress');
      }).ms *
        1000) /
        REPEAT,
    );
  }

  // Every cgroup, both directions: what one agent interval costs.
  const all: number[] = [];
  let entries = 0;
  for (let rep = 0; rep < 7; rep++) {
    await yieldToSignals();
    all.push(
      timed(() => {
        entries = 0;
        for (const cg of cgroups) {
          if (map.readUnit(cg.id) !== undefined) entries++;
        }
      }).ms,
    );
  }
  if (entries !== CGROUPS) throw new Error(`read ${entries} cgroups, expected ${CGROUPS}`);
  // The same in one call, as the agent reads (StatsMap.readUnits).
  const ids = cgroups.map((cg) => cg.id);
  const none = ids.map(() => undefined);
  const batch: number[] = [];
  for (let rep = 0; rep < 7; rep++) {
    await yieldToSignals();
    batch.push(
      timed(() => {
        entries = map.readUnits(ids, none).filter((sums) => sums !== undefined).length;
      }).ms,
    );
  }
  if (entries !== CGROUPS) throw new Error(`readUnits read ${entries} cgroups, expected ${CGROUPS}`);
  const keys = timed(() => map.keys());
  if (keys.value.length !== 2 * CGROUPS)
    throw new Error(`keys() returned ${keys.value.length}, expected ${2 * CGROUPS}`);

  const detached = timed(() => {
    for (const l of links.splice(0)) l.close();
  });
  const removed = performance.now();
  await parent.remove();
  const removedMs = performance.now() - removed;
  pm.close();

  const result = {
    bench: 'read-counters',
    cgroups: CGROUPS,
    possibleCpus: possibleCpus(),
    kernel: release(),
    readUsMedian: median(single),
    lookupPerCpuUsMedian: median(singleLookup),
    readAllMsMedian: median(all),
    readAllUsPerCgroup: (median(all) * 1000) / CGROUPS,
    readUnitsMsMedian: median(batch),
    keysMs: keys.ms,
    setupMs: { mkdir: created.ms, attach: attached.ms, closeLinks: detached.ms, rmdir: removedMs },
  };
  console.log(
    `StatsMap.readUnit, one cgroup, both directions: ${result.readUsMedian.toFixed(2)} µs (median of 5 x ${REPEAT}); lookup (one direction, per-CPU array): ${result.lookupPerCpuUsMedian.toFixed(2)} µs`,
  );
  console.log(
    `read ${CGROUPS} cgroups (both directions): ${result.readAllMsMedian.toFixed(2)} ms (median of 7; ${result.readAllUsPerCgroup.toFixed(2)} µs per cgroup)`,
  );
  console.log(
    `read ${CGROUPS} cgroups in one readUnits call: ${result.readUnitsMsMedian.toFixed(2)} ms (median of 7; ${((result.readUnitsMsMedian * 1000) / CGROUPS).toFixed(2)} µs per cgroup)`,
  );
  console.log(`keys() over ${keys.value.length} entries: ${keys.ms.toFixed(2)} ms`);
  console.log(
    `cleanup: close ${2 * CGROUPS} links ${detached.ms.toFixed(0)} ms; rmdir ${CGROUPS + 1} cgroups ${removedMs.toFixed(0)} ms`,
  );
  console.log(JSON.stringify(result));
});
