/**
 * `make test`'s runner: `node test/run.ts [glob...]` runs the given test
 * files (default: all) with node:test, one file at a time, in two lanes that
 * run side by side:
 *
 *   host  builds test/cluster's tools (kube-apiserver, etcd, kubectl, helm,
 *         promtool; at once when cached), then every file outside test/node/
 *   vm    test/node/ (a qemu VM node: its builds, then the guest's CPU and
 *         waiting on it); its lines are prefixed `vm | `
 *
 * The host files spend most of their time waiting on the kernel, processes and
 * API servers, the VM test on its TCG guest, and a cold VM lane first on
 * downloads; side by side they take about as long as the longer of the two
 * instead of the sum.
 *
 * Every file runs in a process group of its own with a bound on its time
 * (PODMETER_TEST_FILE_TIMEOUT seconds, else the lane's): a file still running
 * then gets SIGTERM (its cleanups run), SIGKILL 30 s later, and fails its
 * lane with its name and last output, so a hang costs one bound, never the
 * whole CI run. After each file, what a test process that is gone left
 * behind (cgroups, bpffs directories, network namespaces) is removed and
 * named. Each lane's closing lines name every failed and skipped test
 * and why; the last line adds both lanes up: `N passed, N failed, N skipped`.
 * Exits non-zero when anything failed. Ctrl-C (or SIGTERM) is passed on to
 * the running files; the runner waits for their cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { globSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Result } from './results-reporter.ts';
import { sweepStaleBpffsDirs } from './helpers/bpffs.ts';
import { sweepStaleCgroups } from './helpers/cgroups.ts';
import { sweepStaleNetns } from './helpers/netns.ts';

const REPORTER = new URL('./results-reporter.ts', import.meta.url).pathname;
const NODE_TEST = [
  process.execPath,
  '--test',
  '--test-timeout=900000',
  '--test-reporter=spec',
  '--test-reporter-destination=stdout',
  `--test-reporter=${REPORTER}`,
];
const CLUSTER_TOOLS = 'test/cluster/build-tools';
const VM_DIR = 'test/node/';
const UNIT_DIR = 'test/unit/';
/** How long a file may run (s): a VM run from cold caches builds its node first. */
const FILE_BOUND_S = { host: 20 * 60, vm: 75 * 60 };
const SETUP_BOUND_S = 60 * 60;
const KILL_AFTER_TERM_MS = 30_000;
const TAIL_LINES = 30;

interface Lane {
  name: 'host' | 'vm';
  files: string[];
  /** A command run before the files; they run only if it exits 0. Its stdout (a build's result) is not shown. */
  setup?: string[];
}

interface LaneResult {
  lane: Lane;
  results: Result[];
  /** Files that ended without a result for each failure (a crash, a bound, a failed setup). */
  problems: string[];
  seconds: number;
}

function fileBoundS(lane: Lane): number {
  const env = process.env.PODMETER_TEST_FILE_TIMEOUT;
  if (env === undefined || env === '') return FILE_BOUND_S[lane.name];
  const s = Number(env);
  if (!(s > 0)) {
    console.error(`test/run: PODMETER_TEST_FILE_TIMEOUT must be a positive number of seconds (got '${env}')`);
    process.exit(2);
  }
  return s;
}

const patterns = process.argv.length > 2 ? process.argv.slice(2) : ['test/**/*.test.ts'];
const files = [...new Set(patterns.flatMap((p) => globSync(p)))].sort();
if (files.length === 0) {
  console.error(`test/run: no test file matches ${patterns.join(' ')}`);
  process.exit(2);
}
// The pure tests (test/unit/) need no cluster tools: a run of only those builds none.
const needsTools = files.some((f) => !f.startsWith(VM_DIR) && !f.startsWith(UNIT_DIR));
const lanes: Lane[] = (
  [
    {
      name: 'host',
      files: files.filter((f) => !f.startsWith(VM_DIR)),
      ...(needsTools ? { setup: [CLUSTER_TOOLS] } : {}),
    },
    { name: 'vm', files: files.filter((f) => f.startsWith(VM_DIR)) },
  ] satisfies Lane[]
).filter((l) => l.files.length > 0);
// Alone, a lane's lines are as they are; beside the host lane, the VM lane's are prefixed.
const prefix = (lane: Lane) => (lanes.length > 1 && lane.name !== 'host' ? `${lane.name} | ` : '');

// Run under node:test itself (the runner's own test), a file must not report to that parent.
const childEnv = { ...process.env };
delete childEnv.NODE_TEST_CONTEXT;
const running = new Set<ChildProcess>();
let stopping = false;

/** Signals a child's whole process group (it leads one: spawned detached). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // The group is gone already.
  }
}

/**
 * Runs argv in its own process group to its end, or to `boundS`, and then
 * ends the group. Resolves its exit code (128 + n for signal n, as a shell
 * says), whether the bound ended it, and its last lines of output.
 */
