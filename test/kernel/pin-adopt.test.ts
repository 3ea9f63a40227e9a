// Pin and adopt: programs, map and links pinned in bpffs outlive the process
// that made them; a new process re-opens them from the pins and the counters
// go on from where they were.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { cgroupId, Link, queryCgroup, StatsMap } from '../../agent/kernel/bpf.ts';
import { SlotNames } from '../../agent/peers/classes.ts';
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { sleep } from '../helpers/cleanup.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange } from '../helpers/traffic.ts';

const BPF_TS = new URL('../../agent/kernel/bpf.ts', import.meta.url).href;
const TRAFFIC_TS = new URL('../helpers/traffic.ts', import.meta.url).href;
const CLASSES_TS = new URL('../../agent/peers/classes.ts', import.meta.url).href;
const COUNTS_TS = new URL('../../common/contract/counts.ts', import.meta.url).href;

// Runs in a new node process: adopts the pins, reads, sends round 2, reads again.
const ADOPT_SCRIPT = `
const { Link, Program, StatsMap, cgroupId } = await import(${JSON.stringify(BPF_TS)});
const { SlotNames } = await import(${JSON.stringify(CLASSES_TS)});
const { networkTotal } = await import(${JSON.stringify(COUNTS_TS)});
const { udpExchange } = await import(${JSON.stringify(TRAFFIC_TS)});
const cfg = JSON.parse(process.env.PODMETER_TEST_ADOPT);
const map = StatsMap.fromPin(cfg.pins.map);
const links = Object.fromEntries(Object.entries(cfg.pins.links).map(([k, p]) => [k, Link.fromPin(p)]));
const programs = { ingress: Program.fromPin(cfg.pins.programs.ingress, 'podmeter_ingress', 0), egress: Program.fromPin(cfg.pins.programs.egress, 'podmeter_egress', 1) };
const names = new SlotNames([]);
const total = (path, d) => networkTotal(names.byClass(map.read(cgroupId(path), d)));
const read = () => ({
  sender: { ingress: total(cfg.sender, 'ingress'), egress: total(cfg.sender, 'egress') },
  receiver: { ingress: total(cfg.receiver, 'ingress'), egress: total(cfg.receiver, 'egress') },
});
const before = read();
await udpExchange({ senderCgroup: cfg.sender, receiverCgroup: cfg.receiver, ...cfg.endpoints, family: 6, count: cfg.count, payload: cfg.payload });
const after = read();
const out = {
  before, after,
  links: Object.fromEntries(Object.entries(links).map(([k, l]) => [k, l.info()])),
  programIds: { ingress: programs.ingress.info().id, egress: programs.egress.info().id },
  mapId: map.info().id,
};
for (const l of Object.values(links)) l.close();
for (const p of Object.values(programs)) p.close();
map.close();
process.stdout.write(JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? v.toString() + 'n' : v)));
`;

function revive(_: string, v: unknown): unknown {
  return typeof v === 'string' && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v;
}

