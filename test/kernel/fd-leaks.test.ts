/**
 * A start that fails part-way closes every fd it opened: Meter.open when the
 * Meter cannot be made after its programs and maps are open (more named
 * peer classes than slots), on a fresh bpffs dir (the object loaded,
 * its maps taken and pinned) and over an earlier agent's pins (adopted).
 * And the tracker's attach of a pod cgroup, which holds the cgroup's
 * directory open while it attaches, closes it whatever happens.
 * Counted in /proc/self/fd of this process. Needs root, bpffs and cgroup2.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { Meter } from '../../agent/counting/meter.ts';
import { PinDir } from '../../agent/counting/pins.ts';
import { StateStore } from '../../agent/counting/state.ts';
import { Tracker } from '../../agent/counting/tracker.ts';
import { MAX_NAMED_CLASSES } from '../../agent/peers/classes.ts';
import { loadPassthrough } from '../helpers/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { TEST_PREFIX } from '../helpers/cleanup.ts';

const silent = pino({ level: 'silent' });
const openFds = () => readdirSync('/proc/self/fd').length;

for (const earlierAgent of [false, true]) {
  test(`Meter.open ${earlierAgent ? 'over pins it adopts' : 'loading the object'}: a start refused after its fds are open closes them all`, (t) => {
    const dir = makeBpffsDir(t);
    const pins = new PinDir(join(dir.path, 'podmeter'));
    if (earlierAgent) Meter.open(pins.root, silent).close();
    pins.ensure();
    // More named classes than slots: refused once the objects are open (recordSlotNames).
    const classes = Array.from({ length: MAX_NAMED_CLASSES + 1 }, (_, i) => `class-${i}`);
    const before = openFds();
    for (let i = 0; i < 3; i++)
      assert.throws(() => Meter.open(pins.root, silent, classes), /named class slots are taken/);
    assert.equal(openFds(), before, 'fds left open after three refused starts');
  });
}

test('a pod cgroup the tracker counts is held open only while it attaches: closed after a failed attach, a gone cgroup or an attach', (t) => {
  const dir = makeBpffsDir(t);
  const meter = Meter.open(join(dir.path, 'podmeter'), silent);
  t.after(() => {
    for (const pin of meter.pins.listLinks()) meter.release(pin.cgroupId);
    meter.close();
    meter.pins.removeAll();
  });
  const root = makeTestCgroup(t);
  const stateDir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  const tracker = new Tracker({
    meter,
    root: root.path,
    store: new StateStore(stateDir),
    log: silent,
    retentionMs: 60_000,
  });
  const errors: unknown[] = [];
  tracker.on('error', (_op: string, err: unknown) => errors.push(err));
  t.after(() => tracker.stop());
  const [refused, counted] = ['refused', 'counted'].map((name) => root.child(name)); // 'gone': removed before it is counted
  // Refused half way: its egress link's pin path is taken (a program pinned there).
  loadPassthrough(t).programs.egress.pin(meter.pins.link(refused!.id, 'egress'));
  const before = openFds();
  tracker.onUnit({ kind: 'cgroup', relPath: 'refused' }, performance.now());
  assert.equal(errors.length, 1, 'the refused attach is an error');
  assert.match(String(errors[0]), /EEXIST/);
  tracker.onUnit({ kind: 'cgroup', relPath: 'gone' }, performance.now());
  assert.equal(openFds(), before, 'fds left open by a refused attach and a gone cgroup');
  tracker.onUnit({ kind: 'cgroup', relPath: 'counted' }, performance.now());
  assert.deepEqual(
    tracker.units().map((u) => u.id),
    [counted!.id],
  );
  assert.equal(openFds(), before + 2, 'an attached cgroup keeps its two link fds, not its directory');
});
