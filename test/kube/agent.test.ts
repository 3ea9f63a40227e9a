/**
 * The agent in Kubernetes mode against a real kube-apiserver: exact counts in
 * Pod annotations and labelled metrics, finals before a graceful deletion
 * completes, and an API outage under traffic that loses nothing.
 * Needs root, cgroup v2, bpffs, and the test control plane (test/cluster).
 */
import assert from 'node:assert/strict';
import { rmdirSync } from 'node:fs';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { sleep } from '../helpers/cleanup.ts';
import { annotations, clusterWithNode, makePod, must } from '../helpers/kubeCluster.ts';

test('Kubernetes mode: annotations, metrics labels, finals, API outage', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  await must(cluster.kubectl(['create', 'namespace', 'shop']));
  const root = makeTestCgroup(t);
  const web = await makePod(cluster, root, { name: 'web', namespace: 'shop', node });
  const db = await makePod(cluster, root, { name: 'db', namespace: 'shop', node });
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--kubeconfig',
      cluster.kubeconfig,
      '--node-name',
      node,
      '--annotate-interval',
      '1',
      '--annotate-budget',
      '20',
      '--interval',
      '1',
    ],
  });
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const N = 100;
  const P = 300;
  const one = udpDatagramBytes(4, P);

  await t.test('exact counts reach the Pod annotations and labelled metrics', async () => {
    await udpExchange({
      senderCgroup: web.container.path,
      receiverCgroup: db.container.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count: N,
      payload: P,
    });
    const a = await waitFor(
      'web annotations',
      async () => {
        const got = await annotations(cluster, 'pod', 'web', 'shop');
        return got['podmeter.io/egress-bytes'] === String(N * one) ? got : undefined;
      },
      15_000,
    );
    assert.equal(a['podmeter.io/egress-packets'], String(N));
    assert.equal(a['podmeter.io/ingress-bytes'], '0');
    assert.equal(a['podmeter.io/egress-external-bytes'], String(N * one), 'egress to the billed class');
    assert.equal(a['podmeter.io/egress-cross-zone-bytes'], undefined, 'no bytes to a class: no annotation');
    assert.ok(!Number.isNaN(Date.parse(a['podmeter.io/updated']!)));
    const b = await waitFor(
      'db annotations',
      async () => {
        const got = await annotations(cluster, 'pod', 'db', 'shop');
        return got['podmeter.io/ingress-bytes'] === String(N * one) ? got : undefined;
      },
      15_000,
    );
    assert.equal(b['podmeter.io/ingress-packets'], String(N));
    assert.equal(b['podmeter.io/egress-external-bytes'], undefined, 'classes are egress only');
    const metrics = await agent.metrics();
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', {
        namespace: 'shop',
        pod: 'web',
        uid: web.uid,
        direction: 'egress',
      }),
      N * one,
    );
    assert.equal(
      sample(metrics, 'podmeter_pod_network_packets_total', { namespace: 'shop', pod: 'db', direction: 'ingress' }),
      N,
    );
    // The Node carries the node's BPF map memory.
    const nodeNote = await waitFor(
      'node annotation',
      async () => (await annotations(cluster, 'node', node))['podmeter.io/bpf-map-bytes'],
      15_000,
    );
    assert.ok(Number(nodeNote) > 0);
  });

  await t.test('API server stopped under traffic: counting goes on, annotations converge', async () => {
    await cluster.stopApiserver();
    const during = udpExchange({
      senderCgroup: web.container.path,
      receiverCgroup: db.container.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count: N,
      payload: P,
    });
    await during;
    const metrics = await agent.metrics();
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', {
        uid: web.uid,
        direction: 'egress',
        namespace: 'shop',
        pod: 'web',
      }),
      2 * N * one,
      'counting and metrics go on while the API is away',
    );
    await sleep(29_000); // a 30 s outage in all
    await cluster.startApiserver();
    await waitFor(
      'annotations converge',
      async () => {
        const got = await annotations(cluster, 'pod', 'web', 'shop');
        return got['podmeter.io/egress-bytes'] === String(2 * N * one) ? true : undefined;
      },
      60_000,
    );
    assert.equal(agent.child.exitCode, null, 'agent still running');
    // The pod watch came back too: a Pod created after the outage is known and annotated.
    const late = await makePod(cluster, root, { name: 'late', namespace: 'shop', node });
    await udpExchange({
      senderCgroup: late.container.path,
      receiverCgroup: db.container.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count: 5,
      payload: P,
    });
    await waitFor(
      'late pod annotated',
      async () => {
        const got = await annotations(cluster, 'pod', 'late', 'shop');
        return got['podmeter.io/egress-bytes'] === String(5 * one) ? true : undefined;
      },
      45_000,
    );
    const outageLogs = agent.logs.filter((l) => String(l.msg).startsWith('annotation writes failing'));
    assert.equal(outageLogs.length, 1, 'one log line per outage');
  });

  await t.test('graceful deletion: the final counts reach the Pod before it goes', async () => {
    await must(cluster.kubectl(['delete', 'pod', 'db', '-n', 'shop', '--grace-period=60', '--wait=false']));
    // The "kubelet" stops the pod: last traffic, then its cgroup goes.
    await udpExchange({
      senderCgroup: db.container.path,
      receiverCgroup: web.container.path,
      ...topo.toPeer('external', 6),
      family: 6,
      count: 10,
      payload: 100,
    });
    await sleep(200);
    rmdirSync(db.container.path);
    rmdirSync(db.podCgroup);
    const final = await waitFor(
      'final annotation',
      async () => {
        const got = await annotations(cluster, 'pod', 'db', 'shop');
        return got['podmeter.io/egress-bytes'] === String(10 * udpDatagramBytes(6, 100)) ? got : undefined;
      },
      15_000,
    );
    assert.equal(final['podmeter.io/ingress-bytes'], String(2 * N * one + 5 * one)); // web twice, then the late pod
    assert.equal(final['podmeter.io/egress-external-bytes'], String(10 * udpDatagramBytes(6, 100)));
    const retained = (await agent.cgroups()).find((c) => c.uid === db.uid);
    assert.equal(retained?.state, 'terminated');
    assert.equal(retained?.pod, 'db');
    await must(cluster.kubectl(['delete', 'pod', 'db', '-n', 'shop', '--grace-period=0', '--force']));
  });
});
