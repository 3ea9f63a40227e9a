/**
 * The tracker's decisions (agent/counting/tracker.ts) on a fake kernel: when
 * a unit is attached, adopted or retried, what its counts are made of (the
 * kernel's read on top of a base carried from before), that a draining
 * unit's counts never go back, when it is finalised, what happens to
 * finals, and links made anew over a storage that outlived the old ones
 * (or not). The kernel is a map of cgroup id -> counts (FakeMeter); cgroups
 * are plain directories (a cgroup's id is its inode number), the state file
 * a real one in a temp directory. No root, no kernel objects.
 * agent/counting, agent/lifecycle (test/README.md) run the same code on the
 * real kernel.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { UnitIdentity } from '../../agent/cgroups/units.ts';
import { type Cgroup, cgroupId } from '../../agent/kernel/bpf.ts';
import type { KernelRead } from '../../agent/counting/meter.ts';
import type { LinkPin } from '../../agent/counting/pins.ts';
import { StateStore } from '../../agent/counting/state.ts';
import { Tracker } from '../../agent/counting/tracker.ts';
import type { TrackerMeter } from '../../agent/counting/trackerPorts.ts';
import type { Unit } from '../../agent/counting/unit.ts';
import { NO_COUNTS, unitCounts, type ClassTraffic, type UnitCounts } from '../../common/contract/counts.ts';
import { waitFor } from '../helpers/poll.ts';

const log = pino({ level: 'silent' });

/** A unit's counts: `ingress` and `egress` bytes (one packet each) to the external class. */
function counts(ingress: bigint, egress: bigint): UnitCounts {
  const cls = (bytes: bigint): ClassTraffic => (bytes === 0n ? {} : { external: { bytes, packets: 1n } });
  return unitCounts({ ingress: cls(ingress), egress: cls(egress) });
}
const bytes = (u: UnitCounts) => [u.network.ingress.bytes, u.network.egress.bytes];

/** The kernel as the tracker sees it: links per cgroup id and the counts their storage holds. */
class FakeMeter implements TrackerMeter {
  readonly links = new Map<bigint, 'attached' | 'stale'>();
  /** Present while the kernel has the cgroup's storage; a new object whenever its counts change. */
  readonly storage = new Map<bigint, KernelRead>();
  readonly calls: string[] = [];
  attachError: Error | undefined;
  readonly pins = {
    listLinks: (): LinkPin[] => [...this.links.keys()].map((id) => ({ cgroupId: id, direction: 'egress', path: '' })),
  };

  attach({ id }: Cgroup): void {
    this.calls.push(`attach ${id}`);
    if (this.attachError !== undefined) throw this.attachError;
    this.links.set(id, 'attached');
    // The storage lives with the cgroup (from 5.9): links made anew count on into what it holds.
    if (!this.storage.has(id)) this.storage.set(id, { sums: new BigUint64Array(0), counts: NO_COUNTS });
  }
  relink(cgroup: Cgroup): void {
    this.calls.push(`relink ${cgroup.id}`);
    this.attach(cgroup);
  }
  linkState(id: bigint): 'attached' | 'none' | 'stale' {
    return this.links.get(id) ?? 'none';
  }
  release(id: bigint): void {
    this.calls.push(`release ${id}`);
    this.links.delete(id);
  }
  read(id: bigint): KernelRead | undefined {
    return this.storage.get(id);
  }
  readMany(ids: readonly bigint[]): (KernelRead | undefined)[] {
    return ids.map((id) => this.storage.get(id));
  }
  /** The cgroup's links count this much in all. */
  count(id: bigint, c: UnitCounts): void {
    this.storage.set(id, { sums: new BigUint64Array(0), counts: c });
  }
}

interface Setup {
  root: string;
  stateDir: string;
  meter: FakeMeter;
  tracker: Tracker;
  events: string[];
  /** Makes a cgroup directory; returns its identity and its id. */
  cgroup: (relPath: string, uid?: string) => { identity: UnitIdentity; id: bigint };
}

