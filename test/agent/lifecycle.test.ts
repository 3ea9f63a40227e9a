/**
 * No byte lost: kill -9 and restart under traffic (and traffic while no
 * agent runs), an agent of a new version over an earlier one's pins (needs
 * clang for that build), a cgroup created, used and removed between two counter reads,
 * cgroups removed while no agent runs, finals kept across restarts, a node
 * reboot (pins and pod cgroups made anew).
 * Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { PinDir } from '../../agent/counting/pins.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { spawnInCgroup, spawnTraffic, udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { afterOrSignal, randomSuffix, sleep, TEST_PREFIX } from '../helpers/cleanup.ts';
import { bpffsRoot } from '../helpers/bpffs.ts';
import { buildEarlier, pinAsAgent } from '../helpers/earlier.ts';
import { Program, queryCgroup } from '../../agent/kernel/bpf.ts';

/** `pid` holds an inotify watch on the cgroup's cgroup.events (from /proc/<pid>/fdinfo). */
function watchesEvents(pid: number, cgroup: string): boolean {
  const ino = new RegExp(`^inotify wd:\\S+ ino:${statSync(`${cgroup}/cgroup.events`).ino.toString(16)} `, 'm');
  return readdirSync(`/proc/${pid}/fdinfo`).some((fd) => {
    try {
      return ino.test(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
    } catch {
      return false; // closed meanwhile
    }
  });
}

/** Egress bytes the agent last saved for a live unit in its --state-dir. */
function savedEgress(stateDir: string, relPath: string): string | undefined {
  try {
    const state = JSON.parse(readFileSync(`${stateDir}/state.json`, 'utf8')) as {
      live: { relPath: string; counters: { egress: { bytes: unknown } } }[];
    };
    const unit = state.live.find((u) => u.relPath === relPath);
    return unit && String(unit.counters.egress.bytes);
  } catch {
    return undefined; // not written yet
  }
}

const attached = (path: string) => queryCgroup(path, 'egress').length > 0 && queryCgroup(path, 'ingress').length > 0;

test('kill -9 and restart under traffic: totals equal every byte sent, none lost, none doubled', async (t) => {
  const root = makeTestCgroup(t);
  const a = root.child('sender');
  const b = root.child('receiver');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  await waitFor('attached', () => (attached(a.path) && attached(b.path) ? true : undefined));
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const P = 512;
  const exchange = (count: number) =>
    udpExchange({
      senderCgroup: a.path,
      receiverCgroup: b.path,
      ...topo.toPeer('external', 6),
      family: 6,
      count,
      payload: P,
    });
  // Killed under traffic: this exchange runs on across the kill.
  const across = 4000;
  const acrossKill = exchange(across);
  await sleep(100);
  assert.equal(await agent.kill('SIGKILL'), null); // returns once the agent has exited
  await acrossKill;
  // A whole exchange started after the agent's exit and finished before its restart:
  // only the pinned links can have counted it.
  const whileDown = 1000;
  await exchange(whileDown);
  assert.equal(
    await agent.cgroups().then(
      () => 'answered',
      () => 'down',
    ),
    'down',
    'no agent ran during that exchange',
  );
  await agent.restart();
  const metrics = await agent.metrics();
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'sender', direction: 'egress' }),
    (across + whileDown) * udpDatagramBytes(6, P),
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_packets_total', { cgroup: 'receiver', direction: 'ingress' }),
    across + whileDown,
  );
  assert.ok(agent.logs.some((l) => l.msg === 'adopted pinned programs and counter map'));
});

test("an agent of a new version over an earlier version's pins: links moved to its programs, totals exact", async (t) => {
  const earlier = buildEarlier(t);
  const root = makeTestCgroup(t);
  const a = root.child('sender');
  const b = root.child('receiver');
  const pins = new PinDir(`${bpffsRoot()}/${TEST_PREFIX}${randomSuffix()}`);
  afterOrSignal(t, () => pins.removeAll());
  pinAsAgent(pins, earlier, [a, b]); // what the earlier version's agent left when it stopped
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const exchange = (count: number) =>
    udpExchange({
      senderCgroup: a.path,
      receiverCgroup: b.path,
      ...topo.toPeer('external', 4),
      family: 4,
      count,
      payload: 100,
    });
  await exchange(300); // counted by the earlier programs
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, bpffs: pins.root });
  const program = (d: 'ingress' | 'egress') => {
    const p = Program.fromPin(pins.program(d), 'pinned', 0);
    try {
      return p.info();
    } finally {
      p.close();
    }
  };
  const upgraded = agent.logs.find((l) => String(l.msg).startsWith('pins upgraded in place'));
  assert.ok(upgraded, 'the upgrade logged');
  assert.deepEqual(upgraded.links, { moved: 4, already: 0, gone: 0, failed: 0 });
  for (const cgroup of [a, b])
    for (const d of ['ingress', 'egress'] as const) assert.deepEqual(queryCgroup(cgroup.path, d), [program(d).id]);
  await exchange(200); // counted by the new programs, into the same counters
  const metrics = await agent.metrics();
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'sender', direction: 'egress' }),
    500 * udpDatagramBytes(4, 100),
  );
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_packets_total', { cgroup: 'receiver', direction: 'ingress' }),
    500,
  );
});

