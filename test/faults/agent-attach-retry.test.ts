/**
 * A failed attach is retried at every interval (issue 23), never a cgroup
 * left uncounted for good without a sign: each failure is counted in
 * podmeter_errors_total{op="attach",reason=<errno>}, podmeter_unattached_cgroups
 * says how many wait, the log has one line per cgroup (not per retry) and one
 * when it is counted at last; traffic after that is counted exactly.
 *
 * The failures are the kernel's own:
 * - EPERM: another tool attached a program to the cgroup exclusively (no
 *   BPF_F_ALLOW_MULTI, as `bpftool cgroup attach` does by default), which
 *   refuses every multi-program attach, podmeter's bpf_link included, until
 *   it is detached;
 * - ENOMEM: the per-CPU storage of a new attachment is charged to the memory
 *   cgroup of the process that made the map (the agent, at start); the test
 *   starts the agent in a memory cgroup of its own, moves it back out once
 *   the map exists, and sets that cgroup's limit to what it holds: no room
 *   for one more element, and no process there for an OOM kill, so the
 *   kernel fails the allocation. The limit lifted, the retry attaches.
 * Needs root, cgroup v2, bpffs, bpftool (EPERM) and a memory controller
 * (v1 or v2, detected; ENOMEM).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { bpfObjectPath, queryCgroup } from '../../agent/kernel/bpf.ts';
import { makeBpffsDir } from '../helpers/bpffs.ts';
import { cgroup2Root, makeTestCgroup } from '../helpers/cgroups.ts';
import { afterOrSignal, randomSuffix, TEST_PREFIX } from '../helpers/cleanup.ts';
import { makeTopology } from '../helpers/topology.ts';
import { udpExchange } from '../helpers/traffic.ts';
import { startAgentProcess, type AgentProcess } from '../helpers/agent.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { DATAGRAM_BYTES as BYTES, PAYLOAD, exactTotals, healthy, logged } from './pair.ts';

const FAILED = 'attach failed: this cgroup is not counted until an attach works; retrying at every interval';
const RECOVERED = 'attached after failed attempts; counting from now';
const hasBpftool = spawnSync('bpftool', ['version']).status === 0;

function bpftool(args: string[]): void {
  const r = spawnSync('bpftool', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool ${args.join(' ')}: ${r.stderr}`);
}

const attachErrors = async (agent: AgentProcess, reason: string) =>
  sample(await agent.metrics(), 'podmeter_errors_total', { op: 'attach', reason }) ?? 0;
const unattached = async (agent: AgentProcess) => sample(await agent.metrics(), 'podmeter_unattached_cgroups', {});
const counts = (path: string) => queryCgroup(path, 'ingress').length;

/** The receiver waits for an attach; once it is counted, traffic is exact. */
async function retriedThenExact(
  t: Parameters<typeof makeTopology>[0],
  agent: AgentProcess,
  reason: string,
  sender: string,
  receiver: string,
  lift: () => void,
) {
  // Failed attempts are counted at every 0.2 s interval, logged once.
  await waitFor(
    `5 failed attaches (${reason})`,
    async () => ((await attachErrors(agent, reason)) >= 5 ? true : undefined),
    60_000,
  );
  assert.equal(await unattached(agent), 1);
  assert.equal(logged(agent, FAILED), 1, 'one line for the cgroup, not one per retry');
  const line = agent.logs.find((l) => l.msg === FAILED)!;
  assert.equal(line.reason, reason);
  assert.equal(line.cgroup, 'receiver');
  assert.ok(!(await agent.cgroups()).some((c) => c.cgroup === 'receiver'));
  await healthy(agent);

  lift();
  await waitFor(
    'the receiver counted after all',
    async () => ((await agent.cgroups()).some((c) => c.cgroup === 'receiver') ? true : undefined),
    30_000,
  );
  assert.equal(await unattached(agent), 0);
  assert.equal(logged(agent, RECOVERED), 1);
  assert.equal(logged(agent, FAILED), 1);

  const topo = makeTopology(t);
  await udpExchange({
    senderCgroup: sender,
    receiverCgroup: receiver,
    ...topo.toPeer('external', 4),
    family: 4,
    count: 50,
    payload: PAYLOAD,
  });
  await exactTotals(agent, 50);
  assert.equal(BYTES, 28 + PAYLOAD);
}