test('pinned links and map survive the process; a new process adopts them and counting continues', async (t) => {
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const pins = makeBpffsDir(); // removed below, after the links are detached
  const paths = {
    map: join(pins.path, 'podmeter_stats'),
    programs: { ingress: join(pins.path, 'prog_ingress'), egress: join(pins.path, 'prog_egress') },
    links: {
      senderIngress: join(pins.path, `link_${sender.id}_ingress`),
      senderEgress: join(pins.path, `link_${sender.id}_egress`),
      receiverIngress: join(pins.path, `link_${receiver.id}_ingress`),
      receiverEgress: join(pins.path, `link_${receiver.id}_egress`),
    },
  };
  // Detach the pinned links explicitly, then unpin, even if the test failed midway.
  t.after(async () => {
    for (const p of Object.values(paths.links)) {
      if (!existsSync(p)) continue;
      const l = Link.fromPin(p);
      l.detach();
      l.close();
    }
    await pins.remove();
  });

  // Round 1, this process: load, attach, pin everything, count, close every fd.
  const pm = loadPodmeter();
  const ids = {
    map: pm.stats!.info().id,
    ingress: pm.programs.ingress.info().id,
    egress: pm.programs.egress.info().id,
  };
  const s = pm.attach(sender);
  const r = pm.attach(receiver);
  pm.stats!.pin(paths.map);
  pm.programs.ingress.pin(paths.programs.ingress);
  pm.programs.egress.pin(paths.programs.egress);
  s.ingress!.pin(paths.links.senderIngress);
  s.egress!.pin(paths.links.senderEgress);
  r.ingress!.pin(paths.links.receiverIngress);
  r.egress!.pin(paths.links.receiverEgress);
  await udpExchange({
    senderCgroup: sender,
    receiverCgroup: receiver,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 100,
    payload: 300,
  });
  const round1 = { bytes: BigInt(100 * udpDatagramBytes(4, 300)), packets: 100n };
  assert.deepEqual(pm.counters(sender).egress, round1);
  pm.close();

  // No fd left in this process: the pins alone keep the programs attached.
  assert.deepEqual(queryCgroup(sender.path, 'egress'), [ids.egress]);
  assert.deepEqual(queryCgroup(sender.path, 'ingress'), [ids.ingress]);
  assert.deepEqual(queryCgroup(receiver.path, 'ingress'), [ids.ingress]);

  // Round 2, a new process: adopt the pins, check, send more.
  const cfg = {
    pins: paths,
    sender: sender.path,
    receiver: receiver.path,
    endpoints: { ...topo.toPeer('external', 6), netns: topo.pod.name, receiverNetns: topo.world.name },
    count: 40,
    payload: 1234,
  };
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', ADOPT_SCRIPT], {
    env: { ...process.env, PODMETER_TEST_ADOPT: JSON.stringify(cfg) },
    timeout: 60_000,
  });
  const child = JSON.parse(stdout, revive) as {
    before: Record<'sender' | 'receiver', Record<'ingress' | 'egress', unknown>>;
    after: Record<'sender' | 'receiver', Record<'ingress' | 'egress', unknown>>;
    links: Record<string, { progId: number; cgroupId: bigint; attachType: number; typeName: string }>;
    programIds: { ingress: number; egress: number };
    mapId: number;
  };
  const zero = { bytes: 0n, packets: 0n };
  const round2 = { bytes: BigInt(40 * udpDatagramBytes(6, 1234)), packets: 40n };
  const total = { bytes: round1.bytes + round2.bytes, packets: round1.packets + round2.packets };

  // The same kernel objects...
  assert.equal(child.mapId, ids.map);
  assert.deepEqual(child.programIds, { ingress: ids.ingress, egress: ids.egress });
  assert.deepEqual(child.links.senderEgress, {
    ...child.links.senderEgress,
    typeName: 'cgroup',
    progId: ids.egress,
    cgroupId: sender.id,
    attachType: 1,
  });
  assert.deepEqual(child.links.senderIngress, {
    ...child.links.senderIngress,
    progId: ids.ingress,
    cgroupId: sender.id,
    attachType: 0,
  });
  assert.deepEqual(child.links.receiverIngress, {
    ...child.links.receiverIngress,
    progId: ids.ingress,
    cgroupId: receiver.id,
  });
  // ...with round 1's counts, then both rounds'.
  assert.deepEqual(child.before, {
    sender: { ingress: zero, egress: round1 },
    receiver: { ingress: round1, egress: zero },
  });
  assert.deepEqual(child.after, {
    sender: { ingress: zero, egress: total },
    receiver: { ingress: total, egress: zero },
  });

  // And back in this process, from the pin once more.
  const map = StatsMap.fromPin(paths.map);
  try {
    const names = new SlotNames([]);
    assert.deepEqual(names.byClass(map.read(cgroupId(sender.path), 'egress')!).external, total);
    assert.deepEqual(names.byClass(map.read(cgroupId(receiver.path), 'ingress')!).external, total);
  } finally {
    map.close();
  }

  // Clean up: detach the links through their pins, unpin; nothing stays attached.
  for (const p of Object.values(paths.links)) {
    const l = Link.fromPin(p);
    l.detach();
    l.close();
  }
  await pins.remove();
  for (const cg of [sender.path, receiver.path]) {
    assert.deepEqual(queryCgroup(cg, 'ingress'), []);
    assert.deepEqual(queryCgroup(cg, 'egress'), []);
  }
});

test('a pinned link alone keeps counting after its fd is closed; unpinning it detaches', async (t) => {
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const pins = makeBpffsDir(t);
  const pm = loadPodmeter(t);
  const link = pm.attach(sender, ['egress']).egress!;
  const pinPath = join(pins.path, 'egress');
  link.pin(pinPath);
  link.close();
  const each = udpDatagramBytes(4, 1);
  const send = (count: number): Promise<unknown> =>
    udpExchange({
      senderCgroup: sender,
      receiverCgroup: receiver,
      ...topo.toPeer('external', 4),
      family: 4,
      count,
      payload: 1,
    });
  await send(10);
  assert.deepEqual(pm.counters(sender).egress, { bytes: BigInt(10 * each), packets: 10n });

  // The pin held the last reference: unpinning releases the link, which the
  // kernel detaches from a workqueue (bpf_link_put defers), so shortly after.
  await pins.remove();
  const unpinned = Date.now();
  while (queryCgroup(sender.path, 'egress').length > 0 && Date.now() - unpinned < 60_000) await sleep(10);
  assert.deepEqual(queryCgroup(sender.path, 'egress'), [], 'detached after the unpin (deadline 60 s)');
  await send(5);
  // Nothing counts any more, but the kernel (>= 5.9) keeps the storage with the
  // cgroup until the cgroup (or the map) is freed, not with the attachment...
  assert.deepEqual(pm.counters(sender).egress, { bytes: BigInt(10 * each), packets: 10n });
  // ...so attaching the same program again (same map) continues from there.
  const again = pm.attach(sender, ['egress']).egress!;
  await send(3);
  assert.deepEqual(pm.counters(sender).egress, { bytes: BigInt(13 * each), packets: 13n });
  again.close();

  // The entry goes once the cgroup itself is gone (asynchronously released).
  const id = sender.id;
  await sender.remove();
  const start = Date.now();
  while (pm.counters(id).egress !== undefined && Date.now() - start < 60_000) await sleep(20);
  assert.equal(pm.counters(id).egress, undefined, 'storage released after the rmdir (deadline 60 s)');
  t.diagnostic(`storage unreadable ${Date.now() - start} ms after the rmdir`);
});
