/**
 * In-place upgrade of pinned programs (agent/counting/upgrade.ts): an agent
 * of a new version finds the pins an earlier version left (other programs,
 * one map fewer), loads its object reusing the pinned maps, moves every
 * pinned link onto its programs (BPF_LINK_UPDATE) and replaces the program
 * pins; the counts of every attached cgroup continue, exact to the byte. The
 * earlier version is bpf/podmeter.bpf.c built with -DPODMETER_TEST_EARLIER
 * (the Makefile's clang line) into a temporary directory: other code, the
 * same counts, no podmeter_gen. Also: a start with the same programs changes
 * nothing, and an upgrade stopped half-way (a crash after some links moved,
 * links the upgrade must leave alone) keeps every cgroup counting and is
 * finished by the next start. Needs root, cgroup v2, bpffs and clang.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { Meter } from '../../agent/counting/meter.ts';
import { MAP_KEYS, PinDir, takeMap } from '../../agent/counting/pins.ts';
import {
  BpfMap,
  BpfObject,
  bpfObjectPath,
  DIRECTIONS,
  enableRunTimeStats,
  Link,
  Program,
  StatsMap,
  type Direction,
  type MapObject,
} from '../../agent/kernel/bpf.ts';
import { PODMETER_MAPS, PODMETER_PROGRAMS } from '../../agent/kernel/contract.generated.ts';
import { SlotNames } from '../../agent/peers/classes.ts';
import { networkTotal, type Traffic } from '../../common/contract/counts.ts';
import { attachMeter, loadPassthrough } from '../helpers/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { makeTestCgroup, type TestCgroup } from '../helpers/cgroups.ts';
import { buildEarlier, pinAsAgent, pinLinks } from '../helpers/earlier.ts';
import { waitFor } from '../helpers/poll.ts';
import { makeTopology, type Topology } from '../helpers/topology.ts';
import { udpDatagramBytes, udpExchange, type Family } from '../helpers/traffic.ts';

const UPGRADED = "pins upgraded in place to this version's programs and maps: counts continue";
const IN_PART = 'pins upgraded in part';

/** A pin directory of the test's own. */
function pinDir(t: test.TestContext): PinDir {
  return new PinDir(join(makeBpffsDir(t).path, 'podmeter'));
}

/** The kernel id of what is pinned at `path` (a program, map or link). */
function pinnedId(path: string, kind: 'program' | 'map' | 'link'): number {
  const object =
    kind === 'program'
      ? Program.fromPin(path, 'pinned', 0)
      : kind === 'map'
        ? (BpfMap.fromPin(path) as MapObject)
        : Link.fromPin(path);
  try {
    return object instanceof Link ? object.info().progId : object.info().id;
  } finally {
    object.close();
  }
}

/** The program each of a cgroup's pinned links runs. */
function linkPrograms(pins: PinDir, cgroup: TestCgroup): Record<Direction, number> {
  return {
    ingress: pinnedId(pins.link(cgroup.id, 'ingress'), 'link'),
    egress: pinnedId(pins.link(cgroup.id, 'egress'), 'link'),
  };
}

function programIds(pins: PinDir): Record<Direction, number> {
  return { ingress: pinnedId(pins.program('ingress'), 'program'), egress: pinnedId(pins.program('egress'), 'program') };
}

function tagOf(path: string): string {
  const program = Program.fromPin(path, 'pinned', 0);
  try {
    return program.info().tag;
  } finally {
    program.close();
  }
}

/** A logger whose JSON lines the test reads. */
function capturedLog(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines };
}

/** Network traffic of a cgroup in one direction, read from the pinned counters. */
function counted(pins: PinDir, cgroup: TestCgroup, direction: Direction): Traffic | undefined {
  const map = StatsMap.fromPin(pins.map('stats'));
  try {
    const sums = map.read(cgroup.id, direction);
    return sums && networkTotal(new SlotNames([]).byClass(sums));
  } finally {
    map.close();
  }
}

/** Sends `count` datagrams from `sender` (the pod netns) to `receiver` (the world's external address); what each side counts. */
async function send(
  topo: Topology,
  sender: TestCgroup,
  receiver: TestCgroup,
  family: Family,
  count: number,
  payload: number,
): Promise<Traffic> {
  await udpExchange({
    senderCgroup: sender,
    receiverCgroup: receiver,
    ...topo.toPeer('external', family),
    family,
    count,
    payload,
  });
  return { bytes: BigInt(count * udpDatagramBytes(family, payload)), packets: BigInt(count) };
}

function plus(a: Traffic, b: Traffic): Traffic {
  return { bytes: a.bytes + b.bytes, packets: a.packets + b.packets };
}

/** The start adopted the pins as they were: no upgrade said. */
function assertFastPath(lines: Record<string, unknown>[]): void {
  const msgs = lines.map((l) => String(l.msg));
  assert.ok(msgs.includes('adopted pinned programs and counter map'), msgs.join('; '));
  assert.ok(!msgs.some((m) => m === UPGRADED || m.startsWith(IN_PART)), msgs.join('; '));
}

