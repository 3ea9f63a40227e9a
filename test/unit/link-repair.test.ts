/**
 * What the agent says and counts about links detached under it
 * (agent/counting/relink.ts LinkRepair), on a stand-in meter and tracker:
 * one warning and one podmeter_errors_total{op="link_detached"} per unit
 * and detach, a failed re-attach counted at every attempt (op="attach") but
 * logged once, removed cgroups' links left to the watcher. The kernel side
 * (the links, the counts kept) runs for real in test/faults/agent-links.test.ts.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { LinkRepair, type LinkRepairErrorOp } from '../../agent/counting/relink.ts';
import type { Unit } from '../../agent/counting/unit.ts';
import { NO_COUNTS } from '../../common/contract/counts.ts';

function unit(id: bigint, relPath: string, state: Unit['state'] = 'live'): Unit {
  return { id, relPath, kind: 'cgroup', path: `/x/${relPath}`, state, attachedAt: 0, ...NO_COUNTS };
}

function setup() {
  const lines: { level: number; msg: string; cgroup?: string }[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n'))
        if (line !== '') lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  const errors: string[] = [];
  const world = {
    detached: [] as bigint[],
    units: [] as Unit[],
    /** What relink() does per unit id: a result, or an error to throw. */
    relink: new Map<bigint, { storageKept: boolean } | undefined | Error>(),
    relinked: [] as string[],
  };
  const repair = new LinkRepair({
    meter: { detachedLinks: () => world.detached },
    tracker: {
      units: () => world.units,
      relink: (u: Unit) => {
        world.relinked.push(u.relPath);
        const r = world.relink.has(u.id) ? world.relink.get(u.id) : { storageKept: true };
        if (r instanceof Error) throw r;
        if (r !== undefined) world.detached = world.detached.filter((id) => id !== u.id);
        return r;
      },
    },
    log: pino({ level: 'info' }, stream),
    onError: (op: LinkRepairErrorOp, err: unknown) =>
      errors.push(op === 'attach' ? `attach ${(err as { code?: string }).code}` : op),
  });
  const said = () => lines.map((l) => `${l.level === 40 ? 'warn' : l.level === 50 ? 'error' : 'info'} ${l.cgroup}`);
  return { repair, world, errors, said };
}

test('nothing detached: nothing asked of the tracker, nothing said', () => {
  const { repair, world, errors, said } = setup();
  world.units = [unit(1n, 'a')];
  repair.check();
  assert.deepEqual([world.relinked, errors, said()], [[], [], []]);
});

test('a detached live unit: attached again, said once with its cgroup, counted once; a second detach is said again', () => {
  const { repair, world, errors, said } = setup();
  world.units = [unit(1n, 'a'), unit(2n, 'b')];
  world.detached = [2n];
  repair.check();
  repair.check(); // attached again: not found any more
  assert.deepEqual(world.relinked, ['b']);
  assert.deepEqual(errors, ['link_detached']);
  assert.deepEqual(said(), ['warn b', 'info b']);

  world.detached = [2n];
  repair.check();
  assert.deepEqual(errors, ['link_detached', 'link_detached']);
  assert.deepEqual(said(), ['warn b', 'info b', 'warn b', 'info b']);
});

test('a re-attach that fails: every attempt counted as attach, logged once, then said when it works', () => {
  const { repair, world, errors, said } = setup();
  world.units = [unit(1n, 'a')];
  world.detached = [1n];
  world.relink.set(1n, Object.assign(new Error('no memory'), { code: 'ENOMEM' }));
  repair.check();
  repair.check();
  repair.check();
  assert.deepEqual(errors, ['link_detached', 'attach ENOMEM', 'attach ENOMEM', 'attach ENOMEM']);
  assert.deepEqual(said(), ['warn a', 'error a']);

  world.relink.set(1n, { storageKept: false });
  repair.check();
  assert.deepEqual(said(), ['warn a', 'error a', 'info a']);
  assert.equal(errors.length, 4, 'nothing more counted');
});

test("links of a removed cgroup (draining, or gone before the watcher said so) are the watcher's: nothing said", () => {
  const { repair, world, errors, said } = setup();
  world.units = [unit(1n, 'draining', 'draining'), unit(2n, 'gone')];
  world.detached = [1n, 2n];
  world.relink.set(2n, undefined); // its cgroup no longer exists
  repair.check();
  assert.deepEqual(world.relinked, ['gone']);
  assert.deepEqual([errors, said()], [[], []]);
});
