/**
 * Faults of the agent's links themselves (test/faults/agent-bpffs.test.ts
 * has those of its pins): a link detached under the running agent by
 * another tool (BPF_LINK_DETACH through its pin, as `bpftool link detach id
 * N` does by id), and, while no agent runs, link pins removed (the counter
 * map's pin kept) or links detached (their pins kept). In each the cgroup's
 * storage outlives the links (5.9 on: it lives with the cgroup), so new
 * links count on into it: the totals are exact, never lower, never counted
 * twice. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Link, queryCgroup, type Direction } from '../../agent/kernel/bpf.ts';
import { sleep } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import type { AgentProcess } from '../helpers/agent.ts';
import { countedPair, exactTotals, healthy, logged } from './pair.ts';

const DETACHED =
  'links detached under the running agent (another tool: bpftool link detach, BPF_LINK_DETACH): its traffic since then is not counted; attaching again';
const AGAIN = 'attached again; its counts go on (the storage kept every byte counted before the detach)';

/** The link pinned for a cgroup and direction: its id and the cgroup it is attached to (0n once detached). */
function pinnedLink(agent: AgentProcess, id: bigint, direction: Direction): { id: number; cgroupId: bigint } {
  const link = Link.fromPin(join(agent.bpffs, 'links', `${id}_${direction}`));
  try {
    const info = link.info();
    return { id: info.id, cgroupId: info.cgroupId ?? 0n };
  } finally {
    link.close();
  }
}

/** Detaches the link pinned for a cgroup and direction (BPF_LINK_DETACH: what another tool does); returns its id. */
function detach(agent: AgentProcess, id: bigint, direction: Direction): number {
  const link = Link.fromPin(join(agent.bpffs, 'links', `${id}_${direction}`));
  try {
    const linkId = link.info().id;
    link.detach();
    assert.equal(link.info().cgroupId, 0n, 'detached');
    return linkId;
  } finally {
    link.close();
  }
}

test('links detached under a running agent: said once per cgroup, counted, attached again; totals exact, never lower, after a restart too', async (t) => {
  const { agent, exchange, sender, receiver } = await countedPair(t, { args: ['--interval', '0.2'] });
  await exchange(100);
  await exactTotals(agent, 100);

  // The totals as scraped all along, from before the detach to the end: they must never go back.
  const seen: number[] = [];
  let watching = true;
  t.after(() => {
    watching = false;
  });
  // Settles (never rejects: a failed test's cleanup stops the agent under it) with the scrape that failed, if any.
  const watch = (async (): Promise<unknown> => {
    while (watching) {
      try {
        const text = await agent.metrics();
        const value = sample(text, 'podmeter_cgroup_network_packets_total', {
          cgroup: 'receiver',
          direction: 'ingress',
        });
        if (value !== undefined) seen.push(value);
      } catch (err) {
        return watching ? err : undefined;
      }
      await sleep(20);
    }
    return undefined;
  })();

  // What the totals count: the sender's egress link and the receiver's ingress link. Their other links stay.
  const keptIds = [pinnedLink(agent, sender.id, 'ingress').id, pinnedLink(agent, receiver.id, 'egress').id];
  const detachedIds = [detach(agent, sender.id, 'egress'), detach(agent, receiver.id, 'ingress')];
  await waitFor('attached again', () => (logged(agent, AGAIN) === 2 ? true : undefined));
  await healthy(agent);
  const warnings = agent.logs.filter((l) => l.msg === DETACHED);
  assert.deepEqual(warnings.map((l) => l.cgroup).sort(), ['receiver', 'sender'], 'one warning per cgroup, naming it');
  const metrics = await agent.metrics();
  assert.equal(sample(metrics, 'podmeter_errors_total', { op: 'link_detached' }), 2);
  assert.equal(sample(metrics, 'podmeter_errors_total', { op: 'attach' }), undefined, 'no attach failed');

  // New links pinned in place of the detached ones; the links left attached kept; one program per direction.
  for (const [cgroup, direction, old] of [
    [sender, 'egress', detachedIds[0]],
    [receiver, 'ingress', detachedIds[1]],
  ] as const) {
    const now = pinnedLink(agent, cgroup.id, direction);
    assert.notEqual(now.id, old, `${cgroup.relPath} ${direction}: a new link`);
    assert.equal(now.cgroupId, cgroup.id, `${cgroup.relPath} ${direction}: attached to its cgroup`);
  }
  assert.deepEqual(
    [pinnedLink(agent, sender.id, 'ingress').id, pinnedLink(agent, receiver.id, 'egress').id],
    keptIds,
    'the links still attached are kept (a second link beside one would count its packets twice)',
  );
  for (const cgroup of [sender, receiver])
    for (const direction of ['ingress', 'egress'] as const)
      assert.equal(queryCgroup(cgroup.path, direction).length, 1, `${cgroup.relPath} ${direction}: one program`);

  await exactTotals(agent, 100); // the storage kept every counted byte: nothing went back
  await exchange(50);
  await exactTotals(agent, 150); // before + after, exactly: not counted twice
  const api = (await agent.cgroups()).find((c) => c.cgroup === 'receiver');
  assert.equal(api?.ingress.packets, '150', '/api/v1/cgroups');
  await sleep(600); // a few more checks: nothing more to say
  assert.equal(logged(agent, DETACHED), 2);
  watching = false;
  assert.equal(await watch, undefined, 'every scrape answered');
  assert.ok(seen.length > 10, `scraped ${seen.length} times`);
  assert.deepEqual(
    seen.filter((v, i) => i > 0 && v < seen[i - 1]!),
    [],
    `never went back: ${seen.join(' ')}`,
  );

  await agent.kill('SIGKILL');
  await exchange(20); // only the new pins keep the new links
  await agent.restart();
  assert.ok(agent.logs.some((l) => l.msg === 'adopted pinned programs and counter map'));
  await exactTotals(agent, 170);
});

test('link pins removed while no agent runs (the counter map pinned): the new links count on into the storage, not counted twice', async (t) => {
  const { agent, exchange } = await countedPair(t, { args: ['--interval', '0.2'] });
  await exchange(100);
  await exactTotals(agent, 100);
  await agent.kill('SIGTERM'); // saves the counts
  const links = join(agent.bpffs, 'links');
  for (const name of readdirSync(links)) rmSync(join(links, name)); // the links detach; the storage stays
  await agent.restart();
  await exactTotals(agent, 100);
  await exchange(10);
  await exactTotals(agent, 110);
});

test('links detached while no agent runs (their pins kept): the next agent replaces them and counts on, not counted twice', async (t) => {
  const { agent, exchange, sender, receiver } = await countedPair(t, { args: ['--interval', '0.2'] });
  await exchange(100);
  await exactTotals(agent, 100);
  await agent.kill('SIGTERM');
  detach(agent, sender.id, 'egress');
  detach(agent, receiver.id, 'ingress');
  await exchange(30); // no program runs for these: not counted
  await agent.restart();
  for (const [cgroup, direction] of [
    [sender, 'egress'],
    [receiver, 'ingress'],
  ] as const)
    assert.equal(
      pinnedLink(agent, cgroup.id, direction).cgroupId,
      cgroup.id,
      `${cgroup.relPath} ${direction}: attached`,
    );
  await exactTotals(agent, 100);
  await exchange(10);
  await exactTotals(agent, 110);
});
