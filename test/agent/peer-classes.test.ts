/**
 * The agent's peer classes standalone: configured named classes (--peer-class,
 * --peer-classes-file) count exactly in /metrics and /api/v1/cgroups, every
 * other peer is external, loopback is its own class outside the totals; a
 * restarted agent keeps each class in its slot; bad class flags exit 2
 * naming the entry. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { PODMETER } from '../helpers/podmeter.ts';
import { CIDRS, makeTopology, type Peer } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';

test('configured classes, external and loopback: exact per class, totals leave loopback out; slots kept across a restart', async (t) => {
  const root = makeTestCgroup(t);
  const app = root.child('app.service');
  const other = root.child('other.service');
  const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-'));
  t.after(() => spawnSync('rm', ['-rf', dir]));
  const file = join(dir, 'classes');
  writeFileSync(file, `# from a ConfigMap\nonprem = ${CIDRS.zone.join(', ')}\n\n`);
  const agent = await startAgentProcess(t, {
    cgroupRoot: root.path,
    args: ['--peer-class', `storage=${CIDRS.storage.join(',')}`, '--peer-classes-file', file, '--interval', '1'],
  });
  await waitFor('2 cgroups attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  const topo = makeTopology(t);

  const send = (peer: Exclude<Peer, 'pod'>, family: 4 | 6, count: number) =>
    udpExchange({
      senderCgroup: app,
      receiverCgroup: other,
      ...topo.toPeer(peer, family),
      family,
      count,
      payload: 100,
    });
  const receive = (peer: Exclude<Peer, 'pod'>, family: 4 | 6, count: number) =>
    udpExchange({
      senderCgroup: other,
      receiverCgroup: app,
      ...topo.fromPeer(peer, family),
      family,
      count,
      payload: 100,
    });
  await send('storage', 4, 10);
  await send('storage', 6, 11);
  await send('zone', 4, 12); // 'onprem' from the file
  await send('external', 6, 13);
  await receive('storage', 4, 14);
  await receive('external', 4, 15);
  await udpExchange({ senderCgroup: app, receiverCgroup: app, netns: topo.pod, family: 4, count: 16, payload: 100 }); // loopback

  const v4 = udpDatagramBytes(4, 100);
  const v6 = udpDatagramBytes(6, 100);
  const expected = {
    egress: { storage: 10 * v4 + 11 * v6, onprem: 12 * v4, external: 13 * v6, loopback: 16 * v4 },
    ingress: { storage: 14 * v4, external: 15 * v4, loopback: 16 * v4 },
  };
  const metrics = await agent.metrics();
  for (const direction of ['egress', 'ingress'] as const) {
    for (const [peer, bytes] of Object.entries(expected[direction])) {
      assert.equal(
        sample(metrics, 'podmeter_cgroup_network_peer_bytes_total', { cgroup: 'app.service', direction, peer }),
        bytes,
        `${direction} ${peer}`,
      );
    }
  }
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_peer_packets_total', {
      cgroup: 'app.service',
      direction: 'egress',
      peer: 'storage',
    }),
    21,
  );
  // Classes without a packet have no series.
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_peer_bytes_total', {
      cgroup: 'app.service',
      direction: 'ingress',
      peer: 'onprem',
    }),
    undefined,
  );
  // Totals: everything but loopback.
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'app.service', direction: 'egress' }),
    10 * v4 + 11 * v6 + 12 * v4 + 13 * v6,
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_packets_total', { cgroup: 'app.service', direction: 'ingress' }),
    29,
  );

  const view = (await agent.cgroups()).find((c) => c.cgroup === 'app.service')!;
  assert.deepEqual(view.peers?.egress.onprem, { bytes: String(12 * v4), packets: '12' });
  assert.deepEqual(view.peers?.ingress.loopback, { bytes: String(16 * v4), packets: '16' });
  assert.equal(view.egress.bytes, String(10 * v4 + 11 * v6 + 12 * v4 + 13 * v6));

  // A restart with the classes in another order, one more, and 'storage' gone: each class keeps its
  // slot, so its counts stay its own; the dropped class keeps its counts under its name.
  await agent.kill('SIGTERM');
  const again = await startAgentProcess(t, {
    cgroupRoot: root.path,
    bpffs: agent.bpffs,
    stateDir: agent.stateDir,
    args: ['--peer-class', `backup=${CIDRS.crossRegion.join(',')}`, '--peer-class', `onprem=${CIDRS.zone.join(',')}`],
  });
  await send('crossRegion', 4, 5); // -> backup
  await send('storage', 4, 6); // no longer configured: external now
  await send('zone', 4, 7); // -> onprem, same slot as before
  const after = await again.metrics();
  const peerBytes = (peer: string) =>
    sample(after, 'podmeter_cgroup_network_peer_bytes_total', { cgroup: 'app.service', direction: 'egress', peer });
  assert.equal(peerBytes('storage'), 10 * v4 + 11 * v6);
  assert.equal(peerBytes('onprem'), 19 * v4);
  assert.equal(peerBytes('backup'), 5 * v4);
  assert.equal(peerBytes('external'), 13 * v6 + 6 * v4);
});

test('bad peer classes: exit 2 naming the entry', () => {
  const cases: [string[], RegExp][] = [
    [
      ['--peer-class', 'storage=10.0.0.0/33'],
      /--peer-class: .*"10\.0\.0\.0\/33": the prefix length must be a number from 0 to 32/,
    ],
    [['--peer-class', 'Storage=10.0.0.0/8'], /class name "Storage" is not a valid class name/],
    [['--peer-class', 'external=10.0.0.0/8'], /class name "external" is a built-in class name/],
    [['--peer-class', 'a=10.0.0.0/8', '--peer-class', 'a=11.0.0.0/8'], /class "a" is given twice/],
    [['--peer-class', 'storage'], /not NAME=CIDR/],
    [['--peer-class', 'x=not-an-address'], /"not-an-address" is not an IPv4 or IPv6 address or CIDR prefix/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(PODMETER, ['agent', ...args, '--listen', '127.0.0.1:0'], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}; stderr ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-'));
  try {
    writeFileSync(join(dir, 'classes'), 'good=10.0.0.0/8\nbad=300.1.2.3/8\n');
    const r = spawnSync(PODMETER, ['agent', '--peer-classes-file', join(dir, 'classes'), '--listen', '127.0.0.1:0'], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--peer-classes-file: .*line 2 "bad=300\.1\.2\.3\/8"/);
  } finally {
    spawnSync('rm', ['-rf', dir]);
  }
});
