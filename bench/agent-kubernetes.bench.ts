/**
 * The agent's RSS in Kubernetes mode: the same 500 pod cgroups as
 * agent.bench.ts, with the agent connected to a real API server (pod watch,
 * budget ConfigMap watch, Node annotation) and scraped. The difference to
 * the standalone figure is what @kubernetes/client-node costs (it is loaded
 * only in this mode). Needs root and the test control plane (test/cluster).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { makeTestCgroup } from '../test/helpers/cgroups.ts';
import { startAgentProcess, waitFor } from '../test/helpers/agent.ts';
import { sleep } from '../test/helpers/cleanup.ts';
import { clusterWithNode } from '../test/helpers/kubeCluster.ts';

const PODS = 500;
const cleanups: (() => unknown)[] = [];
const root = makeTestCgroup(undefined);
try {
  const { cluster, node } = await clusterWithNode({ after: (fn: () => unknown) => void cleanups.push(fn) });
  const qos = root.child('kubepods.slice/kubepods-besteffort.slice');
  const agent = await startAgentProcess(undefined, { cgroupRoot: root.path, args: ['--discover', 'pods', '--kubeconfig', cluster.kubeconfig, '--node-name', node] });
  cleanups.push(() => agent.stop());
  for (let i = 0; i < PODS; i++) mkdirSync(`${qos.path}/kubepods-besteffort-pod${randomUUID().replaceAll('-', '_')}.slice`);
  await waitFor('all attached', async () => ((await agent.cgroups()).length >= PODS ? true : undefined), 60_000);
  await waitFor('node annotation', async () => ((await cluster.kubectl(['get', 'node', node, '-o', 'jsonpath={.metadata.annotations.podmeter\\.io/bpf-map-bytes}'])).stdout.trim() || undefined), 30_000);
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
  const samples: number[] = [];
  for (let i = 0; i < 4; i++) {
    await agent.metrics();
    samples.push(rss());
    await sleep(5_000);
  }
  const rssMiB = Math.max(...samples);
  console.log(`Kubernetes mode, ${PODS} pod cgroups, scraped: RSS ${rssMiB.toFixed(1)} MiB`);
  console.log(JSON.stringify({ bench: 'agent-kubernetes', pods: PODS, rssMiB }));
} finally {
  for (const fn of cleanups.reverse()) await fn();
  await root.remove();
}
