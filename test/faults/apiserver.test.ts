/**
 * The apiserver misbehaving under a Kubernetes-mode agent, through a fault
 * proxy (test/helpers/faultProxy.ts) in front of the real kube-apiserver:
 * a pod watch that goes silent without a TCP reset (the watchdog,
 * --pod-watch-idle-timeout, must drop it), 5 s of latency on every byte,
 * 429 with Retry-After (honoured) and 500s. Counting, /metrics and /healthz
 * go on; failures are logged once per outage; annotations resume with the
 * exact values. Needs root, cgroup v2, bpffs, and the test control plane.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';
import { annotations, clusterWithNode, makePod, must } from '../helpers/kubeCluster.ts';
import { proxiedKubeconfig, startFaultProxy, startHttpFaultProxy } from '../helpers/faultProxy.ts';
import { healthy } from './pair.ts';

const P = 300;
const ONE = udpDatagramBytes(4, P);
const IDLE_S = 5;

/** Datagrams from a pod to db (through a veth, class external), and a wait for a pod's exact egress annotations. */
function exchanges(
  t: Parameters<typeof makeTopology>[0],
  cluster: Awaited<ReturnType<typeof clusterWithNode>>['cluster'],
  db: { container: { path: string } },
) {
  const topo = makeTopology(t);
  const send = (from: { path: string }, count: number) =>
    udpExchange({
      senderCgroup: from.path,
      receiverCgroup: db.container.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count,
      payload: P,
    });
  const annotated = (pod: string, datagrams: number, deadlineMs: number) =>
    waitFor(
      `${pod} annotated with ${datagrams} datagrams`,
      async () => {
        const got = await annotations(cluster, 'pod', pod, 'shop');
        return got['podmeter.io/egress-bytes'] === String(datagrams * ONE) &&
          got['podmeter.io/egress-packets'] === String(datagrams)
          ? got
          : undefined;
      },
      deadlineMs,
    );
  return { send, annotated };
}

test('apiserver faults through a proxy: a silent pod watch, 5 s latency', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  await must(cluster.kubectl(['create', 'namespace', 'shop']));
  const root = makeTestCgroup(t);
  const web = await makePod(cluster, root, { name: 'web', namespace: 'shop', node });
  const db = await makePod(cluster, root, { name: 'db', namespace: 'shop', node });
  const proxy = await startFaultProxy(t, cluster.server);
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--kubeconfig',
      proxiedKubeconfig(cluster, proxy, dir),
      '--node-name',
      node,
      '--annotate-interval',
      '1',
      '--annotate-budget',
      '20',
      '--interval',
      '1',
      '--pod-watch-idle-timeout',
      String(IDLE_S),
    ],
  });
  const { send, annotated } = exchanges(t, cluster, db);

  await send(web.container, 100);
  await annotated('web', 100, 30_000);
  await waitFor('pod watch up', () => agent.logs.find((l) => l.msg === "watching this node's pods"));

  await t.test(
    'a pod watch silent without a reset: the watchdog drops it, a pod created meanwhile is annotated exactly',
    async () => {
      proxy.stall(); // every open connection, the pod watch's included, goes silent; new ones pass
      const late = await makePod(cluster, root, { name: 'late', namespace: 'shop', node });
      await send(late.container, 40);
      await healthy(agent);
      const metrics = await agent.metrics();
      assert.equal(
        sample(metrics, 'podmeter_pod_network_bytes_total', {
          uid: web.uid,
          direction: 'egress',
          namespace: 'shop',
          pod: 'web',
        }),
        100 * ONE,
      );
      // Only a new watch can tell the agent about `late` (its ADDED event is stuck in the stalled one).
      await annotated('late', 40, 120_000);
      const fired = agent.logs.filter(
        (l) => l.path === '/api/v1/pods' && String(l.err).includes(`no data for ${IDLE_S * 1000} ms`),
      );
      assert.ok(fired.length >= 1, 'the watchdog dropped the silent watch');
      // Logged once per outage, not per retry: never two warnings without a recovery between them.
      const warnings = agent.logs.filter(
        (l) => l.path === '/api/v1/pods' && l.msg === 'list/watch failed; retrying' && l.level === 40,
      ).length;
      const recoveries = agent.logs.filter(
        (l) => l.path === '/api/v1/pods' && l.msg === 'list/watch works again',
      ).length;
      assert.ok(warnings <= recoveries + 1, `${warnings} warnings, ${recoveries} recoveries`);
      await send(web.container, 10);
      await annotated('web', 110, 60_000);
    },
  );

  await t.test('5 s latency on every byte: counting and /metrics go on, annotations converge exactly', async () => {
    proxy.delay(5000);
    await send(web.container, 20);
    await healthy(agent);
    assert.equal(
      sample(await agent.metrics(), 'podmeter_pod_network_packets_total', {
        uid: web.uid,
        direction: 'egress',
        namespace: 'shop',
        pod: 'web',
      }),
      130,
    );
    await annotated('web', 130, 180_000);
    proxy.delay(0);
    await send(web.container, 5);
    await annotated('web', 135, 60_000);
    assert.equal(agent.child.exitCode, null, 'agent still running');
  });
});