/** Both sides of a sender -> receiver pair count `total`. */
function assertCounted(pins: PinDir, sender: TestCgroup, receiver: TestCgroup, total: Traffic, when: string): void {
  assert.deepEqual(counted(pins, sender, 'egress'), total, `sender egress ${when}`);
  assert.deepEqual(counted(pins, receiver, 'ingress'), total, `receiver ingress ${when}`);
}

test("an earlier version's pins are upgraded in place: every link moved to the new programs, counts continue exactly", async (t) => {
  const earlier = buildEarlier(t);
  const topo = makeTopology(t);
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const gone = makeTestCgroup(t);
  const pins = pinDir(t);
  pinAsAgent(pins, earlier, [sender, receiver, gone]);
  const before = {
    programs: programIds(pins),
    tags: { ingress: tagOf(pins.program('ingress')), egress: tagOf(pins.program('egress')) },
    maps: Object.fromEntries(
      MAP_KEYS.filter((k) => existsSync(pins.map(k))).map((k) => [k, pinnedId(pins.map(k), 'map')]),
    ),
  };
  assert.equal(existsSync(pins.map('gen')), false, 'the earlier version has no podmeter_gen');
  const round1 = await send(topo, sender, receiver, 4, 50, 200);
  assertCounted(pins, sender, receiver, round1, 'by the earlier programs');
  // A cgroup removed while no agent ran: its links are defunct, nothing to move.
  await gone.remove();
  await waitFor('the removed cgroup’s links to be defunct', () => {
    const link = Link.fromPin(pins.link(gone.id, 'ingress'));
    try {
      return link.info().cgroupId === 0n ? true : undefined;
    } finally {
      link.close();
    }
  });

  const earlierEgress = Program.fromPin(pins.program('egress'), PODMETER_PROGRAMS.egress.name, 1);
  t.after(() => earlierEgress.close());
  const { log, lines } = capturedLog();
  const meter = Meter.open(pins.root, log);
  t.after(() => meter.close());

  const now = { ingress: meter.programs.ingress.info(), egress: meter.programs.egress.info() };
  for (const d of DIRECTIONS) {
    assert.notEqual(now[d].tag, before.tags[d], `${d}: the object's program differs from the earlier one`);
    assert.notEqual(now[d].id, before.programs[d]);
  }
  assert.deepEqual(programIds(pins), { ingress: now.ingress.id, egress: now.egress.id }, 'the program pins replaced');
  for (const cgroup of [sender, receiver])
    assert.deepEqual(
      linkPrograms(pins, cgroup),
      { ingress: now.ingress.id, egress: now.egress.id },
      'links run the new programs',
    );
  for (const d of DIRECTIONS) assert.equal(existsSync(pins.staging(d)), false, 'no staging pin left');
  // The pinned maps reused (same kernel maps), the one the earlier version lacked made and pinned.
  for (const [key, id] of Object.entries(before.maps))
    assert.equal(meter.maps[key as keyof typeof meter.maps].id, id, key);
  assert.equal(pinnedId(pins.map('gen'), 'map'), meter.maps.gen.id);
  assert.ok(now.egress.mapIds.includes(meter.maps.gen.id), 'the new program uses the new map');

  const upgrades = lines.filter((l) => l.msg === UPGRADED);
  assert.equal(upgrades.length, 1, JSON.stringify(lines));
  assert.deepEqual(upgrades[0]!.programs, {
    ingress: { from: before.tags.ingress, to: now.ingress.tag },
    egress: { from: before.tags.egress, to: now.egress.tag },
  });
  assert.deepEqual(upgrades[0]!.links, { moved: 4, already: 0, gone: 2, failed: 0 });
  assert.deepEqual(upgrades[0]!.mapsCreated, [PODMETER_MAPS.gen.pin]);

  // Counting goes on in the same storage entries, by the new code.
  const stats = enableRunTimeStats();
  t.after(() => stats.close());
  const round2 = await send(topo, sender, receiver, 6, 30, 1000);
  assertCounted(pins, sender, receiver, plus(round1, round2), 'after the upgrade');
  assert.ok(meter.programs.egress.info().runCnt > 0n, 'the new egress program ran');

  // BPF_F_REPLACE: a link no longer runs the earlier program, so an update from it is refused.
  const link = Link.fromPin(pins.link(sender.id, 'egress'));
  t.after(() => link.close());
  assert.throws(() => link.update(meter.programs.egress, earlierEgress), { code: 'EPERM' });
});

test('a start with the same programs changes nothing: the pinned programs adopted, no link moved', (t) => {
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const pins = pinDir(t);
  const first = Meter.open(pins.root, pino({ level: 'silent' }));
  attachMeter(first, sender);
  attachMeter(first, receiver);
  first.close();
  const programs = programIds(pins);
  const links = { sender: linkPrograms(pins, sender), receiver: linkPrograms(pins, receiver) };
  const maps = Object.fromEntries(MAP_KEYS.map((k) => [k, pinnedId(pins.map(k), 'map')]));

  const { log, lines } = capturedLog();
  const meter = Meter.open(pins.root, log);
  t.after(() => meter.close());
  assert.equal(meter.adopted, true);
  assert.deepEqual({ ingress: meter.programs.ingress.info().id, egress: meter.programs.egress.info().id }, programs);
  assert.deepEqual(programIds(pins), programs);
  assert.deepEqual({ sender: linkPrograms(pins, sender), receiver: linkPrograms(pins, receiver) }, links);
  assert.deepEqual(Object.fromEntries(MAP_KEYS.map((k) => [k, meter.maps[k].id])), maps);
  assertFastPath(lines);
});

