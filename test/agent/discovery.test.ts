/**
 * The watch follows the tree as kubelets change it while the agent runs: a
 * QoS slice made after start (and its pods), a QoS slice removed and made
 * again, a kubepods tree that appears after start under a kind-style nested
 * root. Each pod is attached (both programs) without waiting for a resync.
 * Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { queryCgroup } from '../../agent/kernel/bpf.ts';

const attached = (path: string) => queryCgroup(path, 'egress').length > 0 && queryCgroup(path, 'ingress').length > 0;
const podSlice = (qos: string) => `kubepods-${qos}-pod${randomUUID().replaceAll('-', '_')}.slice`;

test('QoS slices made, removed and made again while the agent runs; a kubepods tree that appears later', async (t) => {
  const root = makeTestCgroup(t);
  const kubepods = root.child('kubepods.slice');
  // --interval 3600: no resync rescue, only the watches count here.
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: ['--discover', 'pods', '--interval', '3600'],
  });
  const live = async () => (await agent.cgroups()).filter((c) => c.state === 'live').map((c) => c.cgroup);

  // A QoS slice made after start, with a pod made at once (before the slice's watch can exist) and one later.
  const qos = join(kubepods.path, 'kubepods-burstable.slice');
  mkdirSync(qos);
  const first = join(qos, podSlice('burstable'));
  mkdirSync(first);
  await waitFor('pod in a new QoS slice', () => (attached(first) ? true : undefined));
  const second = join(qos, podSlice('burstable'));
  mkdirSync(second);
  await waitFor('second pod', () => (attached(second) ? true : undefined));

  // The slice goes (its pods first) and comes back: its new pods are seen.
  rmdirSync(first);
  rmdirSync(second);
  rmdirSync(qos);
  await waitFor('pods gone', async () => ((await live()).length === 0 ? true : undefined));
  mkdirSync(qos);
  const third = join(qos, podSlice('burstable'));
  mkdirSync(third);
  await waitFor('pod in the remade QoS slice', () => (attached(third) ? true : undefined));

  // A guaranteed pod directly in kubepods.slice.
  const guaranteed = join(kubepods.path, `kubepods-pod${randomUUID().replaceAll('-', '_')}.slice`);
  mkdirSync(guaranteed);
  await waitFor('guaranteed pod', () => (attached(guaranteed) ? true : undefined));

  // kind: a node's kubelet tree made after start, nested under the root.
  const nested = root.child(`kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice`);
  const kindPod = join(nested.path, `kubelet-kubepods-besteffort-pod${randomUUID().replaceAll('-', '_')}.slice`);
  mkdirSync(kindPod);
  await waitFor('pod of a nested kubepods tree made after start', () => (attached(kindPod) ? true : undefined));
  const rel = (path: string) => path.slice(root.path.length + 1);
  assert.deepEqual((await live()).sort(), [third, guaranteed, kindPod].map(rel).sort());
});