function setup(t: TestContext, options: { root?: string; stateDir?: string; retentionMs?: number } = {}): Setup {
  const root = options.root ?? mkdtempSync(join(tmpdir(), 'podmeter-test-tracker-'));
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'podmeter-test-state-'));
  const meter = new FakeMeter();
  const tracker = new Tracker({
    meter,
    root,
    store: new StateStore(stateDir),
    log,
    retentionMs: options.retentionMs ?? 60_000,
  });
  t.after(async () => {
    // Its last save written first: a save still on its way raced the removal (ENOTEMPTY, 1 run in 15).
    await tracker.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });
  const events: string[] = [];
  tracker.on('attached', (u, latency) =>
    events.push(`attached ${u.relPath} ${latency === undefined ? 'adopted' : 'new'}`),
  );
  tracker.on('emptied', (u) => events.push(`emptied ${u.relPath}`));
  tracker.on('terminated', (u) => events.push(`terminated ${u.relPath}`));
  tracker.on('error', (op) => events.push(`error ${op}`));
  const cgroup = (relPath: string, uid?: string) => {
    mkdirSync(join(root, relPath), { recursive: true });
    const identity: UnitIdentity = uid === undefined ? { kind: 'cgroup', relPath } : { kind: 'pod', uid, relPath };
    return { identity, id: cgroupId(join(root, relPath)) };
  };
  return { root, stateDir, meter, tracker, events, cgroup };
}

const unitAt = (tracker: Tracker, relPath: string): Unit => {
  const unit = tracker.units().find((u) => u.relPath === relPath);
  assert.ok(unit, `no unit ${relPath}`);
  return unit;
};

test('a new cgroup is attached and counts from zero; pinned links of an earlier agent are adopted, stale ones replaced', (t) => {
  const { meter, tracker, events, cgroup } = setup(t);
  const a = cgroup('a');
  tracker.onUnit(a.identity, performance.now());
  assert.deepEqual(meter.calls, [`attach ${a.id}`]);
  assert.deepEqual(events, ['attached a new']);
  assert.equal(unitAt(tracker, 'a').state, 'live');
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [0n, 0n]);

  // Seen again (a second event for the same directory): nothing more.
  tracker.onUnit(a.identity, performance.now());
  assert.equal(meter.calls.length, 1);

  // Links an earlier agent pinned: adopted, their counts read at once.
  const b = cgroup('b');
  meter.links.set(b.id, 'attached');
  meter.count(b.id, counts(10n, 20n));
  tracker.onUnit(b.identity, performance.now());
  assert.deepEqual(meter.calls, [`attach ${a.id}`], 'adopted links are not attached again');
  assert.deepEqual(bytes(unitAt(tracker, 'b')), [10n, 20n]);
  assert.equal(events.at(-1), 'attached b adopted');

  // Pins of another cgroup that had the same id: released, then attached anew.
  const c = cgroup('c');
  meter.links.set(c.id, 'stale');
  tracker.onUnit(c.identity, performance.now());
  assert.deepEqual(meter.calls.slice(1), [`release ${c.id}`, `attach ${c.id}`]);
  assert.equal(tracker.liveCount(), 3);
});

test('a cgroup removed before it is attached is left alone', (t) => {
  const { root, meter, tracker, cgroup } = setup(t);
  const a = cgroup('a');
  rmSync(join(root, 'a'), { recursive: true });
  tracker.onUnit(a.identity, performance.now());
  assert.deepEqual(meter.calls, []);
  assert.equal(tracker.liveCount(), 0);
  assert.deepEqual(tracker.unattached(), []);
});

test('a failed attach is reported once, retried at every tick, and counted once it works', (t) => {
  const { meter, tracker, events, cgroup } = setup(t);
  const a = cgroup('a');
  meter.attachError = Object.assign(new Error('no memory'), { code: 'ENOMEM' });
  tracker.onUnit(a.identity, performance.now());
  assert.deepEqual(events, ['error attach']);
  assert.equal(tracker.liveCount(), 0);
  assert.deepEqual(
    tracker.unattached().map((u) => [u.relPath, u.reason, u.attempts]),
    [['a', 'ENOMEM', 1]],
  );
  tracker.onUnit(a.identity, performance.now()); // waiting for a retry: not tried again now
  assert.equal(meter.calls.length, 1);

  tracker.retryAttach();
  assert.deepEqual(events, ['error attach', 'error attach'], 'every failure is counted');
  assert.equal(tracker.unattached()[0]?.attempts, 2);

  meter.attachError = undefined;
  tracker.tick();
  assert.deepEqual(events.at(-1), 'attached a new');
  assert.deepEqual(tracker.unattached(), []);
  assert.equal(tracker.liveCount(), 1);
});

