/**
 * A start that fails part-way closes every fd it opened: Meter.open when the
 * Meter cannot be made after its programs and maps are open (more named
 * peer classes than slots), on a fresh bpffs dir (the object loaded,
 * its maps taken and pinned) and over an earlier agent's pins (adopted).
 * Counted in /proc/self/fd of this process. Needs root and bpffs.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { Meter } from '../../agent/counting/meter.ts';
import { PinDir } from '../../agent/counting/pins.ts';
import { MAX_NAMED_CLASSES } from '../../agent/peers/classes.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';

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
