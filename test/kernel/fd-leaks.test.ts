/**
 * A start that fails part-way closes every fd it opened: Meter.open when the
 * Meter cannot be made after its programs and maps are open (an old agent's
 * map_stats pin of another shape), on a fresh bpffs dir (the object loaded,
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
import { loadPodmeter } from '../helpers/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';

const silent = pino({ level: 'silent' });
const openFds = () => readdirSync('/proc/self/fd').length;

for (const earlierAgent of [false, true]) {
  test(`Meter.open ${earlierAgent ? 'over pins it adopts' : 'loading the object'}: a start refused after its fds are open closes them all`, (t) => {
    const dir = makeBpffsDir(t);
    const pins = new PinDir(join(dir.path, 'podmeter'));
    if (earlierAgent) Meter.open(pins.root, silent).close();
    pins.ensure();
    // A storage map of the current layout where the old agent's 16-byte one would be: refused by shape.
    loadPodmeter(t).map!.pin(pins.legacyMap);
    const before = openFds();
    for (let i = 0; i < 3; i++) assert.throws(() => Meter.open(pins.root, silent), /map_stats/);
    assert.equal(openFds(), before, 'fds left open after three refused starts');
  });
}
