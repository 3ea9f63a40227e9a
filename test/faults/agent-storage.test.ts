/**
 * Faults of the agent's --state-dir: full (ENOSPC on a small tmpfs the test
 * mounts) and read-only while the agent runs, and a truncated or corrupt
 * state file at start. In each: counting goes on, /metrics and /healthz
 * answer, the fault is logged once, and the exact totals (bytes and packets)
 * survive it and a restart after it. Needs root, cgroup v2, bpffs.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTmpfs } from '../helpers/mounts.ts';
import { waitFor } from '../helpers/poll.ts';
import { sample } from '../helpers/samples.ts';
import { countedPair as counted, DATAGRAM_BYTES as BYTES, exactTotals, healthy, logged } from './pair.ts';

const SAVE_FAILED = 'cannot write the state file; counting goes on, retrying at every interval';
const SAVED_AGAIN = 'state file written again';
const CORRUPT = /^state file unreadable/;

/** The sender's egress bytes in the agent's state file, if it is there and parses. */
function savedEgress(stateDir: string): string | undefined {
  try {
    const state = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as {
      live: { relPath: string; counters: { egress: { bytes: string } } }[];
    };
    return state.live.find((u) => u.relPath === 'sender')?.counters.egress.bytes;
  } catch {
    return undefined;
  }
}

for (const fault of ['full (ENOSPC)', 'read-only'] as const) {
  test(`state dir ${fault} under a running agent: counting and /metrics go on, logged once, state written again, exact totals after a restart`, async (t) => {
    const fs = makeTmpfs(t, 256);
    const stateDir = join(fs.path, 'state');
    const { agent, exchange } = await counted(t, { stateDir, args: ['--interval', '0.2'] });
    await exchange(100);
    await waitFor('state saved', () => (savedEgress(stateDir) === String(100 * BYTES) ? true : undefined));

    if (fault === 'read-only') fs.readOnly(true);
    else fs.fill();
    await exchange(200);
    // Several saves fail (one per 0.2 s interval): counted each time, logged once.
    await waitFor('failed saves', async () => {
      const errors = sample(await agent.metrics(), 'podmeter_errors_total', { op: 'state' }) ?? 0;
      return errors >= 5 ? true : undefined;
    });
    await healthy(agent);
    await exactTotals(agent, 300);
    assert.equal(logged(agent, SAVE_FAILED), 1, 'the failing state dir is logged once, not per retry');
    assert.equal(savedEgress(stateDir), String(100 * BYTES), 'the last good state file is left whole');

    if (fault === 'read-only') fs.readOnly(false);
    else fs.unfill();
    await waitFor('state written again', () => (savedEgress(stateDir) === String(300 * BYTES) ? true : undefined));
    // The line follows the write: it may reach us a moment after the file does.
    await waitFor('"written again" logged', () => (logged(agent, SAVED_AGAIN) > 0 ? true : undefined));
    assert.equal(logged(agent, SAVED_AGAIN), 1);
    assert.equal(logged(agent, SAVE_FAILED), 1);

    await agent.kill('SIGKILL');
    await exchange(50); // while no agent runs: only the pinned links count it
    await agent.restart();
    await exactTotals(agent, 350);
  });
}

const corruptions = {
  truncated: (path: string) => truncateSync(path, Math.floor(readFileSync(path).length / 2)),
  'not JSON': (path: string) => writeFileSync(path, 'garbage\n'),
  'JSON of the wrong shape': (path: string) =>
    writeFileSync(path, JSON.stringify({ version: 1, live: [{ id: 'not a number' }], finals: 7 })),
};

for (const [kind, corrupt] of Object.entries(corruptions)) {
  test(`a ${kind} state file at start: a clear warning, the agent starts, the pinned links' counts are not lost`, async (t) => {
    const { agent, exchange } = await counted(t, { args: ['--interval', '0.2'] });
    await exchange(100);
    await waitFor('state saved', () => (savedEgress(agent.stateDir) === String(100 * BYTES) ? true : undefined));
    await agent.kill('SIGKILL');
    await exchange(20);
    corrupt(join(agent.stateDir, 'state.json'));

    await agent.restart();
    assert.equal(logged(agent, CORRUPT), 1);
    const warning = agent.logs.find((l) => CORRUPT.test(String(l.msg)))!;
    assert.equal(warning.level, 40, 'a warning');
    assert.ok(existsSync(join(agent.stateDir, 'state.json.corrupt')), 'the unreadable file is kept for inspection');
    await healthy(agent);
    await exactTotals(agent, 120);
    await exchange(30);
    await exactTotals(agent, 150);
    await waitFor('a good state file again', () =>
      savedEgress(agent.stateDir) === String(150 * BYTES) ? true : undefined,
    );
  });
}
