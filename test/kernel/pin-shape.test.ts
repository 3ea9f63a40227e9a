// Pins of another shape (issue 23, item 3): the agent adopts podmeter's
// programs and maps from bpffs at start, so anyone who can write the bpffs
// mount (or an agent of another version) decides what it would read and
// write. Each case replaces one pin of a real pin directory with an object of
// another shape and starts the Meter on it: the start is refused with a
// BpfError naming the pin and both shapes, and nothing is written into the
// stranger. Needs root (BPF, bpffs) and python3 (test/helpers/mapholder.py).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { inspect } from 'node:util';
import pino from 'pino';
import { Meter } from '../../agent/counting/meter.ts';
import { PinDir } from '../../agent/counting/pins.ts';
import { BpfMap, BpfObject, bpfObjectPath, type MapObject } from '../../agent/kernel/bpf.ts';
import { ErrorCodes } from '../../common/errors.ts';
import { BpfError } from '../../agent/kernel/errors.ts';
import { loadPassthrough, loadPodmeter } from '../helpers/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { BPF_F_NO_PREALLOC, MAP_TYPE, startHolder, uniqueComm } from '../helpers/mapHolder.ts';

const silent = pino({ level: 'silent' });
const LPM_TRIE = 11;

/** A pin directory as an agent left it (programs and maps pinned, no links), and its pins. */
function pinnedByAnAgent(t: test.TestContext): PinDir {
  const dir = makeBpffsDir(t);
  const bpffs = join(dir.path, 'podmeter');
  Meter.open(bpffs, silent).close();
  return new PinDir(bpffs);
}

/** Replaces the pin at `path` with `object`'s. */
function replacePin(path: string, object: { pin(path: string): void }): void {
  PinDir.unpin(path);
  object.pin(path);
}

function assertRefused(pins: PinDir, pin: string, ...mentions: RegExp[]): BpfError {
  let caught: unknown;
  try {
    Meter.open(pins.root, silent, ['corp']).close();
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof BpfError,
    `expected the start to be refused, got ${caught === undefined ? 'a started Meter' : inspect(caught)}`,
  );
  assert.equal(caught.code, ErrorCodes.pinShape, caught.message);
  assert.equal(caught.path, pin);
  assert.ok(caught.message.includes(`'${pin}'`), `the message names the pin: ${caught.message}`);
  for (const m of mentions) assert.match(caught.message, m);
  return caught;
}

/** Map type, key and value size of the slot names, another type: only the type tells it apart. */
test('a map of another type at map_slot_names is refused and the class names are not written into it', async (t) => {
  const pins = pinnedByAnAgent(t);
  const holder = await startHolder(t, { comm: uniqueComm('ps') });
  const made = await holder.create({ name: 'podmeter_names', type: MAP_TYPE.hash, key: 4, value: 64, max: 15 });
  PinDir.unpin(pins.map('names'));
  await holder.pin(made.fd, pins.map('names'));
  await holder.stop();
  assertRefused(
    pins,
    pins.map('names'),
    /its type differs/,
    /pinned: hash, key 4 B, value 64 B, max_entries 15/,
    /expected: array, key 4 B, value 64 B, max_entries 15, from .*podmeter\.bpf\.o/,
  );
  const stranger = BpfMap.fromPin(pins.map('names'));
  t.after(() => stranger.close());
  assert.deepEqual(stranger.keys(4), [], 'no class name was written into the stranger');
});

test("another version's counter map (the 16-byte storage of agents before peer classes) at map_counters is refused", (t) => {
  const pins = pinnedByAnAgent(t);
  const legacy = BpfObject.load(bpfObjectPath('legacy'));
  t.after(() => legacy.close());
  const old = legacy.takeStatsMap('podmeter_stats');
  t.after(() => old.close());
  replacePin(pins.map('stats'), old);
  assertRefused(
    pins,
    pins.map('stats'),
    /its value size differs/,
    /pinned: percpu_cgroup_storage, key 16 B, value 16 B/,
    /expected: percpu_cgroup_storage, key 16 B, value \d+ B/,
  );
});

test('a peer trie of another size at map_peers is refused and stays empty', async (t) => {
  const pins = pinnedByAnAgent(t);
  const holder = await startHolder(t, { comm: uniqueComm('ps') });
  const made = await holder.create({
    name: 'podmeter_peers',
    type: LPM_TRIE,
    key: 20,
    value: 4,
    max: 1024,
    flags: BPF_F_NO_PREALLOC,
  });
  PinDir.unpin(pins.map('peers'));
  await holder.pin(made.fd, pins.map('peers'));
  await holder.stop();
  assertRefused(pins, pins.map('peers'), /its max_entries differs/, /max_entries 1024/, /max_entries 65536/);
  const stranger = BpfMap.fromPin(pins.map('peers'));
  t.after(() => stranger.close());
  assert.deepEqual(stranger.keys(20), []);
});

test('a peer trie of the right shape that the pinned programs do not use is refused', (t) => {
  const pins = pinnedByAnAgent(t);
  const other = loadPodmeter(t);
  replacePin(pins.map('peers'), other.peers!);
  assertRefused(pins, pins.program('ingress'), /does not use the pinned map_peers/);
});

test('another cgroup_skb program at prog_ingress is refused', (t) => {
  const pins = pinnedByAnAgent(t);
  const other = loadPassthrough(t);
  replacePin(pins.program('ingress'), other.programs.ingress);
  assertRefused(
    pins,
    pins.program('ingress'),
    /its name differs/,
    /it does not use the pinned map_counters \(/, // another version's program need only count into the pinned counters
    /pinned: cgroup_skb 'passthrough_ing'/,
    /expected: cgroup_skb 'podmeter_ingres' \(attach type cgroup_inet_ingress/,
  );
});

test('pins of the right shape are adopted (the same maps, ids unchanged)', (t) => {
  const pins = pinnedByAnAgent(t);
  const before = (path: string): number => {
    const m: MapObject = BpfMap.fromPin(path);
    const id = m.id;
    m.close();
    return id;
  };
  const ids = [pins.map('stats'), pins.map('peers'), pins.map('gen'), pins.map('names')].map(before);
  const meter = Meter.open(pins.root, silent, ['corp']);
  t.after(() => meter.close());
  assert.equal(meter.adopted, true);
  assert.deepEqual([meter.maps.stats.id, meter.maps.peers.id, meter.maps.gen.id, meter.maps.names.id], ids);
});