test('apiserver answering 429 with Retry-After, then 500s: Retry-After honoured, logged once per outage, annotations converge exactly', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  await must(cluster.kubectl(['create', 'namespace', 'shop']));
  const root = makeTestCgroup(t);
  const web = await makePod(cluster, root, { name: 'web', namespace: 'shop', node });
  const db = await makePod(cluster, root, { name: 'db', namespace: 'shop', node });
  const dir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const proxy = await startHttpFaultProxy(t, cluster, dir);
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    // A short watchdog: the idle pod watch is asked for again often, so the 500s reach it too.
    args: [
      '--kubeconfig',
      proxy.kubeconfig,
      '--node-name',
      node,
      '--annotate-interval',
      '1',
      '--annotate-budget',
      '20',
      '--interval',
      '1',
      '--pod-watch-idle-timeout',
      '3',
    ],
  });
  const { send, annotated } = exchanges(t, cluster, db);
  const injected = (method: string, prefix: string) =>
    proxy.requests.filter((r) => r.injected && r.method === method && r.path.startsWith(prefix));
  const writesFailing = () => agent.logs.filter((l) => String(l.msg).startsWith('annotation writes failing')).length;

  await send(web.container, 100);
  await annotated('web', 100, 30_000);

  // 429 on the annotation writes, Retry-After 4 s.
  proxy.fault({
    status: 429,
    retryAfterS: 4,
    match: (method, path) => method === 'PATCH' && path.startsWith('/api/v1/namespaces/shop/pods/'),
  });
  await send(web.container, 20);
  const throttled = await waitFor(
    'three throttled writes',
    () => {
      const got = injected('PATCH', '/api/v1/namespaces/shop/pods/');
      return got.length >= 3 ? got : undefined;
    },
    60_000,
  );
  for (let i = 1; i < throttled.length; i++) {
    const gap = throttled[i]!.at - throttled[i - 1]!.at;
    assert.ok(gap >= 3500, `a write retried ${gap} ms after a 429 with Retry-After: 4`);
  }
  await healthy(agent);
  assert.equal(
    sample(await agent.metrics(), 'podmeter_pod_network_packets_total', {
      uid: web.uid,
      direction: 'egress',
      namespace: 'shop',
      pod: 'web',
    }),
    120,
  );
  assert.equal(writesFailing(), 1, 'one log line for the outage, not one per retry');
  proxy.fault(undefined);
  await annotated('web', 120, 60_000);

  // 500 on every request: writes, lists and watches.
  proxy.fault({ status: 500 });
  await send(web.container, 10);
  await waitFor(
    '500s on writes and on the pod watch',
    () =>
      injected('PATCH', '/api/v1/namespaces/shop/pods/').length >= 2 && injected('GET', '/api/v1/pods').length >= 2
        ? true
        : undefined,
    90_000,
  );
  await healthy(agent);
  assert.equal(
    sample(await agent.metrics(), 'podmeter_pod_network_packets_total', {
      uid: web.uid,
      direction: 'egress',
      namespace: 'shop',
      pod: 'web',
    }),
    130,
  );
  proxy.fault(undefined);
  await annotated('web', 130, 90_000);
  assert.equal(writesFailing(), 2, 'one log line per outage');
  const warnings = agent.logs.filter(
    (l) => l.path === '/api/v1/pods' && l.msg === 'list/watch failed; retrying' && l.level === 40,
  ).length;
  const recoveries = agent.logs.filter((l) => l.path === '/api/v1/pods' && l.msg === 'list/watch works again').length;
  assert.ok(warnings <= recoveries + 1, `${warnings} warnings, ${recoveries} recoveries`);
  // The pod watch works again: a pod created now is known and annotated.
  const late = await makePod(cluster, root, { name: 'late', namespace: 'shop', node });
  await send(late.container, 7);
  await annotated('late', 7, 60_000);
});
