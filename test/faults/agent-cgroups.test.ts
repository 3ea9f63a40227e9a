/**
 * Cgroup faults under a running agent: churn (5,000 cgroups created and
 * removed under the test's root over a minute) while one cgroup sends known
 * traffic. Its exact totals, the agent's memory (a generous bound, not a
 * measurement: bench/ measures), and nothing leaked afterwards (pins, link
 * fds). Needs root, cgroup v2, bpffs.
 *
 * Not covered: "the cgroup root briefly unreadable". The agent runs as root,
 * and chmod 000 does not stop root (CAP_DAC_OVERRIDE) from reading a cgroup
 * directory, so the fault cannot be made this way on this machine.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { sleep } from '../helpers/cleanup.ts';
import { type AgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { countedPair, exactTotals, healthy } from './pair.ts';

const rssKiB = (pid: number) => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const livePins = (agent: AgentProcess) => readdirSync(join(agent.bpffs, 'links')).sort();

test('5,000 cgroups created and removed over a minute: exact totals of a busy cgroup, bounded memory, no leaked pins or link fds', async (t) => {
  const { agent, exchange, sender, receiver } = await countedPair(t, {});
  const pid = agent.child.pid!;
  await exchange(10);
  await exactTotals(agent, 10);
  const before = { rss: rssKiB(pid), fds: fds(pid), pins: livePins(agent) };
  assert.deepEqual(
    before.pins,
    [`${receiver.id}_egress`, `${receiver.id}_ingress`, `${sender.id}_egress`, `${sender.id}_ingress`].sort(),
  );

  const churnRoot = join(sender.path, '..'); // the test's own cgroup root (children mode: every child is a unit)
  const BATCH = 100;
  const BATCHES = 50;
  let created = 0;
  let churning = true;
  const churn = (async () => {
    try {
      for (let b = 0; b < BATCHES; b++) {
        const names = Array.from({ length: BATCH }, (_, i) => join(churnRoot, `churn-${b}-${i}`));
        for (const n of names) mkdirSync(n);
        created += names.length;
        await sleep(600);
        for (const n of names) rmdirSync(n);
        await sleep(600);
      }
    } finally {
      churning = false;
    }
  })();
  let sent = 10;
  while (churning) {
    await exchange(100);
    sent += 100;
  }
  await churn;
  t.diagnostic(`${created} cgroups created and removed; ${sent} datagrams each way`);
  assert.equal(created, BATCH * BATCHES);

  await healthy(agent);
  await exactTotals(agent, sent);
  // Every churned cgroup finalised: its pins removed, its link fds closed.
  await waitFor(
    'churned cgroups finalised',
    async () =>
      (await agent.cgroups()).every((c) => c.state === 'terminated' || c.cgroup === 'sender' || c.cgroup === 'receiver')
        ? true
        : undefined,
    180_000,
  );
  await waitFor(
    'only the live pins left',
    () => (livePins(agent).join() === before.pins.join() ? true : undefined),
    60_000,
  );
  const after = { rss: rssKiB(pid), fds: fds(pid) };
  t.diagnostic(`agent RSS ${before.rss} KiB -> ${after.rss} KiB; fds ${before.fds} -> ${after.fds}`);
  assert.ok(after.fds <= before.fds + 16, `fds ${before.fds} -> ${after.fds}: link fds leaked`);
  assert.ok(after.rss <= before.rss + 128 * 1024, `RSS grew from ${before.rss} KiB to ${after.rss} KiB`);
  const terminated = (await agent.cgroups()).filter((c) => c.state === 'terminated').length;
  t.diagnostic(`${terminated} finals kept (retention)`);
});
