/**
 * `make run`, the README's first command, driven in a terminal (tmux) as a
 * person would: its demo's traffic moves RX/s, TX/s and the loopback columns
 * of the live table, and Ctrl-C leaves no cgroup, network namespace, veth,
 * link pin or process behind. Needs root, cgroup v2, bpffs, tmux; the agent
 * gets a test bpffs dir, state dir and port, the demo a `podmeter-test-` name.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PinDir } from '../../agent/counting/pins.ts';
import { cgroup2Root } from '../helpers/cgroups.ts';
import { afterOrSignal, randomSuffix, sleep, TEST_PREFIX } from '../helpers/cleanup.ts';

const REPO = new URL('../..', import.meta.url).pathname;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const tmux = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });

/** The demo's row of the table (NAME RX/s TX/s RX TOTAL TX TOTAL LO/s LO TOTAL STATE), if shown. */
function demoRow(screen: string, demo: string): string[] | undefined {
  const line = screen.split('\n').find((l) => l.startsWith(`${demo} `));
  // Values are "<number> <unit>": rejoin them so each column is one cell.
  return line?.trim().split(/\s{2,}/);
}

const moving = (cell: string | undefined) => cell !== undefined && !/^0 B\/s$/.test(cell);

test(
  'make run: the demo moves RX/s, TX/s and LO/s within seconds; Ctrl-C leaves nothing behind',
  { skip: spawnSync('tmux', ['-V']).status !== 0 && 'tmux is missing (sudo make setup)' },
  async (t) => {
    const demo = `${TEST_PREFIX}${randomSuffix()}`;
    const session = `${demo}-tmux`;
    const bpffs = `/sys/fs/bpf/${demo}`;
    const stateDir = mkdtempSync(join(tmpdir(), TEST_PREFIX));
    const listen = `127.0.0.1:${await freePort()}`;
    const demoCgroup = join(cgroup2Root(), demo);
    const namespaces = [`${demo}-server`, `${demo}-client`];
    afterOrSignal(t, async () => {
      tmux('kill-session', '-t', session);
      for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
      for (const cg of ['server', 'client', ''].map((c) => join(demoCgroup, c))) {
        if (!existsSync(join(cg, 'cgroup.procs'))) continue;
        for (const pid of readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean))
          spawnSync('kill', ['-9', pid]);
        await sleep(100);
        spawnSync('rmdir', [cg]);
      }
      spawnSync('pkill', ['-f', `--bpffs ${bpffs}`]);
      new PinDir(bpffs).removeAll();
      rmSync(stateDir, { recursive: true, force: true });
    });

    const env = `PODMETER_LISTEN=${listen} PODMETER_BPFFS=${bpffs} PODMETER_STATE_DIR=${stateDir} PODMETER_DEMO=${demo}`;
    const started = Date.now();
    // The pane stays after make ends (remain-on-exit), so its end can be seen and its screen read.
    for (const args of [
      ['new-session', '-d', '-s', session, '-x', '200', '-y', '40', '-c', REPO],
      ['set-option', '-t', session, 'remain-on-exit', 'on'],
      ['respawn-pane', '-k', '-t', session, '-c', REPO, `env ${env} make run`],
    ]) {
      const r = tmux(...args);
      assert.equal(r.status, 0, `tmux ${args.join(' ')}: ${r.stderr}`);
    }
    const ended = () => tmux('display-message', '-p', '-t', session, '#{pane_dead}').stdout.trim() === '1';

    let row: string[] | undefined;
    let screen = '';
    for (const deadline = Date.now() + 240_000; Date.now() < deadline; await sleep(250)) {
      screen = tmux('capture-pane', '-p', '-t', session).stdout;
      row = demoRow(screen, demo);
      if (row && moving(row[1]) && moving(row[2]) && moving(row[5])) break;
      if (ended()) break;
    }
    const seconds = (Date.now() - started) / 1000;
    assert.ok(
      row && moving(row[1]) && moving(row[2]) && moving(row[5]),
      `the demo's RX/s, TX/s and LO/s did not move; the terminal shows:\n${screen}`,
    );
    t.diagnostic(
      `make run: the demo's row moved ${seconds.toFixed(1)} s after the command (setup included): ${row.join(' | ')}`,
    );
    const demoId = BigInt(statSync(demoCgroup).ino);
    assert.ok(
      new PinDir(bpffs).listLinks().some((p) => p.cgroupId === demoId),
      'the demo cgroup is attached through pinned links',
    );

    tmux('send-keys', '-t', session, 'C-c', '');
    for (const deadline = Date.now() + 60_000; !ended() && Date.now() < deadline;) await sleep(100);
    assert.ok(
      ended(),
      `make run did not end after Ctrl-C; the terminal shows:\n${tmux('capture-pane', '-p', '-t', session).stdout}`,
    );

    assert.equal(existsSync(demoCgroup), false, `cgroup ${demoCgroup} is left`);
    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const ns of namespaces) assert.doesNotMatch(netns, new RegExp(`^${ns}\\b`, 'm'), `netns ${ns} is left`);
    // Both veth ends lived in the demo's namespaces; none may have moved out to the host.
    assert.doesNotMatch(
      execFileSync('ip', ['-o', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' }),
      /198\.18|pm\d{6}[sc]\b/,
    );
    assert.deepEqual(
      new PinDir(bpffs).listLinks().filter((p) => p.cgroupId === demoId),
      [],
      'link pins of the demo cgroup are left',
    );
    assert.notEqual(spawnSync('pgrep', ['-f', `--bpffs ${bpffs}`]).status, 0, 'the agent still runs');
    assert.notEqual(spawnSync('pgrep', ['-f', `iperf3 -c 198\\.18\\.0\\.2`]).status, 0, 'a demo iperf3 still runs');
  },
);