test('refresh takes every live unit from one read; an idle unit keeps the same count objects', (t) => {
  const { meter, tracker, cgroup } = setup(t);
  const a = cgroup('a');
  const b = cgroup('b');
  tracker.onUnit(a.identity, performance.now());
  tracker.onUnit(b.identity, performance.now());
  meter.count(a.id, counts(1n, 2n));
  meter.count(b.id, counts(3n, 4n));
  tracker.refresh();
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [1n, 2n]);
  assert.deepEqual(bytes(unitAt(tracker, 'b')), [3n, 4n]);
  tracker.credit(new Map([[a.id, counts(1n, 1n)]])); // a base: counts are made anew from each new read
  const before = unitAt(tracker, 'a').network;
  meter.count(b.id, counts(5n, 6n));
  tracker.refresh();
  assert.equal(
    unitAt(tracker, 'a').network,
    before,
    'idle: the same objects (what the annotator and the state file rely on)',
  );
  assert.deepEqual(bytes(unitAt(tracker, 'b')), [5n, 6n]);
});

test('emptied: counts read at once; removed: read until the storage goes, never going back, then final', async (t) => {
  const { meter, tracker, events, cgroup } = setup(t);
  const a = cgroup('a');
  tracker.onUnit(a.identity, performance.now());
  meter.count(a.id, counts(100n, 200n));
  tracker.onPopulated('a', true);
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [0n, 0n], 'still populated: not read');
  tracker.onPopulated('a', false);
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [100n, 200n]);
  assert.equal(events.at(-1), 'emptied a');

  meter.count(a.id, counts(150n, 250n)); // sockets outlive the processes
  tracker.onGone('a');
  const unit = unitAt(tracker, 'a');
  assert.equal(unit.state, 'draining');
  assert.deepEqual(bytes(unit), [150n, 250n]);
  // The kernel tears the storage down: it reads as zeros for a moment.
  meter.count(a.id, counts(0n, 0n));
  tracker.refresh(); // draining units are not refreshed
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(unit.state, 'draining');
  assert.deepEqual(bytes(unit), [150n, 250n], "a draining unit's counts never go back");
  meter.storage.delete(a.id);
  await waitFor('final', () => (unit.state === 'terminated' ? true : undefined), 5000);
  assert.deepEqual(bytes(unit), [150n, 250n]);
  assert.ok(meter.calls.includes(`release ${a.id}`), 'its links released');
  assert.equal(events.at(-1), 'terminated a');
  assert.equal(tracker.liveCount(), 0);
  assert.deepEqual(
    tracker.units().map((u) => [u.relPath, u.state]),
    [['a', 'terminated']],
  );
});

test('a draining unit is finalised only after a Service flow drain', async (t) => {
  const { meter, tracker, cgroup } = setup(t);
  const a = cgroup('a');
  tracker.onUnit(a.identity, performance.now());
  let drained!: () => void;
  const drain = new Promise<void>((resolve) => (drained = resolve));
  tracker.useFlows({ drained: () => 0n, drain: () => drain });
  meter.storage.delete(a.id);
  tracker.onGone('a');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(unitAt(tracker, 'a').state, 'draining', 'waits for the drain');
  // The drain brings the unit's last Service bytes.
  assert.deepEqual(
    tracker.credit(
      new Map([
        [a.id, counts(7n, 0n)],
        [999n, counts(1n, 1n)],
      ]),
    ),
    [999n],
  );
  drained();
  await waitFor('final', () => (unitAt(tracker, 'a').state === 'terminated' ? true : undefined), 5000);
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [7n, 0n]);
});

