/**
 * `podmeter top` against a running agent: the table names the busy cgroup
 * first with its exact total; the renderer is checked as pure logic too.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { makeTestCgroup } from '../helpers/cgroups.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { PODMETER } from '../helpers/podmeter.ts';
import { renderTop, topRows } from '../../cli/top.ts';

test('podmeter top --once shows each cgroup with exact totals, busiest first', async (t) => {
  const root = makeTestCgroup(t);
  // The busier unit is made second and sorts second by name, so only the sort by total puts it first.
  const quiet = root.child('cron.service');
  const busy = root.child('web.service');
  const agent = await startAgentProcess(t, { cgroupRoot: root.path });
  await waitFor('attached', async () => ((await agent.cgroups()).length === 2 ? true : undefined));
  // Both send to a receiver outside the agent's root, so each unit's total is its own traffic.
  const outside = makeTestCgroup(t);
  const topo = makeTopology(t); // over a veth pair: loopback is not network traffic
  await udpExchange({
    senderCgroup: busy.path,
    receiverCgroup: outside.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 1000,
    payload: 996,
  });
  await udpExchange({
    senderCgroup: quiet.path,
    receiverCgroup: outside.path,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 100,
    payload: 996,
  });
  await udpExchange({
    senderCgroup: quiet.path,
    receiverCgroup: quiet.path,
    netns: topo.pod,
    family: 4,
    count: 50,
    payload: 996,
  }); // loopback
  const { stdout: out } = await promisify(execFile)(PODMETER, [
    'top',
    '--once',
    '--sort',
    'total',
    '--agent',
    agent.url,
  ]);
  const lines = out.trim().split('\n');
  assert.match(lines[1]!, /^NAME\s+RX\/s\s+TX\/s\s+RX TOTAL\s+TX TOTAL\s+LO\/s\s+LO TOTAL\s+STATE$/);
  // 1000 x (28 + 996) bytes = 1,024,000 B = 1000 KiB sent by web, a tenth of that by cron;
  // cron's loopback exchange (both directions: 2 x 50 x 1024 B = 100 KiB) shows apart.
  assert.match(lines[2]!, /^web\.service\s.*0 B\s+1000 KiB\s+0 B\/s\s+0 B\s+live$/);
  assert.match(lines[3]!, /^cron\.service\s.*0 B\s+100 KiB\s+\S+ B\/s\s+100 KiB\s+live$/);
  assert.equal(lines.length, 4);
});

test('top rows: rates from two readings, sorted by rate', () => {
  const view = (id: string, cgroup: string, rx: number, tx: number) => ({
    id,
    cgroup,
    kind: 'cgroup' as const,
    state: 'live' as const,
    attachedAt: '',
    ingress: { bytes: String(rx), packets: '0' },
    egress: { bytes: String(tx), packets: '0' },
  });
  const before = { at: 0, cgroups: [view('1', 'a', 0, 0), view('2', 'b', 0, 0)] };
  const after = { at: 2000, cgroups: [view('1', 'a', 2048, 0), view('2', 'b', 0, 8192)] };
  const rows = topRows(before, after);
  assert.deepEqual(
    rows.map((r) => [r.name, r.rxRate, r.txRate]),
    [
      ['a', 1024, 0],
      ['b', 0, 4096],
    ],
  );
  const table = renderTop(rows, 'rate', 0).split('\n');
  assert.match(table[1]!, /^b\s+0 B\/s\s+4.00 KiB\/s/);
});

test('top rows: loopback apart from RX/TX, both directions together; a loopback-only unit sorts above an idle one', () => {
  const view = (id: string, cgroup: string, lo: number) => ({
    id,
    cgroup,
    kind: 'cgroup' as const,
    state: 'live' as const,
    attachedAt: '',
    ingress: { bytes: '0', packets: '0' },
    egress: { bytes: '0', packets: '0' },
    peers: {
      ingress: { loopback: { bytes: String(lo), packets: '1' } },
      egress: { loopback: { bytes: String(lo), packets: '1' } },
    },
  });
  const before = { at: 0, cgroups: [view('1', 'idle', 0), view('2', 'sidecar', 0)] };
  const after = { at: 1000, cgroups: [view('1', 'idle', 0), view('2', 'sidecar', 512)] };
  const rows = topRows(before, after);
  assert.deepEqual(
    rows.map((r) => [r.name, r.rxRate, r.txRate, r.loRate, r.lo]),
    [
      ['idle', 0, 0, 0, 0n],
      ['sidecar', 0, 0, 1024, 1024n],
    ],
  );
  const table = renderTop(rows, 'rate', 0).split('\n');
  assert.match(table[1]!, /^sidecar\s+0 B\/s\s+0 B\/s\s+0 B\s+0 B\s+1.00 KiB\/s\s+1.00 KiB\s+live$/);
});