test('an upgrade stopped half-way keeps every cgroup counting, and the next start finishes it', async (t) => {
  const earlier = buildEarlier(t);
  const topo = makeTopology(t);
  const sender = makeTestCgroup(t);
  const receiver = makeTestCgroup(t);
  const foreign = makeTestCgroup(t);
  const pins = pinDir(t);
  pinAsAgent(pins, earlier, [sender, receiver]);
  const earlierPrograms = programIds(pins);
  let total = await send(topo, sender, receiver, 4, 20, 100);

  // What an upgrade that crashed part-way leaves: the new object loaded over
  // the pinned maps, the map it added pinned, the sender's links moved (its
  // programs pinned nowhere), the receiver's not.
  const reused = new Map<string, MapObject>();
  for (const k of MAP_KEYS) if (existsSync(pins.map(k))) reused.set(PODMETER_MAPS[k].name, BpfMap.fromPin(pins.map(k)));
  const object = BpfObject.load(bpfObjectPath('podmeter'), reused);
  for (const map of reused.values()) map.close();
  const crashed: Record<Direction, number> = { ingress: 0, egress: 0 };
  try {
    const gen = takeMap(object, 'gen');
    gen.pin(pins.map('gen'));
    gen.close();
    for (const d of DIRECTIONS) {
      const program = object.program(PODMETER_PROGRAMS[d].name);
      const pinned = Program.fromPin(pins.program(d), PODMETER_PROGRAMS[d].name, program.attachType);
      const link = Link.fromPin(pins.link(sender.id, d));
      link.update(program, pinned);
      link.close();
      pinned.close();
      crashed[d] = program.info().id;
    }
  } finally {
    object.close();
  }
  // And links of a cgroup in podmeter's links/ that run someone else's program: the upgrade must leave them alone.
  const passthrough = loadPassthrough(t);
  pinLinks(pins, foreign, (d) => passthrough.programs[d]);
  assert.deepEqual(linkPrograms(pins, sender), crashed);
  assert.deepEqual(linkPrograms(pins, receiver), earlierPrograms);
  total = plus(total, await send(topo, sender, receiver, 6, 20, 700));
  assertCounted(pins, sender, receiver, total, 'half-way (sender on the new program, receiver on the earlier one)');

  // Start 1: every podmeter link moved, the foreign ones left; so the program pins stay.
  const one = capturedLog();
  const meter = Meter.open(pins.root, one.log);
  const started = { ingress: meter.programs.ingress.info().id, egress: meter.programs.egress.info().id };
  try {
    const warned = one.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(IN_PART));
    assert.equal(warned.length, 1, JSON.stringify(one.lines));
    assert.deepEqual(warned[0]!.links, { moved: 4, already: 0, gone: 0, failed: 2 });
    assert.match(JSON.stringify(warned[0]!.failed), /not podmeter's: its name differs/);
    assert.deepEqual(programIds(pins), earlierPrograms, 'program pins kept while links remain to move');
    for (const cgroup of [sender, receiver]) assert.deepEqual(linkPrograms(pins, cgroup), started);
    total = plus(total, await send(topo, sender, receiver, 4, 10, 1300));
    assertCounted(pins, sender, receiver, total, 'after the partial upgrade');
  } finally {
    meter.close();
  }

  // The foreign links go (their owner detached them); start 2 finishes the job.
  for (const d of DIRECTIONS) {
    const link = Link.fromPin(pins.link(foreign.id, d));
    link.detach();
    link.close();
    PinDir.unpin(pins.link(foreign.id, d));
  }
  const two = capturedLog();
  const again = Meter.open(pins.root, two.log);
  const finished = { ingress: again.programs.ingress.info().id, egress: again.programs.egress.info().id };
  const upgraded = two.lines.filter((l) => l.msg === UPGRADED);
  assert.equal(upgraded.length, 1, JSON.stringify(two.lines));
  assert.deepEqual(upgraded[0]!.links, { moved: 4, already: 0, gone: 0, failed: 0 });
  assert.deepEqual(upgraded[0]!.mapsCreated, []);
  assert.deepEqual(programIds(pins), finished, 'program pins replaced');
  for (const cgroup of [sender, receiver]) assert.deepEqual(linkPrograms(pins, cgroup), finished);
  total = plus(total, await send(topo, sender, receiver, 6, 10, 64));
  assertCounted(pins, sender, receiver, total, 'after the next start');

  // And a start after that is the fast path again.
  again.close();
  const three = capturedLog();
  Meter.open(pins.root, three.log).close();
  assertFastPath(three.lines);
  assert.deepEqual(programIds(pins), finished);
});