test("credit: Service bytes go into the unit's base, so its next kernel read keeps them", (t) => {
  const { meter, tracker, cgroup } = setup(t);
  const a = cgroup('a');
  tracker.onUnit(a.identity, performance.now());
  meter.count(a.id, counts(10n, 10n));
  tracker.refresh();
  tracker.credit(new Map([[a.id, counts(5n, 1n)]]));
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [15n, 11n]);
  meter.count(a.id, counts(20n, 10n));
  tracker.refresh();
  assert.deepEqual(bytes(unitAt(tracker, 'a')), [25n, 11n]);
});

test("a pod's cgroup made anew carries the earlier cgroup's final as its base, and that final goes", async (t) => {
  const { meter, tracker, cgroup } = setup(t);
  const uid = '11111111-2222-3333-4444-555555555555';
  const first = cgroup('pod-first', uid);
  const other = cgroup('pod-other', '99999999-2222-3333-4444-555555555555');
  for (const c of [first, other]) tracker.onUnit(c.identity, performance.now());
  meter.count(first.id, counts(100n, 200n));
  meter.count(other.id, counts(1n, 1n));
  tracker.refresh();
  for (const c of [first, other]) {
    meter.storage.delete(c.id);
    tracker.onGone(c.identity.relPath);
  }
  await waitFor('finals', () => (tracker.liveCount() === 0 ? true : undefined), 5000);

  // The kubelet starts the pod again (a node reboot): a new cgroup, the same uid.
  const second = cgroup('pod-second', uid);
  tracker.onUnit(second.identity, performance.now());
  const unit = unitAt(tracker, 'pod-second');
  assert.deepEqual(bytes(unit), [100n, 200n], 'starts from the earlier cgroup');
  assert.deepEqual(unit.base && bytes(unit.base), [100n, 200n]);
  meter.count(second.id, counts(10n, 10n));
  tracker.refresh();
  assert.deepEqual(bytes(unit), [110n, 210n], 'base + what the new links count');
  assert.deepEqual(
    tracker.units().map((u) => u.relPath),
    ['pod-second', 'pod-other'],
    "the earlier cgroup's final is dropped (its counts live on in the new unit); another pod's stays",
  );
});

/**
 * A restarted agent restores its state and finds `name` again (one attach):
 * its bytes are `first`, then `then` once the kernel's storage holds `storage`.
 */
function countsOnAfterRestore(
  after: ReturnType<typeof setup>,
  unit: { id: bigint; identity: Parameters<Tracker['onUnit']>[0] },
  name: string,
  expect: { first: bigint[]; message: string; storage: ReturnType<typeof counts>; then: bigint[] },
): void {
  after.tracker.restore();
  after.tracker.onUnit(unit.identity, performance.now());
  assert.deepEqual(after.meter.calls, [`attach ${unit.id}`]);
  assert.deepEqual(bytes(unitAt(after.tracker, name)), expect.first, expect.message);
  after.meter.count(unit.id, expect.storage);
  after.tracker.refresh();
  assert.deepEqual(bytes(unitAt(after.tracker, name)), expect.then);
}

test('restart: saved counts carry on over fresh links, a cgroup gone meanwhile is finalised, finals kept', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'podmeter-test-state-'));
  const root = mkdtempSync(join(tmpdir(), 'podmeter-test-tracker-'));
  const before = setup(t, { root, stateDir });
  const kept = before.cgroup('kept');
  const lost = before.cgroup('lost');
  const ended = before.cgroup('ended');
  for (const c of [kept, lost, ended]) before.tracker.onUnit(c.identity, performance.now());
  before.meter.count(kept.id, counts(10n, 20n));
  before.meter.count(lost.id, counts(30n, 40n));
  before.meter.count(ended.id, counts(50n, 60n));
  before.tracker.refresh();
  before.meter.storage.delete(ended.id);
  before.tracker.onGone('ended');
  await waitFor('final', () => (unitAt(before.tracker, 'ended').state === 'terminated' ? true : undefined), 5000);
  await before.tracker.stop();

  // The next agent: `kept`'s pins went while no agent ran (fresh links); `lost`'s cgroup is gone, its links still pinned.
  rmSync(join(root, 'lost'), { recursive: true });
  const after = setup(t, { root, stateDir });
  after.meter.links.set(lost.id, 'attached');
  after.meter.count(lost.id, counts(35n, 45n));
  countsOnAfterRestore(after, kept, 'kept', {
    first: [10n, 20n],
    message: 'fresh links count on from the saved counts',
    storage: counts(1n, 1n),
    then: [11n, 21n],
  });

  after.tracker.settleLeftovers();
  const lostUnit = unitAt(after.tracker, 'lost');
  assert.equal(lostUnit.state, 'terminated');
  assert.deepEqual(bytes(lostUnit), [35n, 45n], 'finalised from what its links still read');
  assert.ok(after.meter.calls.includes(`release ${lost.id}`));
  assert.deepEqual(bytes(unitAt(after.tracker, 'ended')), [50n, 60n], "the earlier run's finals are kept");
  assert.deepEqual(after.events, ['attached kept new', 'terminated lost']);
});

