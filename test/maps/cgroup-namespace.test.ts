/**
 * The agent as a container runs it: in a private cgroup namespace (the
 * containerd and CRI-O default) rooted at its own cgroup, with its own cgroup2
 * mount (root `/`, as runc makes /sys/fs/cgroup) beside the host's tree that
 * the chart mounts. Other pods' processes then read `/../kubepods.slice/...`
 * in /proc/<pid>/cgroup; their maps must still be attributed to their pod.
 * Needs root, unshare (util-linux), /usr/bin/python3, cgroup v2 and bpffs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MapsView } from '../../agent/maps/routes.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import { MAP_TYPE, startHolder, uniqueComm } from '../helpers/mapHolder.ts';

/**
 * Runs bin/podmeter (appended by launchPodmeter) in cgroup `cgroup`, then in a
 * new cgroup and mount namespace with a cgroup2 mount of its own at `ownMount`.
 */
function inContainerNamespaces(cgroup: string, ownMount: string): string[] {
  const inner = 'mount -t cgroup2 cgroup2 "$0" && exec "$@"';
  const outer = `echo $$ > "$1/cgroup.procs" && own="$2" && shift 2 && exec unshare -C -m --propagation private sh -c '${inner}' "$own" "$@"`;
  return ['sh', '-c', outer, 'sh', cgroup, ownMount];
}

test('inside a private cgroup namespace the agent attributes maps of processes in other pods to their pod', async (t) => {
  const uid = randomUUID();
  const podRel = `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice`;
  const containerRel = `${podRel}/cri-containerd-${'cd'.repeat(32)}.scope`;
  const tree = makeTestCgroup(t);
  const container = tree.child(containerRel);
  // The agent's own container, in another pod (as the DaemonSet's pod is).
  const agentCgroup = tree.child(
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${randomUUID().replaceAll('-', '_')}.slice/cri-containerd-${'ef'.repeat(32)}.scope`,
  );
  const holder = await startHolder(t, { comm: uniqueComm('nspod'), cgroup: container });
  const map = await holder.create({ name: 'pmt_ns_pod', type: MAP_TYPE.array, key: 4, value: 8, max: 64 });

  const ownMount = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}own-cgroup-`));
  t.after(() => rmSync(ownMount, { recursive: true, force: true }));
  const agent = await startAgentProcess(t, {
    cgroupRoot: tree.top,
    args: ['--discover', 'pods', '--maps-interval', '1'],
    prefix: inContainerNamespaces(agentCgroup.path, ownMount),
  });
  // It really runs as in a container: its cgroup namespace root is its own cgroup, and the holder's path climbs.
  assert.equal(
    readFileSync(`/proc/${agent.child.pid}/cgroup`, 'utf8').match(/^0::(.*)$/m)?.[1],
    `/${agentCgroup.relPath}`,
  );
  const seenByAgent = execFileSync(
    'nsenter',
    ['-t', String(agent.child.pid), '-C', 'cat', `/proc/${holder.pid}/cgroup`],
    { encoding: 'utf8' },
  );
  assert.match(seenByAgent, /^0::\/\.\.\/\.\.\/\.\.\/kubepods-besteffort\.slice\//m);

  const view = await waitFor('an inventory with the pod map', async () => {
    const v = (await (await fetch(`${agent.url}/api/v1/maps`)).json()) as MapsView;
    return v.maps?.some((m) => m.id === map.id) ? v : undefined;
  });
  const proc = view.processes.find((p) => p.pid === holder.pid);
  assert.equal(proc?.cgroup, containerRel, `the holder's cgroup, relative to --cgroup-root: ${JSON.stringify(proc)}`);
  assert.equal(proc?.podUid, uid);
  assert.deepEqual(view.maps.find((m) => m.id === map.id)?.podUids, [uid]);
  assert.ok(
    view.byPod.some((p) => p.uid === uid && p.bytes >= map.memlock),
    JSON.stringify(view.byPod),
  );
});