function runBounded(
  lane: Lane,
  argv: string[],
  boundS: number,
  showStdout: boolean,
): Promise<{ code: number; timedOut: boolean; tail: string[] }> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: childEnv });
  running.add(child);
  const tail: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    const to = stream === child.stdout ? process.stdout : process.stderr;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      if (stream === child.stderr || showStdout) to.write(`${prefix(lane)}${line}\n`);
    });
  }
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const boundTimer = setTimeout(() => {
    timedOut = true;
    console.error(`test/run: ${argv.at(-1)} still runs after its bound of ${boundS} s: SIGTERM to its process group`);
    signalGroup(child, 'SIGTERM');
    killTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), KILL_AFTER_TERM_MS);
  }, boundS * 1000);
  return new Promise((resolve) => {
    child.on('error', (err) => console.error(`test/run: ${argv[0]}: ${err.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(boundTimer);
      clearTimeout(killTimer);
      // What the file started in its group and left behind goes with it.
      signalGroup(child, 'SIGKILL');
      running.delete(child);
      resolve({ code: code ?? 128 + (signal ? constants.signals[signal] : 0), timedOut, tail });
    });
  });
}

/**
 * Removes what test processes that are gone left behind (a file killed at
 * its bound, or by SIGKILL, runs no cleanup) and names it: the helpers'
 * podmeter-test-<pid>-... cgroups, bpffs directories and network namespaces.
 * Without root or a mount there is nothing to sweep.
 */
function sweepAfter(file: string): void {
  const left: string[] = [];
  for (const sweep of [sweepStaleCgroups, sweepStaleBpffsDirs, sweepStaleNetns]) {
    try {
      left.push(...sweep());
    } catch {
      // not root, or no such mount
    }
  }
  if (left.length > 0) console.error(`test/run: removed what ${file} left behind: ${left.join(' ')}`);
}

function readResults(path: string): Result[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Result);
}

async function runLane(lane: Lane, dir: string): Promise<LaneResult> {
  const start = Date.now();
  const out: LaneResult = { lane, results: [], problems: [], seconds: 0 };
  const done = () => ({ ...out, seconds: Math.round((Date.now() - start) / 1000) });
  if (lane.setup) {
    const { code, timedOut } = await runBounded(lane, lane.setup, SETUP_BOUND_S, false);
    if (code !== 0) {
      out.problems.push(
        `${lane.setup.join(' ')} ${timedOut ? `did not end within ${SETUP_BOUND_S} s` : `exited ${code}`}; the lane's ${lane.files.length} files did not run`,
      );
      return done();
    }
  }
  const boundS = fileBoundS(lane);
  for (const [i, file] of lane.files.entries()) {
    if (stopping) {
      out.problems.push(`interrupted: ${lane.files.length - i} files did not run`);
      break;
    }
    const resultsFile = join(dir, `${lane.name}-${i}.jsonl`);
    const { code, timedOut, tail } = await runBounded(
      lane,
      [...NODE_TEST, `--test-reporter-destination=${resultsFile}`, file],
      boundS,
      true,
    );
    sweepAfter(file);
    const results = readResults(resultsFile);
    out.results.push(...results);
    const lastLines = `its last output:\n${tail.map((l) => `    | ${l}`).join('\n')}`;
    if (timedOut)
      out.problems.push(
        `${file}: did not end within its bound of ${boundS} s; its process group was ended; ${lastLines}`,
      );
    else if (code !== 0 && !results.some((r) => r.outcome === 'fail'))
      out.problems.push(`${file}: exited ${code} without a failed test; ${lastLines}`);
  }
  return done();
}

// Ctrl-C reaches only this runner (each file leads its own process group): pass it on and wait.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    stopping = true;
    running.forEach((c) => signalGroup(c, signal));
  });
}

const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-run-'));
let laneResults: LaneResult[];
try {
  laneResults = await Promise.all(lanes.map((lane) => runLane(lane, dir)));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const count = (results: Result[], outcome: Result['outcome']) => results.filter((r) => r.outcome === outcome).length;
const totals = { passed: 0, failed: 0, skipped: 0 };
console.log('');
for (const { lane, results, problems, seconds } of laneResults) {
  const passed = count(results, 'pass');
  const failed = count(results, 'fail') + problems.length;
  const skipped = count(results, 'skip');
  totals.passed += passed;
  totals.failed += failed;
  totals.skipped += skipped;
  const n = `${lane.files.length} file${lane.files.length === 1 ? '' : 's'}`;
  console.log(
    `test/run: ${lane.name} lane (${n}): ${failed === 0 ? 'pass' : 'FAIL'} in ${seconds} s: ${passed} passed, ${failed} failed, ${skipped} skipped`,
  );
  for (const r of results.filter((x) => x.outcome === 'fail'))
    console.log(`  failed:  ${r.file} > ${r.name}: ${r.reason}`);
  for (const p of problems) console.log(`  failed:  ${p}`);
  for (const r of results.filter((x) => x.outcome === 'skip'))
    console.log(`  skipped: ${r.file} > ${r.name}${r.reason ? `: ${r.reason}` : ''}`);
}
console.log(`test/run: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 || stopping ? 1 : 0);
