/**
 * Faults of the agent's bpffs pins: its --bpffs directory removed (rm -r)
 * under the running agent, and the bpffs itself unmounted (a bpffs the test
 * mounts for itself, never /sys/fs/bpf). The running agent holds an fd of
 * every link, so counting goes on; it logs the fault once, pins again (or
 * says once that it cannot), and a restart after the pins are back keeps the
 * exact totals. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { makeBpffsMount } from '../helpers/mounts.ts';
import { sleep } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/poll.ts';
import { countedPair, exactTotals, healthy, logged } from './pair.ts';

const MISSING = 'pins removed under the running agent; its fds keep every link counting: pinning them again';
const CANNOT = /^cannot pin again/;
const PINNED = 'pins made again';

test('the --bpffs directory removed under a running agent: counting goes on, logged once, pinned again, exact totals after a restart', async (t) => {
  const { agent, exchange, sender } = await countedPair(t, { args: ['--interval', '0.2'] });
  await exchange(100);
  rmSync(agent.bpffs, { recursive: true });
  await exchange(200); // right away: before the agent has pinned anything again
  await healthy(agent);
  await exactTotals(agent, 300);
  await waitFor('pinned again', () => (logged(agent, PINNED) > 0 ? true : undefined));
  await sleep(1000); // a few more intervals: nothing more to say
  assert.equal(logged(agent, MISSING), 1);
  assert.equal(logged(agent, PINNED), 1);
  assert.equal(logged(agent, CANNOT), 0);
  for (const pin of [
    'prog_ingress',
    'prog_egress',
    'map_counters',
    `links/${sender.id}_egress`,
    `links/${sender.id}_ingress`,
  ]) {
    assert.ok(existsSync(join(agent.bpffs, pin)), `${pin} pinned again`);
  }

  await agent.kill('SIGKILL');
  await exchange(50); // while no agent runs: only the pins keep the links counting
  await agent.restart();
  assert.ok(agent.logs.some((l) => l.msg === 'adopted pinned programs and counter map'));
  await exactTotals(agent, 350);
});

test('the bpffs unmounted under a running agent: counting goes on, it says once it cannot pin, pins again on a new mount, exact totals after a restart', async (t) => {
  const fs = makeBpffsMount(t);
  const bpffs = join(fs.path, 'podmeter');
  const { agent, exchange } = await countedPair(t, { bpffs, args: ['--interval', '0.2'] });
  await exchange(100);
  fs.unmount(); // the mount's pins go with it: only the agent's fds hold the links
  await exchange(200);
  await healthy(agent);
  await exactTotals(agent, 300);
  await waitFor('cannot pin', () => (logged(agent, CANNOT) > 0 ? true : undefined));
  await sleep(1000); // a few more failed intervals: logged once
  assert.equal(logged(agent, MISSING), 1);
  assert.equal(logged(agent, CANNOT), 1);

  execFileSync('mount', ['-t', 'bpf', 'podmeter-test-bpf', fs.path]); // a new, empty bpffs at the same place
  await waitFor('pinned again', () => (logged(agent, PINNED) > 0 ? true : undefined));
  assert.ok(existsSync(join(bpffs, 'map_counters')));
  await exchange(30);
  await exactTotals(agent, 330);

  await agent.kill('SIGKILL');
  await exchange(20);
  await agent.restart();
  assert.ok(agent.logs.some((l) => l.msg === 'adopted pinned programs and counter map'));
  await exactTotals(agent, 350);
});
