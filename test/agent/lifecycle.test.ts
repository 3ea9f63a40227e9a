/**
 * No byte lost: kill -9 and restart under traffic, a cgroup that lives less
 * than 100 ms, cgroups removed while no agent runs, finals kept across
 * restarts. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeNetns } from '../helpers/netns.ts';
import { spawnInCgroup, spawnTraffic, udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { sample, startAgentProcess, waitFor } from '../helpers/agent.ts';
import { sleep } from '../helpers/cleanup.ts';
import { queryCgroup } from '../../agent/kernel/bpf.ts';

const attached = (path: string) => queryCgroup(path, 'egress').length > 0 && queryCgroup(path, 'ingress').length > 0;

test('kill -9 and restart under traffic: totals equal every byte sent, none lost, none doubled', async (t) => {
  const root = makeTestCgroup(t);
  const a = root.child('sender');
  const b = root.child('receiver');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  await waitFor('attached', () => (attached(a.path) && attached(b.path) ? true : undefined));
  const netns = makeNetns(t);
  const N = 4000;
  const P = 512;
  const exchange = udpExchange({ senderCgroup: a.path, receiverCgroup: b.path, netns, family: 6, count: N, payload: P });
  await sleep(100);
  assert.equal(await agent.kill('SIGKILL'), null);
  await sleep(300); // traffic flows while no agent runs: the pinned links keep counting
  await agent.restart();
  await exchange;
  const metrics = await agent.metrics();
  assert.equal(sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'sender', direction: 'egress' }), N * udpDatagramBytes(6, P));
  assert.equal(sample(metrics, 'podmeter_cgroup_network_packets_total', { cgroup: 'receiver', direction: 'ingress' }), N);
  assert.ok(agent.logs.some((l) => l.msg === 'adopted pinned programs and counter map'));
});

test('a cgroup created, used and removed within 100 ms has its exact final count', async (t) => {
  const root = makeTestCgroup(t);
  const peer = root.child('peer');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  const netns = makeNetns(t);
  const receiver = spawnTraffic(peer.path, netns, ['udp-recv', '--family', '4', '--count', '20']);
  const { port } = await receiver.waitFor('listening');

  // The sender starts beforehand (parked in the peer cgroup) and creates its
  // socket only after it was moved into the new cgroup, so the cgroup's whole
  // life (mkdir .. rmdir) is short; a socket belongs to the cgroup its
  // process was in when the socket was created.
  const send = `import socket, sys\nsys.stdin.readline()\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(20): s.sendto(b"x" * 100, ("127.0.0.1", ${port}))\n`;
  const sender = spawnInCgroup(peer.path, ['python3', '-c', send], { netns });
  await sleep(300);
  const started = performance.now();
  const brief = root.child('brief');
  await waitFor('attached', () => (attached(brief.path) ? true : undefined), 1000);
  writeFileSync(`${brief.path}/cgroup.procs`, String(sender.pid));
  const exited = new Promise((r) => sender.once('exit', r));
  sender.stdin!.write('go\n');
  await exited;
  rmdirSync(brief.path);
  const lifetime = performance.now() - started;
  assert.ok(lifetime < 100, `cgroup lived ${lifetime.toFixed(0)} ms`);
  await receiver.waitFor('done');

  const final = await waitFor('final of brief', async () =>
    (await agent.cgroups()).find((c) => c.cgroup === 'brief' && c.state === 'terminated'), 10_000);
  assert.equal(final.egress.bytes, String(20 * 128));
  assert.equal(final.egress.packets, '20');
  t.diagnostic(`cgroup lifetime ${lifetime.toFixed(1)} ms`);
  // Its pins are gone once finalised.
  assert.equal(readdirSync(`${agent.bpffs}/links`).filter((n) => n.startsWith(`${brief.id}_`)).length, 0);
});

test('finals survive a restart; a cgroup removed while no agent runs is finalised and its pins cleaned', async (t) => {
  const root = makeTestCgroup(t);
  const gone = root.child('gone-early');
  const vanish = root.child('vanish-while-down');
  const peer = root.child('peer');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  await waitFor('attached', () => (attached(gone.path) && attached(vanish.path) ? true : undefined));
  const netns = makeNetns(t);
  await udpExchange({ senderCgroup: gone.path, receiverCgroup: peer.path, netns, family: 4, count: 10, payload: 10 });
  await udpExchange({ senderCgroup: vanish.path, receiverCgroup: peer.path, netns, family: 4, count: 30, payload: 10 });
  rmdirSync(gone.path);
  await waitFor('final of gone-early', async () => (await agent.cgroups()).find((c) => c.cgroup === 'gone-early' && c.state === 'terminated'));
  // populated 1 -> 0 (the sender exited) made the agent read and persist vanish's counts.
  await waitFor('populated 0 read', async () => (await agent.cgroups()).find((c) => c.cgroup === 'vanish-while-down' && c.egress.packets === '30'));

  await agent.kill('SIGKILL');
  rmdirSync(vanish.path);
  await sleep(3000); // long enough for the kernel to release the storage: only the agent's state has the count now
  await agent.restart();

  const views = await agent.cgroups();
  const early = views.find((c) => c.cgroup === 'gone-early');
  const late = views.find((c) => c.cgroup === 'vanish-while-down');
  assert.equal(early?.state, 'terminated');
  assert.equal(early?.egress.bytes, String(10 * 38));
  assert.equal(late?.state, 'terminated');
  assert.equal(late?.egress.bytes, String(30 * 38));
  assert.ok(!existsSync(`${agent.bpffs}/links/${vanish.id}_egress`), 'stale pins removed');
  assert.ok(existsSync(`${agent.bpffs}/links/${peer.id}_egress`), 'live pins kept');
  const metrics = await agent.metrics();
  assert.equal(sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'vanish-while-down', direction: 'egress' }), 30 * 38);
});

test('finals drop out after --retention', async (t) => {
  const root = makeTestCgroup(t);
  const brief = root.child('brief');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--retention', '1', '--interval', '0.2'] });
  await waitFor('attached', () => (attached(brief.path) ? true : undefined));
  rmdirSync(brief.path);
  await waitFor('terminated', async () => (await agent.cgroups()).find((c) => c.state === 'terminated'));
  await waitFor('pruned', async () => ((await agent.cgroups()).length === 0 ? true : undefined), 5000);
});