test('a cgroup created, used and removed between two counter reads has its exact final count', async (t) => {
  const root = makeTestCgroup(t);
  const peer = root.child('peer');
  // No periodic read during the test: the final can only come from the reads on emptying and removal.
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--interval', '3600'] });
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const receiver = spawnTraffic(peer.path, topo.world, [
    'udp-recv',
    '--address',
    topo.address('external', 4),
    '--family',
    '4',
    '--count',
    '20',
  ]);
  const { port } = await receiver.waitFor('listening');

  // The test sets the cgroup's life: mkdir, wait until the agent attached and
  // watches it, move a sender in, send, rmdir as soon as it exits. The sender
  // starts beforehand (parked in the peer cgroup) and creates its socket only
  // after it was moved into the new cgroup; a socket belongs to the cgroup
  // its process was in when the socket was created.
  const send = `import socket, sys\nsys.stdin.readline()\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(20): s.sendto(b"x" * 100, ("${topo.address('external', 4)}", ${port}))\n`;
  const sender = spawnInCgroup(peer.path, ['python3', '-c', send], { netns: topo.pod });
  // Joined peer and exec'd python: a move into brief from now on is not undone by the launcher.
  await waitFor('sender started', () =>
    readFileSync(`/proc/${sender.pid}/comm`, 'utf8').startsWith('python') ? true : undefined,
  );
  const brief = root.child('brief');
  const started = performance.now();
  await waitFor('attached', () => (attached(brief.path) ? true : undefined));
  // And watching its cgroup.events, so the agent sees it empty (one that empties before
  // that watch exists is read only on removal, which races the kernel freeing its storage).
  await waitFor('cgroup.events watched', () => (watchesEvents(agent.child.pid!, brief.path) ? true : undefined));
  writeFileSync(`${brief.path}/cgroup.procs`, String(sender.pid));
  const exited = new Promise((r) => sender.once('exit', r));
  sender.stdin!.write('go\n');
  await exited;
  // The agent reads a unit's counters when it empties and saves them: wait for
  // that read in its state file (nothing here triggers a read) before the
  // rmdir, after which the kernel may free the counters before a slow agent
  // reads them again.
  await waitFor('brief read on emptying', () => (savedEgress(agent.stateDir, 'brief') === '2560' ? true : undefined));
  rmdirSync(brief.path);
  t.diagnostic(`cgroup lifetime ${(performance.now() - started).toFixed(1)} ms`);
  await receiver.waitFor('done');

  const final = await waitFor('final of brief', async () =>
    (await agent.cgroups()).find((c) => c.cgroup === 'brief' && c.state === 'terminated'),
  );
  assert.equal(final.egress.bytes, String(20 * 128));
  assert.equal(final.egress.packets, '20');
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
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  await udpExchange({
    senderCgroup: gone.path,
    receiverCgroup: peer.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 10,
    payload: 10,
  });
  await udpExchange({
    senderCgroup: vanish.path,
    receiverCgroup: peer.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 30,
    payload: 10,
  });
  rmdirSync(gone.path);
  await waitFor('final of gone-early', async () =>
    (await agent.cgroups()).find((c) => c.cgroup === 'gone-early' && c.state === 'terminated'),
  );
  // populated 1 -> 0 (the sender exited) made the agent read and persist vanish's counts: the kill
  // below waits for them in the state file (the write is asynchronous), not only in the agent's memory.
  await waitFor('populated 0 read and saved', () =>
    savedEgress(agent.stateDir, 'vanish-while-down') === String(30 * 38) ? true : undefined,
  );

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
  assert.equal(
    sample(metrics, 'podmeter_cgroup_network_bytes_total', { cgroup: 'vanish-while-down', direction: 'egress' }),
    30 * 38,
  );
});

