/**
 * Peer classes from the cluster: Node objects (zone/region labels, podCIDRs,
 * addresses) and ServiceCIDRs in a real kube-apiserver drive the agent's
 * classes; a node relabelled or joining moves later packets within 5 s while
 * the packets already counted stay where they were. Without the ServiceCIDR
 * API (404) the classes from Nodes are published all the same.
 * Needs root, cgroup v2, bpffs, and the test control plane (test/cluster).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { ADDRESSES, CIDRS, makeTopology, type Peer } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange, type Family } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { randomSuffix } from '../helpers/cleanup.ts';
import { clusterWithNode, makePod, must } from '../helpers/kubeCluster.ts';
import { sleep } from '../helpers/cleanup.ts';
import { startCluster } from '../cluster/cluster.ts';
import { pino } from 'pino';
import { KubeApi } from '../../common/kube/api.ts';
import { loadConnection } from '../../common/kube/connection.ts';
import { watchClusterPeers } from '../../agent/peers/cluster.ts';
import type { Prefix } from '../../agent/peers/cidr.ts';
import type { ClusterPeers } from '../../agent/peers/table.ts';

const ZONE = 'topology.kubernetes.io/zone';
const REGION = 'topology.kubernetes.io/region';

test('Kubernetes mode: classes from Nodes and ServiceCIDRs, exact per class; relabel and join move later packets', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  const kubectl = (args: string[], input?: string) => must(cluster.kubectl(args, input === undefined ? {} : { input }));
  const suffix = randomSuffix();
  const nodeObject = (name: string, zone: string, region: string, cidrs: readonly string[]) =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { [ZONE]: zone, [REGION]: region } },
      spec: { podCIDRs: cidrs },
    });
  // This node: zone a of region r1, pod CIDRs of the topology's 'node' peers.
  await kubectl(['label', 'node', node, `${ZONE}=a`, `${REGION}=r1`]);
  await kubectl(['patch', 'node', node, '--type=merge', '-p', JSON.stringify({ spec: { podCIDRs: CIDRS.node } })]);
  const others = {
    b: `podmeter-test-b-${suffix}`,
    c: `podmeter-test-c-${suffix}`,
    d: `podmeter-test-d-${suffix}`,
    e: `podmeter-test-e-${suffix}`,
  };
  t.after(() => cluster.kubectl(['delete', 'node', ...Object.values(others), '--ignore-not-found']));
  await kubectl(['create', '-f', '-'], nodeObject(others.b, 'a', 'r1', CIDRS.zone));
  await kubectl(['create', '-f', '-'], nodeObject(others.c, 'b', 'r1', CIDRS.crossZone));
  await kubectl(['create', '-f', '-'], nodeObject(others.d, 'c', 'r2', CIDRS.crossRegion));
  // The apiserver made ServiceCIDR 'kubernetes' (10.96.0.0/16) from --service-cluster-ip-range; an IPv6 one besides.
  await kubectl(
    ['create', '-f', '-'],
    JSON.stringify({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'ServiceCIDR',
      metadata: { name: `podmeter-test-v6-${suffix}` },
      spec: { cidrs: [CIDRS.service[1]] },
    }),
  );

  await must(cluster.kubectl(['create', 'namespace', 'shop']));
  const root = makeTestCgroup(t);
  const web = await makePod(cluster, root, { name: 'web', namespace: 'shop', node });
  const peer = makeTestCgroup(t);
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: [
      '--kubeconfig',
      cluster.kubeconfig,
      '--node-name',
      node,
      '--annotate-budget',
      '0',
      '--peer-class',
      `storage=${CIDRS.storage.join(',')}`,
    ],
  });
  const trieLogs = () => agent.logs.filter((l) => l.msg === 'peer trie updated' && l.why === 'cluster');
  // node, zone, cross-zone, cross-region: 2 prefixes each; services: 10.96.0.0/16 and the IPv6 one; storage: 2.
  await waitFor(
    'the cluster view in the trie',
    () => (trieLogs().some((l) => l.entries === 12) ? true : undefined),
    15_000,
  );

  const topo = makeTopology(t);
  const classOf: Record<Exclude<Peer, 'pod'>, string> = {
    node: 'node',
    zone: 'zone',
    crossZone: 'cross-zone',
    crossRegion: 'cross-region',
    service: 'service',
    storage: 'storage',
    external: 'external',
  };
  const expected = new Map<string, number>(); // `${direction}/${class}` -> bytes
  const add = (key: string, bytes: number) => expected.set(key, (expected.get(key) ?? 0) + bytes);
  const check = async (what: string) => {
    const metrics = await agent.metrics();
    for (const [key, bytes] of expected) {
      const [direction, peerClass] = key.split('/') as [string, string];
      assert.equal(
        sample(metrics, 'podmeter_pod_network_peer_bytes_total', { uid: web.uid, direction, peer: peerClass }),
        bytes,
        `${what}: ${key}`,
      );
    }
  };
  let n = 3;
  for (const family of [4, 6] as const satisfies readonly Family[]) {
    for (const p of Object.keys(classOf) as (keyof typeof classOf)[]) {
      n++;
      await udpExchange({
        senderCgroup: web.container,
        receiverCgroup: peer,
        ...topo.toPeer(p, family),
        family,
        count: n,
        payload: 64,
      });
      add(`egress/${classOf[p]}`, n * udpDatagramBytes(family, 64));
      await udpExchange({
        senderCgroup: peer,
        receiverCgroup: web.container,
        ...topo.fromPeer(p, family),
        family,
        count: n,
        payload: 64,
      });
      add(`ingress/${classOf[p]}`, n * udpDatagramBytes(family, 64));
    }
  }
  await check('every class, both directions, IPv4 and IPv6');

  // Node b moves to zone b: its pods are cross-zone from now on; what was counted stays in 'zone'.
  const relabelled = Date.now();
  const before = trieLogs().length;
  await kubectl(['label', 'node', others.b, `${ZONE}=b`, '--overwrite']);
  await waitFor(
    'node b relabelled in the trie within 5 s',
    () => (trieLogs().length > before ? true : undefined),
    5000,
  );
  t.diagnostic(`relabel to trie: ${Date.now() - relabelled} ms`);
  await udpExchange({
    senderCgroup: web.container,
    receiverCgroup: peer,
    ...topo.toPeer('zone', 4),
    family: 4,
    count: 5,
    payload: 64,
  });
  add('egress/cross-zone', 5 * udpDatagramBytes(4, 64));
  await check('after the relabel');

  // A node joins in zone a whose InternalIP is the address that was 'external' so far.
  const joined = trieLogs().length;
  await kubectl(
    ['create', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: others.e, labels: { [ZONE]: 'a', [REGION]: 'r1' } },
    }),
  );
  await kubectl([
    'patch',
    'node',
    others.e,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status: { addresses: [{ type: 'InternalIP', address: ADDRESSES.external[4] }] } }),
  ]);
  await waitFor(
    'the new node in the trie within 5 s',
    () =>
      trieLogs()
        .slice(joined)
        .some((l) => l.entries === 13)
        ? true
        : undefined,
    5000,
  );
  await udpExchange({
    senderCgroup: web.container,
    receiverCgroup: peer,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 6,
    payload: 64,
  });
  add('egress/zone', 6 * udpDatagramBytes(4, 64));
  await check('after the join');

  // Totals: every class but loopback, unchanged in meaning.
  const metrics = await agent.metrics();
  const egress = [...expected].filter(([k]) => k.startsWith('egress/')).reduce((s, [, b]) => s + b, 0);
  assert.equal(sample(metrics, 'podmeter_pod_network_bytes_total', { uid: web.uid, direction: 'egress' }), egress);
});

test('without the ServiceCIDR API (404): the classes from Nodes are published all the same, said once', async (t) => {
  // kube-apiserver 1.37 cannot run without networking.k8s.io/v1 servicecidrs (its IP repair controller
  // needs it), so the watch is pointed at a version it does not serve: the real 404 an older one gives.
  const cluster = await startCluster();
  t.after(() => cluster.down());
  const kubectl = (args: string[], input?: string) => must(cluster.kubectl(args, input === undefined ? {} : { input }));
  const self = `podmeter-test-a-${randomSuffix()}`;
  const other = `podmeter-test-c-${randomSuffix()}`;
  await kubectl(
    ['create', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: self, labels: { [ZONE]: 'a' } },
      spec: { podCIDRs: CIDRS.node },
    }),
  );
  await kubectl(
    ['create', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: other, labels: { [ZONE]: 'b' } },
      spec: { podCIDRs: CIDRS.crossZone },
    }),
  );
  const missing = '/apis/networking.k8s.io/v1alpha9/servicecidrs';
  const raw = await cluster.kubectl(['get', '--raw', missing]);
  assert.notEqual(raw.code, 0);
  assert.match(raw.stderr, /NotFound|not found|404/i, 'the apiserver answers 404');

  const connection = (await loadConnection(cluster.kubeconfig))!;
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const views: ClusterPeers[] = [];
  const watch = watchClusterPeers(new KubeApi(connection), self, (peers) => views.push(peers), log, missing);
  t.after(() => watch.stop());
  const view = await waitFor("the Nodes' classes published", () => views.at(-1), 15_000);
  const texts = (prefixes: readonly Prefix[]) => prefixes.map((p) => p.text).sort();
  assert.deepEqual(texts(view.node ?? []), [...CIDRS.node].sort());
  assert.deepEqual(texts(view['cross-zone'] ?? []), [...CIDRS.crossZone].sort());
  assert.deepEqual(view.service, []);
  const said = () => lines.filter((l) => String(l.msg).startsWith('the cluster has no ServiceCIDR API'));
  assert.equal(said().length, 1);
  // Later Node changes still arrive; the missing API is not asked again (one line, ever).
  await kubectl(['label', 'node', other, `${ZONE}=a`, '--overwrite']);
  await waitFor('the relabelled node in zone', () => (views.at(-1)!.zone?.length === 2 ? true : undefined), 15_000);
  await sleep(3000);
  assert.equal(said().length, 1);
  assert.equal(
    lines.filter((l) => l.path === missing && String(l.msg).startsWith('list/watch failed')).length <= 1,
    true,
    'not retried',
  );
});
