/**
 * The agent's RSS and CPU in Kubernetes mode at 500 pods: 500 Pod objects
 * bound to the agent's node in a real API server, a pod cgroup named after
 * each one's uid (as the kubelet makes them), the agent watching them,
 * annotating them and the Node, and scraped. Target: RSS <= 80 MiB, CPU <= 1 %
 * of a core. Needs root and the test control plane (test/cluster).
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
import { startAgentProcess } from '../test/helpers/agent.ts';
import { waitFor } from '../test/helpers/poll.ts';
import { sleep } from '../test/helpers/cleanup.ts';
import { clusterWithNode, must } from '../test/helpers/kubeCluster.ts';

const PODS = 500;
const cleanups: (() => unknown)[] = [];
const root = makeTestCgroup(undefined);
try {
  const { cluster, node } = await clusterWithNode({ after: (fn: () => unknown) => void cleanups.push(fn) });
  const qos = root.child('kubepods.slice/kubepods-besteffort.slice');
  const pods = Array.from({ length: PODS }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `bench-${i}`, namespace: 'default' },
    spec: { nodeName: node, containers: [{ name: 'app', image: 'example.invalid/app' }] },
  }));
  await must(
    cluster.kubectl(['create', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods }) }),
  );
  const uids = (
    await must(cluster.kubectl(['get', 'pods', '-n', 'default', '-o', 'jsonpath={.items[*].metadata.uid}']))
  )
    .trim()
    .split(' ');
  if (uids.length !== PODS) throw new Error(`${uids.length} pods, expected ${PODS}`);
  const agent = await startAgentProcess(undefined, {
    cgroupRoot: root.path,
    args: ['--discover', 'pods', '--kubeconfig', cluster.kubeconfig, '--node-name', node, '--annotate-budget', '50'],
  });
  cleanups.push(() => agent.stop());
  for (const uid of uids) mkdirSync(`${qos.path}/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice`);
  await waitFor('all attached', async () => ((await agent.cgroups()).length >= PODS ? true : undefined), 60_000);
  await waitFor(
    'node annotation',
    async () =>
      (
        await cluster.kubectl([
          'get',
          'node',
          node,
          '-o',
          'jsonpath={.metadata.annotations.podmeter\\.io/bpf-map-bytes}',
        ])
      ).stdout.trim() || undefined,
    30_000,
  );
  // Every pod named in the metrics (the pod watch holds all 500) and annotated.
  await waitFor(
    'pods named',
    async () =>
      ((await agent.metrics()).match(/podmeter_pod_network_bytes_total\{namespace="default",pod="bench-/g)?.length ??
        0) >=
        2 * PODS || undefined,
    120_000,
  );
  await waitFor(
    'pods annotated',
    async () => {
      const out = (
        await cluster.kubectl([
          'get',
          'pods',
          '-n',
          'default',
          '-o',
          'jsonpath={.items[*].metadata.annotations.podmeter\\.io/ingress-bytes}',
        ])
      ).stdout.trim();
      return out.split(' ').filter((v) => v !== '').length >= PODS || undefined;
    },
    300_000,
  );
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
  const cpuTicks = () => {
    const f = readFileSync(`/proc/${agent.child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const ticks0 = cpuTicks();
  const t0 = performance.now();
  const samples: number[] = [];
  for (let i = 0; i < 4; i++) {
    await agent.metrics();
    samples.push(rss());
    await sleep(15_000);
  }
  const cpuPercent = ((cpuTicks() - ticks0) / 100 / ((performance.now() - t0) / 1000)) * 100; // USER_HZ = 100
  const rssMiB = Math.max(...samples);
  console.log(
    `Kubernetes mode, ${PODS} pods (Pod objects watched and annotated), scraped every 15 s over 60 s: RSS ${rssMiB.toFixed(1)} MiB (target <= 80), CPU ${cpuPercent.toFixed(2)}% of a core (target <= 1%)`,
  );
  console.log(JSON.stringify({ bench: 'agent-kubernetes', pods: PODS, rssMiB, cpuPercent }));
} finally {
  for (const fn of cleanups.reverse()) await fn();
  await root.remove();
}