test('links detached under the agent: attached again; counts go on from the storage it kept, or from the last read over a new one', (t) => {
  const { root, meter, tracker, events, cgroup } = setup(t);
  const kept = cgroup('kept');
  const dropped = cgroup('dropped');
  const gone = cgroup('gone');
  for (const c of [kept, dropped, gone]) tracker.onUnit(c.identity, performance.now());
  meter.count(kept.id, counts(10n, 20n));
  meter.count(dropped.id, counts(30n, 40n));
  tracker.refresh();

  // From 5.9 the storage outlives the links: read once more, then counted on into by the new links.
  meter.count(kept.id, counts(11n, 21n)); // since the last read, before the detach
  assert.deepEqual(tracker.relink(unitAt(tracker, 'kept')), { storageKept: true });
  assert.deepEqual(bytes(unitAt(tracker, 'kept')), [11n, 21n]);
  meter.count(kept.id, counts(15n, 25n));
  tracker.refresh();
  assert.deepEqual(bytes(unitAt(tracker, 'kept')), [15n, 25n], 'not counted twice');

  // Before 5.9 the storage goes with the links: what it counted since the last read is lost, the rest carries on.
  meter.storage.delete(dropped.id);
  assert.deepEqual(tracker.relink(unitAt(tracker, 'dropped')), { storageKept: false });
  assert.deepEqual(bytes(unitAt(tracker, 'dropped')), [30n, 40n]);
  meter.count(dropped.id, counts(1n, 2n));
  tracker.refresh();
  assert.deepEqual(bytes(unitAt(tracker, 'dropped')), [31n, 42n], 'never back to zero');

  // A removed cgroup's links report no cgroup either: not attached again.
  rmSync(join(root, 'gone'), { recursive: true });
  assert.equal(tracker.relink(unitAt(tracker, 'gone')), undefined);
  assert.deepEqual(
    meter.calls.filter((c) => c.startsWith('relink')),
    [`relink ${kept.id}`, `relink ${dropped.id}`],
  );
  assert.ok(!events.some((e) => e.startsWith('error')));
});

test('restart: link pins gone while no agent ran but the storage kept (the map pinned): counts go on, not counted twice', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'podmeter-test-state-'));
  const root = mkdtempSync(join(tmpdir(), 'podmeter-test-tracker-'));
  const before = setup(t, { root, stateDir });
  const a = before.cgroup('a');
  before.tracker.onUnit(a.identity, performance.now());
  before.meter.count(a.id, counts(10n, 20n));
  await before.tracker.stop();

  const after = setup(t, { root, stateDir });
  after.meter.count(a.id, counts(12n, 22n)); // no links, the storage still there
  countsOnAfterRestore(after, a, 'a', {
    first: [12n, 22n],
    message: 'read at once: the storage holds the saved counts',
    storage: counts(13n, 23n),
    then: [13n, 23n],
  });
});

test('finals are dropped after the retention', async (t) => {
  const { meter, tracker, cgroup } = setup(t, { retentionMs: 1000 });
  const a = cgroup('a');
  tracker.onUnit(a.identity, performance.now());
  meter.storage.delete(a.id);
  tracker.onGone('a');
  await waitFor('final', () => (unitAt(tracker, 'a').state === 'terminated' ? true : undefined), 5000);
  const at = unitAt(tracker, 'a').terminatedAt!;
  tracker.prune(at + 1000);
  assert.equal(tracker.units().length, 1, 'kept within the retention');
  tracker.prune(at + 1001);
  assert.deepEqual(tracker.units(), []);
});
