/**
 * Upgrade over the pins of an agent without peer classes (bpf/legacy.bpf.c:
 * one 16-byte counter per cgroup and direction, loopback included): the new
 * agent reads the old links' final counts, keeps them as the base (class
 * `unclassified`, part of the totals: they never go down), replaces the links
 * with its own, and drops the old map pin once no old link is left; the base
 * survives a restart. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { test } from 'node:test';
import {
  attachCgroup,
  BpfObject,
  bpfObjectPath,
  DIRECTIONS,
  Link,
  type Link as LinkT,
} from '../../agent/kernel/bpf.ts';
import { PinDir } from '../../agent/counting/pins.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { randomSuffix, TEST_PREFIX } from '../helpers/cleanup.ts';

test('an agent without peer classes left pins: counts kept as the base, links replaced, old map unpinned', async (t) => {
  const root = makeTestCgroup(t);
  const app = root.child('app.service');
  const other = root.child('other.service');
  const topo = makeTopology(t);
  const bpffs = `/sys/fs/bpf/${TEST_PREFIX}${randomSuffix()}`;
  const pins = new PinDir(bpffs);
  t.after(() => pins.removeAll());

  // The old agent's layout: prog_*, map_stats, links/<cgroup id>_<direction>.
  mkdirSync(pins.linksDir, { recursive: true });
  const old = BpfObject.load(bpfObjectPath('legacy'));
  const oldMap = old.takeStorageMap('podmeter_stats');
  old.program('podmeter_ingress').pin(pins.program('ingress'));
  old.program('podmeter_egress').pin(pins.program('egress'));
  oldMap.pin(pins.legacyMap);
  const links: LinkT[] = [];
  for (const cg of [app, other]) {
    for (const d of DIRECTIONS) {
      const link = attachCgroup({ cgroupPath: cg.path, program: old.program(`podmeter_${d}`) });
      link.pin(pins.link(cg.id, d));
      links.push(link);
    }
  }
  await udpExchange({
    senderCgroup: app,
    receiverCgroup: other,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 40,
    payload: 100,
  });
  await udpExchange({ senderCgroup: app, receiverCgroup: app, netns: topo.pod, family: 4, count: 10, payload: 100 }); // loopback: the old agent counted it
  const v4 = udpDatagramBytes(4, 100);
  const oldEgress = 50 * v4;
  assert.equal(oldMap.read(app.id, 'egress')?.[0]?.bytes, BigInt(oldEgress));
  for (const l of links) l.close();
  oldMap.close();
  old.close();

  const agent = await startAgentProcess(t, { cgroupRoot: root.path, bpffs, args: ['--interval', '1'] });
  await waitFor('2 cgroups attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  const bytes = (metrics: string, name: string, labels: Record<string, string>) =>
    sample(metrics, name, { cgroup: 'app.service', ...labels });
  let metrics = await agent.metrics();
  assert.equal(
    bytes(metrics, 'podmeter_cgroup_network_bytes_total', { direction: 'egress' }),
    oldEgress,
    'the totals carry on from the old counts',
  );
  assert.equal(
    bytes(metrics, 'podmeter_cgroup_network_peer_bytes_total', { direction: 'egress', peer: 'unclassified' }),
    oldEgress,
  );
  assert.equal(existsSync(pins.legacyMap), false, 'old map unpinned once its last link was replaced');
  const programIds = new Set<number>();
  for (const d of DIRECTIONS) {
    const link = Link.fromPin(pins.link(app.id, d));
    programIds.add(link.info().progId);
    link.close();
  }
  assert.equal(programIds.size, 2);
  assert.ok(
    agent.logs.some(
      (l) =>
        l.msg === 'found the pins of an agent without peer classes: its links are replaced as their cgroups are found',
    ),
  );

  // New traffic counts by class; loopback stays out of the totals now.
  await udpExchange({
    senderCgroup: app,
    receiverCgroup: other,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 7,
    payload: 100,
  });
  await udpExchange({ senderCgroup: app, receiverCgroup: app, netns: topo.pod, family: 4, count: 3, payload: 100 });
  metrics = await agent.metrics();
  assert.equal(bytes(metrics, 'podmeter_cgroup_network_bytes_total', { direction: 'egress' }), oldEgress + 7 * v4);
  assert.equal(
    bytes(metrics, 'podmeter_cgroup_network_peer_bytes_total', { direction: 'egress', peer: 'external' }),
    7 * v4,
  );
  assert.equal(
    bytes(metrics, 'podmeter_cgroup_network_peer_bytes_total', { direction: 'egress', peer: 'loopback' }),
    3 * v4,
  );

  // The base is in the state dir: a restart keeps it.
  await agent.kill('SIGTERM');
  await agent.restart();
  await waitFor('readopted', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  metrics = await agent.metrics();
  assert.equal(bytes(metrics, 'podmeter_cgroup_network_bytes_total', { direction: 'egress' }), oldEgress + 7 * v4);
  assert.equal(
    bytes(metrics, 'podmeter_cgroup_network_peer_bytes_total', { direction: 'egress', peer: 'unclassified' }),
    oldEgress,
  );
});
