/**
 * Cost of the agent's check for links detached under it (Links.detached(),
 * at every --interval: one native call, Link.cgroupIds, with one
 * BPF_OBJ_GET_INFO_BY_FD per held link), and of putting one cgroup's
 * detached link back (Links.reattach()).
 *
 *   node --no-opt --no-maglev bench/link-check.bench.ts    (CGROUPS=500, i.e. 1,000 held links, by default)
 *
 * (The flags are the agent's: bin/podmeter runs it without V8's optimising
 * compilers, and the check is interpreted JavaScript around the addon.)
 *
 * Creates CGROUPS test cgroups under one podmeter-test- parent and attaches
 * podmeter's programs to each through the agent's Links (pinned in a
 * podmeter-test- bpffs dir, fds held), times the check, detaches one link
 * (BPF_LINK_DETACH, as another tool would) and times the check that finds
 * it and the re-attach; then releases every link and removes the cgroups
 * and pins (on Ctrl-C too). Prints figures and a final JSON line.
 */
import { loadavg, release } from 'node:os';
import { Links } from '../agent/counting/links.ts';
import { PinDir } from '../agent/counting/pins.ts';
import { Cgroup } from '../agent/kernel/bpf.ts';
import { loadPodmeter } from '../test/helpers/bpf.ts';
import { makeBpffsDir } from '../test/helpers/bpffs.ts';
import { makeTestCgroup, type CgroupDir } from '../test/helpers/cgroups.ts';
import { runMain } from '../test/helpers/cleanup.ts';
import { median } from './stats.ts';
import { timed, yieldToSignals } from './timing.ts';

const CGROUPS = Number(process.env.CGROUPS ?? 500);
const ROUNDS = 21;

await runMain(async () => {
  const parent = makeTestCgroup();
  const dir = makeBpffsDir();
  const pm = loadPodmeter();
  const pins = new PinDir(`${dir.path}/podmeter`);
  pins.ensure();
  const links = new Links(pins, pm.programs);
  const cgroups: CgroupDir[] = [];
  try {
    for (let i = 0; i < CGROUPS; i++) cgroups.push(parent.child(`cg-${String(i).padStart(4, '0')}`));
    for (const cg of cgroups) {
      const cgroup = Cgroup.open(cg.path);
      try {
        links.attach(cgroup);
      } finally {
        cgroup.close();
      }
    }
    const held = [...links.held().values()].reduce((n, l) => n + l.length, 0);
    console.log(
      `link-check: ${CGROUPS} cgroups, ${held} held links; kernel ${release()}; load average ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );

    for (let i = 0; i < 3; i++) links.detached(); // warm-up
    const checks: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await yieldToSignals();
      const { ms, value } = timed(() => links.detached());
      if (value.length !== 0) throw new Error(`found ${value.length} detached, none was`);
      checks.push(ms);
    }

    // Another tool detaches one link; the next check finds it and the cgroup gets a new link.
    const victim = cgroups[CGROUPS >> 1]!;
    links.held().get(victim.id)![1]!.detach();
    const found = timed(() => links.detached());
    if (found.value.length !== 1 || found.value[0] !== victim.id) throw new Error(`found ${found.value.join(',')}`);
    const cgroup = Cgroup.open(victim.path);
    const reattach = timed(() => links.reattach(cgroup));
    cgroup.close();
    if (links.detached().length !== 0) throw new Error('still detached after reattach');

    const result = {
      bench: 'link-check',
      cgroups: CGROUPS,
      heldLinks: held,
      kernel: release(),
      checkMsMedian: median(checks),
      checkMsMax: Math.max(...checks),
      checkUsPerLink: (median(checks) * 1000) / held,
      checkFindingOneMs: found.ms,
      reattachOneMs: reattach.ms,
    };
    console.log(
      `check of ${held} held links: ${result.checkMsMedian.toFixed(2)} ms (median of ${ROUNDS}, max ${result.checkMsMax.toFixed(2)}; ${result.checkUsPerLink.toFixed(2)} µs a link)`,
    );
    console.log(
      `one link detached: the check finding it ${found.ms.toFixed(2)} ms; its new link attached and pinned ${reattach.ms.toFixed(2)} ms`,
    );
    console.log(JSON.stringify(result));
  } finally {
    for (const cg of cgroups) links.release(cg.id);
    links.close();
    pm.close();
    await parent.remove();
    await dir.remove();
  }
});
