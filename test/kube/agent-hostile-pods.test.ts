/**
 * What a tenant's Pod or a Node's status may not do to the counts, against a
 * real kube-apiserver: a forged `kubernetes.io/config.hash` takes no pod's
 * bytes or final (a real mirror pod still names its static pod's cgroup);
 * a Pod whose annotation write the API server refuses (422, annotations at
 * the 256 KiB limit) fails alone while its neighbours are annotated exactly;
 * a Node publishing 0.0.0.0/0, ::/0 or garbage as an address moves no
 * traffic out of `external`.
 * Needs root, cgroup v2, bpffs, and the test control plane (test/cluster).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmdirSync } from 'node:fs';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { ADDRESSES, makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { randomSuffix, sleep } from '../helpers/cleanup.ts';
import { annotations, clusterWithNode, makePod, must } from '../helpers/kubeCluster.ts';

const PODMETER = 'podmeter.io/';
/** The API server's limit on one object's annotations (keys and values), apimachinery TotalAnnotationSizeLimitB. */
const ANNOTATIONS_LIMIT = 256 * 1024;

test('hostile pods and nodes: forged config hashes, a refused pod, prefixes as node addresses', async (t) => {
  const { cluster, node } = await clusterWithNode(t);
  const kubectl = (args: string[], input?: string) => must(cluster.kubectl(args, input === undefined ? {} : { input }));
  await kubectl(['create', 'namespace', 'shop']);
  await kubectl(['create', 'namespace', 'evil']);
  const root = makeTestCgroup(t);
  const podmeterKeys = (a: Record<string, string>) => Object.keys(a).filter((k) => k.startsWith(PODMETER));
  const createPod = async (name: string, namespace: string, metadata: Record<string, unknown> = {}) =>
    JSON.parse(
      await kubectl(
        ['create', '-o', 'json', '-f', '-'],
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace, ...metadata },
          spec: { nodeName: node, containers: [{ name: 'app', image: 'example.invalid/app' }] },
        }),
      ),
    ) as {
      metadata: { uid: string };
    };

  const victim = await makePod(cluster, root, { name: 'victim', namespace: 'shop', node });
  // A static pod: its cgroup is named by the config hash its mirror pod carries.
  const hash = randomBytes(16).toString('hex');
  const staticCgroup = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${hash}.slice`;
  const staticContainer = root.child(`${staticCgroup}/cri-containerd-${'cd'.repeat(32)}.scope`);
  const nodeUid = (await kubectl(['get', 'node', node, '-o', 'jsonpath={.metadata.uid}'])).trim();
  await createPod(`kube-proxy-${node}`, 'shop', {
    annotations: {
      'kubernetes.io/config.mirror': hash,
      'kubernetes.io/config.hash': hash,
      'kubernetes.io/config.source': 'file',
    },
    ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node, uid: nodeUid, controller: true }],
  });

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
  const P = 200;
  const one = udpDatagramBytes(4, P);
  const logged = (msg: string) => agent.logs.filter((l) => String(l.msg).startsWith(msg));

  await t.test('a forged config.hash takes nothing over; a mirror pod names its static pod', async () => {
    // Created after the victim and the mirror pod, as the watch's later word: the claims the old code took.
    await createPod('thief', 'evil', { annotations: { 'kubernetes.io/config.hash': victim.uid } });
    await createPod('forger', 'evil', { annotations: { 'kubernetes.io/config.hash': hash } });
    await waitFor(
      'both claims refused',
      () => (logged("Pod's kubernetes.io/config.hash names no cgroup").length === 2 ? true : undefined),
      15_000,
    );

    const N = 40;
    await udpExchange({
      senderCgroup: victim.container.path,
      receiverCgroup: staticContainer.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count: N,
      payload: P,
    });
    await waitFor(
      'victim annotated',
      async () =>
        (await annotations(cluster, 'pod', 'victim', 'shop'))['podmeter.io/egress-bytes'] === String(N * one)
          ? true
          : undefined,
      15_000,
    );
    const m = await waitFor(
      'mirror pod annotated',
      async () => {
        const got = await annotations(cluster, 'pod', `kube-proxy-${node}`, 'shop');
        return got['podmeter.io/ingress-bytes'] === String(N * one) ? got : undefined;
      },
      15_000,
    );
    assert.equal(m['podmeter.io/ingress-packets'], String(N));
    await sleep(2500); // more rounds than the interval: any write to the claimants would have happened
    assert.deepEqual(podmeterKeys(await annotations(cluster, 'pod', 'thief', 'evil')), []);
    assert.deepEqual(podmeterKeys(await annotations(cluster, 'pod', 'forger', 'evil')), []);

    const metrics = await agent.metrics();
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', { uid: victim.uid, direction: 'egress' }),
      N * one,
    );
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', { namespace: 'shop', pod: 'victim', direction: 'egress' }),
      N * one,
    );
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', {
        namespace: 'shop',
        pod: `kube-proxy-${node}`,
        uid: hash,
        direction: 'ingress',
      }),
      N * one,
    );
    assert.equal(
      sample(metrics, 'podmeter_pod_network_bytes_total', { namespace: 'evil' }),
      undefined,
      "no series in the attackers' namespace",
    );
    assert.equal(
      sample(metrics, 'podmeter_errors_total', { op: 'config_hash', reason: 'not_mirror' }),
      2,
      'one per pod',
    );
    const lines = logged("Pod's kubernetes.io/config.hash names no cgroup");
    assert.deepEqual(lines.map((l) => `${String(l.namespace)}/${String(l.pod)}`).sort(), ['evil/forger', 'evil/thief']);

    // The victim's pod goes: its final is published under its own name, never the thief's.
    rmdirSync(victim.container.path);
    rmdirSync(victim.podCgroup);
    const finals = await waitFor(
      "the victim's final on the Node",
      async () => {
        const raw = (await annotations(cluster, 'node', node))['podmeter.io/finals'];
        const list =
          raw === undefined
            ? []
            : (JSON.parse(raw) as { uid: string; namespace?: string; name?: string; egressBytes: string }[]);
        return list.some((f) => f.uid === victim.uid) ? list : undefined;
      },
      15_000,
    );
    const final = finals.find((f) => f.uid === victim.uid)!;
    assert.deepEqual([final.namespace, final.name, final.egressBytes], ['shop', 'victim', String(N * one)]);
    assert.equal(finals.filter((f) => f.namespace === 'evil').length, 0);
  });

  await t.test('a pod whose write is refused (422) fails alone: its neighbours are annotated exactly', async () => {
    const web = await makePod(cluster, root, { name: 'web', namespace: 'shop', node });
    const db = await makePod(cluster, root, { name: 'db', namespace: 'shop', node });
    // Just under the limit: the Pod is valid, the agent's few hundred bytes of annotations are not.
    const key = 'example.com/ballast';
    const fat = await makePod(cluster, root, {
      name: 'fat',
      namespace: 'shop',
      node,
      annotations: { [key]: 'x'.repeat(ANNOTATIONS_LIMIT - key.length - 64) },
    });

    let webBytes = 0;
    let dbBytes = 0;
    const started = Date.now();
    for (let round = 1; round <= 3; round++) {
      // fat is due every round (new traffic), and before its neighbours (never written): the old code stopped there.
      await udpExchange({
        senderCgroup: fat.container.path,
        receiverCgroup: db.container.path,
        ...topo.toPeer('external', 4),
        family: 4,
        count: 5,
        payload: P,
      });
      await udpExchange({
        senderCgroup: web.container.path,
        receiverCgroup: db.container.path,
        ...topo.toPeer('external', 4),
        family: 4,
        count: 10 * round,
        payload: P,
      });
      webBytes += 10 * round * one;
      await waitFor(
        `web annotated, round ${round}`,
        async () =>
          (await annotations(cluster, 'pod', 'web', 'shop'))['podmeter.io/egress-bytes'] === String(webBytes)
            ? true
            : undefined,
        15_000,
      );
      // db receives in the world netns, from web and fat alike.
      dbBytes += (5 + 10 * round) * one;
      await waitFor(
        `db annotated, round ${round}`,
        async () =>
          (await annotations(cluster, 'pod', 'db', 'shop'))['podmeter.io/ingress-bytes'] === String(dbBytes)
            ? true
            : undefined,
        15_000,
      );
    }
    const elapsedS = (Date.now() - started) / 1000;
    assert.deepEqual(podmeterKeys(await annotations(cluster, 'pod', 'fat', 'shop')), [], 'the refused pod has none');
    const refusals = logged('Pod annotation write refused');
    assert.equal(refusals.length, 1, 'logged once');
    assert.deepEqual(
      [refusals[0]!.namespace, refusals[0]!.pod, refusals[0]!.uid, refusals[0]!.status],
      ['shop', 'fat', fat.uid, 422],
    );
    assert.match(String(refusals[0]!.err), /Too long/);
    const rejected = sample(await agent.metrics(), 'podmeter_annotation_writes_total', { result: 'rejected' }) ?? 0;
    t.diagnostic(`rejected writes: ${rejected} in ${elapsedS.toFixed(1)} s`);
    assert.ok(rejected >= 1);
    assert.ok(
      rejected <= 2 + Math.log2(elapsedS),
      `retried with backoff (twice the interval, doubling), not every interval: ${rejected} in ${elapsedS} s`,
    );
    assert.equal(logged('annotation writes failing').length, 0, 'no outage');

    // Its annotations made small again: the next retry writes the exact counts.
    await kubectl(['annotate', 'pod', 'fat', '-n', 'shop', `${key}-`]);
    await waitFor(
      'fat annotated after the ballast went',
      async () =>
        (await annotations(cluster, 'pod', 'fat', 'shop'))['podmeter.io/egress-bytes'] === String(15 * one)
          ? true
          : undefined,
      45_000,
    );
    assert.equal(logged('Pod annotations written again after refusals').length, 1);
  });

  await t.test(
    'a Node publishing 0.0.0.0/0, ::/0 or garbage as its address moves no traffic out of external',
    async () => {
      const hostile = `podmeter-test-h-${randomSuffix()}`;
      t.after(() => cluster.kubectl(['delete', 'node', hostile, '--ignore-not-found']));
      await kubectl(
        ['create', '-f', '-'],
        JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: hostile } }),
      );
      const trieUpdates = () => agent.logs.filter((l) => l.msg === 'peer trie updated' && l.why === 'cluster').length;
      const before = trieUpdates();
      const bad = ['0.0.0.0/0', '::/0', 'not-an-ip', '203.0.113.0/24'];
      const addresses = [
        ...bad.map((address, i) => ({ type: i % 2 === 0 ? 'InternalIP' : 'ExternalIP', address })),
        { type: 'InternalIP', address: ADDRESSES.zone[4] },
      ];
      await kubectl([
        'patch',
        'node',
        hostile,
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({ status: { addresses } }),
      ]);
      const skipped = () => logged('Node has an address that is not a bare IP').filter((l) => l.node === hostile);
      await waitFor(
        'each bad address skipped and said',
        () => (skipped().length === bad.length ? true : undefined),
        15_000,
      );
      assert.deepEqual(
        skipped()
          .map((l) => l.address)
          .sort(),
        [...bad].sort(),
      );
      // The node's one real address made it: a peer there is 'zone' (nodes without zone labels share one zone).
      await waitFor("the node's bare address in the trie", () => (trieUpdates() > before ? true : undefined), 15_000);

      const peer = makeTestCgroup(t);
      const sender = await makePod(cluster, root, { name: 'client', namespace: 'shop', node });
      const expected: Record<string, number> = { external: 0, zone: 0 };
      for (const family of [4, 6] as const) {
        await udpExchange({
          senderCgroup: sender.container.path,
          receiverCgroup: peer,
          ...topo.toPeer('external', family),
          family,
          count: 7,
          payload: P,
        });
        expected.external! += 7 * udpDatagramBytes(family, P);
      }
      await udpExchange({
        senderCgroup: sender.container.path,
        receiverCgroup: peer,
        ...topo.toPeer('zone', 4),
        family: 4,
        count: 3,
        payload: P,
      });
      expected.zone! += 3 * one;
      const metrics = await agent.metrics();
      for (const [peer, bytes] of Object.entries(expected)) {
        assert.equal(
          sample(metrics, 'podmeter_pod_network_peer_bytes_total', { uid: sender.uid, direction: 'egress', peer }),
          bytes,
          peer,
        );
      }
      // A write may land between the exchanges: wait for the one with all of them.
      const total = String(expected.external! + expected.zone!);
      const a = await waitFor(
        'client annotated',
        async () => {
          const got = await annotations(cluster, 'pod', 'client', 'shop');
          return got['podmeter.io/egress-bytes'] === total ? got : undefined;
        },
        15_000,
      );
      assert.equal(a['podmeter.io/egress-external-bytes'], String(expected.external));

      // The Node changes again: nothing is said twice.
      await kubectl(['label', 'node', hostile, 'example.com/touched=1']);
      await sleep(1000);
      assert.equal(skipped().length, bad.length, 'once per node and value');
    },
  );
});
