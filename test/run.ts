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
 * instead of the sum. Exits non-zero when either lane fails. Ctrl-C reaches
 * both (one process group); this runner waits for their cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { globSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';

const NODE_TEST = [process.execPath, '--test', '--test-timeout=900000', '--test-concurrency=1'];
const CLUSTER_TOOLS = 'test/cluster/build-tools';
const VM_DIR = 'test/node/';

interface Lane {
  name: string;
  files: string[];
  /** A command run before the files; they run only if it exits 0. Its stdout (a build's result) is not shown. */
  setup?: string[];
}

const patterns = process.argv.length > 2 ? process.argv.slice(2) : ['test/**/*.test.ts'];
const files = [...new Set(patterns.flatMap((p) => globSync(p)))].sort();
if (files.length === 0) {
  console.error(`test/run: no test file matches ${patterns.join(' ')}`);
  process.exit(2);
}
const lanes: Lane[] = [
  { name: 'host', files: files.filter((f) => !f.startsWith(VM_DIR)), setup: [CLUSTER_TOOLS] },
  { name: 'vm', files: files.filter((f) => f.startsWith(VM_DIR)) },
].filter((l) => l.files.length > 0);
// Alone, a lane owns the terminal; beside the host lane, the VM lane's lines are prefixed.
const prefixed = (lane: Lane) => lanes.length > 1 && lane.name !== 'host';

const children = new Set<ChildProcess>();

/** Runs argv to its end; resolves its exit code (128 + n for signal n, as a shell says). */
function runCommand(lane: Lane, argv: string[], showStdout: boolean): Promise<number> {
  const out = prefixed(lane) ? 'pipe' : 'inherit';
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', showStdout ? out : 'ignore', out] });
  children.add(child);
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const to = stream === child.stdout ? process.stdout : process.stderr;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => to.write(`${lane.name} | ${line}\n`));
  }
  return new Promise((resolve) => {
    child.on('error', (err) => console.error(`test/run: ${argv[0]}: ${err.message}`));
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}

async function runLane(lane: Lane): Promise<{ lane: Lane; code: number; seconds: number }> {
  const start = Date.now();
  const seconds = () => Math.round((Date.now() - start) / 1000);
  if (lane.setup) {
    const code = await runCommand(lane, lane.setup, false);
    if (code !== 0) {
      console.error(`test/run: ${lane.name} lane: ${lane.setup.join(' ')} exited ${code}; its files did not run`);
      return { lane, code, seconds: seconds() };
    }
  }
  return { lane, code: await runCommand(lane, [...NODE_TEST, ...lane.files], true), seconds: seconds() };
}

// Ctrl-C goes to the whole process group: the lanes clean up and exit; wait for them.
// A SIGTERM sent to this runner alone is passed on to them.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => children.forEach((c) => c.kill('SIGTERM')));

const results = await Promise.all(lanes.map(runLane));
if (lanes.length > 1) {
  for (const { lane, code, seconds } of results) {
    const n = `${lane.files.length} file${lane.files.length === 1 ? '' : 's'}`;
    console.log(`test/run: ${lane.name} lane (${n}): ${code === 0 ? 'pass' : `FAIL (exit ${code})`} in ${seconds} s`);
  }
}
process.exit(results.some((r) => r.code !== 0) ? 1 : 0);