test('a node reboot: links, counters and pod cgroups gone while no agent runs; each pod counts on from its saved counts, never from a cgroup that reuses an id', async (t) => {
  const root = makeTestCgroup(t);
  const podPath = (uid: string) =>
    `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice`;
  // `early` is made again before the agent starts, `late` after it settled the previous run's records.
  const uids = { early: randomUUID(), late: randomUUID(), other: randomUUID() };
  const pods = { early: root.child(podPath(uids.early)), late: root.child(podPath(uids.late)) };
  const peer = root.child('peer');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--discover', 'pods'] });
  await waitFor('2 pods attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  const topo = makeTopology(t);
  const send = (cgroup: string, count: number, family: 4 | 6 = 4) =>
    udpExchange({
      senderCgroup: cgroup,
      receiverCgroup: peer.path,
      ...topo.toPeer('external', family),
      family,
      count,
      payload: 100,
    });
  await send(pods.early.path, 10);
  await send(pods.late.path, 20, 6);
  const view = async (uid: string) => (await agent.cgroups()).filter((c) => c.uid === uid);
  await waitFor('counts read', async () => ((await view(uids.late))[0]?.egress.packets === '20' ? true : undefined));
  await agent.kill('SIGTERM'); // a reboot stops the agent first: its last counts are saved

  // The reboot: pins gone with bpffs (nothing holds the links: they detach), the pods' cgroups made anew.
  new PinDir(agent.bpffs).removeAll();
  for (const pod of Object.values(pods)) rmdirSync(pod.path);
  const early = root.child(podPath(uids.early));
  const other = root.child(podPath(uids.other)); // a pod new after the reboot
  // After a real reboot the kernel gives the same cgroup ids out again: the
  // saved records' ids are now those of other cgroups. (This host cannot
  // reboot; the state file is made to say so: another boot, reused ids.)
  const statePath = `${agent.stateDir}/state.json`;
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as { boot: unknown; live: { id: string; uid?: string }[] };
  assert.equal(typeof state.boot, 'string', 'the state file names the boot it was written in');
  state.boot = randomUUID();
  for (const r of state.live) r.id = String(r.uid === uids.early ? other.id : early.id);
  writeFileSync(statePath, JSON.stringify(state));
  await agent.restart();
  await waitFor('early attached', async () =>
    (await view(uids.early)).some((c) => c.id === String(early.id)) ? true : undefined,
  );
  const late = root.child(podPath(uids.late));
  await waitFor('late attached', async () =>
    (await view(uids.late)).some((c) => c.id === String(late.id)) ? true : undefined,
  );
  await send(early.path, 5);
  await send(late.path, 7, 6);

  const expect = { early: 15 * udpDatagramBytes(4, 100), late: 27 * udpDatagramBytes(6, 100) };
  for (const name of ['early', 'late'] as const) {
    const units = await waitFor(`${name} counted on`, async () => {
      const v = await view(uids[name]);
      return v[0]?.egress.bytes === String(expect[name]) ? v : undefined;
    });
    assert.equal(units.length, 1, `one unit per pod, no final of its earlier cgroup: ${JSON.stringify(units)}`);
    assert.equal(units[0]!.state, 'live');
    assert.equal(units[0]!.peers?.egress.external?.bytes, String(expect[name]), 'the classes carry on too');
  }
  const [fresh] = await view(uids.other);
  assert.equal(
    fresh?.egress.bytes,
    '0',
    `the new pod whose cgroup has an id the earlier boot gave another pod counts from zero: ${JSON.stringify(fresh)}`,
  );
  const metrics = await agent.metrics();
  assert.equal(
    sample(metrics, 'podmeter_pod_network_bytes_total', {
      uid: uids.late,
      direction: 'egress',
      namespace: '',
      pod: '',
    }),
    expect.late,
  );
});

test('finals drop out after --retention', async (t) => {
  const root = makeTestCgroup(t);
  const brief = root.child('brief');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path, args: ['--retention', '1', '--interval', '0.2'] });
  await waitFor('attached', () => (attached(brief.path) ? true : undefined));
  rmdirSync(brief.path);
  await waitFor('terminated', async () => (await agent.cgroups()).find((c) => c.state === 'terminated'));
  await waitFor('pruned', async () => ((await agent.cgroups()).length === 0 ? true : undefined));
});