test(
  "EPERM: a cgroup with another tool's exclusive program is retried, counted once it is detached",
  { skip: !hasBpftool && 'bpftool is not installed' },
  async (t) => {
    const root = makeTestCgroup(t);
    const sender = root.child('sender');
    const receiver = root.child('receiver');
    const pins = makeBpffsDir(t);
    const program = join(pins.path, 'passthrough', 'passthrough_ingress');
    bpftool(['prog', 'loadall', bpfObjectPath('passthrough'), join(pins.path, 'passthrough')]);
    bpftool(['cgroup', 'attach', receiver.path, 'ingress', 'pinned', program]); // exclusive: no "multi"
    let exclusive = true;
    const detach = () => {
      if (exclusive) bpftool(['cgroup', 'detach', receiver.path, 'ingress', 'pinned', program]);
      exclusive = false;
    };
    t.after(() => {
      try {
        detach();
      } catch {
        // the cgroup went first: its programs went with it
      }
    });

    const agent = await startAgentProcess(t, {
      cgroupRoot: root.path,
      args: ['--discover', 'children', '--interval', '0.2'],
    });
    await waitFor('sender attached', () => (queryCgroup(sender.path, 'egress').length > 0 ? true : undefined));
    assert.equal(counts(receiver.path), 1, 'only the exclusive program');
    await retriedThenExact(t, agent, 'EPERM', sender.path, receiver.path, detach);
  },
);

/** A memory controller for a cgroup of the test's own: cgroup v2's when enabled below the root, else v1's. */
function memoryController(): { kind: 'v1' | 'v2'; mount: string } | undefined {
  try {
    if (readFileSync(join(cgroup2Root(), 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory'))
      return { kind: 'v2', mount: cgroup2Root() };
  } catch {
    // no v2 controller list
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [before, after] = line.split(' - ');
    if (after?.startsWith('cgroup ') && after.split(' ')[2]?.split(',').includes('memory'))
      return { kind: 'v1', mount: before!.split(' ')[4]! };
  }
  return undefined;
}

const MEMORY = memoryController();

// Not yet provoked on this project's machine (kernel 6.18, v1 memory controller): the limit did not make
// the storage allocation fail within 60 s; kept, skipped, until the condition is found (see issue 23's note).
const ENOMEM_SKIP =
  MEMORY === undefined
    ? 'no memory controller'
    : process.env.PODMETER_TRY_ENOMEM === '1'
      ? false
      : 'the memcg limit did not provoke ENOMEM here yet (PODMETER_TRY_ENOMEM=1 runs it)';

test(
  "ENOMEM: the per-CPU storage cannot be charged to the agent's memory cgroup: retried, counted once there is room",
  { skip: ENOMEM_SKIP, timeout: 180_000 },
  async (t) => {
    const memory = MEMORY!;
    // The agent's memory cgroup, and where its processes go back to (the test's own).
    let dir: string;
    let home: string;
    let limitFile: string;
    let usage: () => number;
    if (memory.kind === 'v1') {
      dir = join(memory.mount, `${TEST_PREFIX}${randomSuffix()}`);
      mkdirSync(dir);
      const own = /^\d+:[^:]*\bmemory\b[^:]*:(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
      home = join(memory.mount, own);
      limitFile = join(dir, 'memory.limit_in_bytes');
      usage = () => Number(readFileSync(join(dir, 'memory.usage_in_bytes'), 'utf8'));
      afterOrSignal(t, () => {
        if (existsSync(dir)) rmdirSync(dir);
      });
    } else {
      const top = makeTestCgroup(t);
      writeFileSync(join(top.top, 'cgroup.subtree_control'), '+memory');
      dir = top.child('agent').path;
      home = top.child('home').path;
      limitFile = join(dir, 'memory.max');
      usage = () => Number(readFileSync(join(dir, 'memory.current'), 'utf8'));
    }
    const root = makeTestCgroup(t);
    const sender = root.child('sender');
    const inItsCgroup = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir];
    const agent = await startAgentProcess(t, {
      cgroupRoot: root.path,
      args: ['--discover', 'children', '--interval', '0.2'],
      prefix: inItsCgroup,
    });
    await waitFor('sender attached', () => (queryCgroup(sender.path, 'egress').length > 0 ? true : undefined));
    // The map exists, charged here; the agent goes back out, its charges stay.
    for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean))
      writeFileSync(join(home, 'cgroup.procs'), pid);
    const unlimited = memory.kind === 'v1' ? '-1' : 'max';
    // No room: the limit follows the usage down as the agent frees memory (its heap, after a GC).
    const tighten = () => {
      try {
        writeFileSync(limitFile, String(usage()));
      } catch {
        // usage rose between the read and the write (EBUSY): the next round sets it
      }
    };
    tighten();
    const tight = setInterval(tighten, 20);
    const lift = () => {
      clearInterval(tight);
      writeFileSync(limitFile, unlimited);
    };
    t.after(() => {
      clearInterval(tight);
      if (existsSync(limitFile)) writeFileSync(limitFile, unlimited);
    });

    const receiver = root.child('receiver');
    await retriedThenExact(t, agent, 'ENOMEM', sender.path, receiver.path, lift);
    assert.equal(agent.child.exitCode, null, 'the agent was not OOM-killed');
  },
);
