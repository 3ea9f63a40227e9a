/**
 * `make bench-compare`'s comparison (bench/compare.ts, bench/stats.ts): the
 * Mann-Whitney U test against known values, and end to end on two little
 * benchmarks: two copies of one compare as no difference, one that sleeps
 * twice as long compares as significantly higher. No root needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compare, figures, mannWhitney, median, resultLine } from '../../bench/stats.ts';

test('Mann-Whitney U: exact p for small samples, normal approximation with ties', () => {
  // Complete separation of 5 and 5: the smallest two-sided p there is, 2/252.
  assert.equal(mannWhitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).p.toFixed(4), (2 / 252).toFixed(4));
  assert.equal(mannWhitney([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]).u, 0);
  // Interleaved: no evidence of a difference.
  assert.equal(mannWhitney([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]).p > 0.5, true);
  // Identical samples (all ties): p = 1.
  assert.equal(mannWhitney([5, 5, 5], [5, 5, 5]).p, 1);
  // Known table value: m = n = 4, U = 1 -> two-sided exact p = 2 * 2/70.
  assert.equal(mannWhitney([1, 2, 3, 5], [4, 6, 7, 8]).p.toFixed(4), ((2 * 2) / 70).toFixed(4));
  assert.equal(median([3, 1, 2, 10]), 2.5);
});

test('figures: every numeric leaf of the last JSON line, by dotted path', () => {
  const out = 'attach latency: ...\n{"bench":"agent","attachMs":{"p50":20,"p99":35},"rssMiB":70.5,"ok":true}\n';
  assert.deepEqual(
    [...figures(resultLine(out))],
    [
      ['attachMs.p50', 20],
      ['attachMs.p99', 35],
      ['rssMiB', 70.5],
    ],
  );
  assert.throws(() => resultLine('no json here\n'), /no JSON result line/);
  const c = compare([new Map([['x', 10]]), new Map([['x', 12]])], [new Map([['x', 20]]), new Map([['x', 24]])]);
  assert.equal(c[0]!.ratio, 2);
});

function benchTree(root: string, name: string, sleepMs: number): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'bench'), { recursive: true });
  // The figure is the measured sleep to 100 ms (timers run late on a busy machine): copies tie, as they should.
  writeFileSync(
    join(dir, 'bench', 'sleep.bench.ts'),
    // `--times N` (bench-compare's --args) multiplies the sleep.
    `const times = process.argv[2] === '--times' ? Number(process.argv[3]) : 1;\n` +
      `const t0 = performance.now();\nawait new Promise((r) => setTimeout(r, ${sleepMs} * times));\n` +
      `console.log('slept');\nconsole.log(JSON.stringify({ bench: 'sleep', sleptMs: Math.round((performance.now() - t0) / 100) * 100 }));\n`,
  );
  return dir;
}

function runCompare(base: string, head: string, args: string[] = []) {
  const r = spawnSync(
    process.execPath,
    ['bench/compare.ts', '--base', base, '--head', head, '--pairs', '5', ...args, 'sleep'],
    { encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  const last = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as {
    comparisons: { sleep: { figure: string; ratio: number; significant: boolean }[] };
  };
  return { text: r.stdout, slept: last.comparisons.sleep.find((c) => c.figure === 'sleptMs')! };
}

test('two copies of one benchmark: no difference; twice the sleep: significantly higher', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'podmeter-test-bench-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const base = benchTree(root, 'base', 100);
  const same = runCompare(base, benchTree(root, 'copy', 100));
  assert.equal(same.slept.significant, false, same.text);
  assert.match(same.text, /sleptMs\s+100\s+100\s+1\.00\s+\S+\s+same/);
  const slower = runCompare(base, benchTree(root, 'double', 200));
  assert.equal(slower.slept.significant, true, slower.text);
  assert.equal(slower.slept.ratio, 2, slower.text);
  assert.match(slower.text, /sleptMs\s+100\s+200\s+2\.00\s+\S+\s+HIGHER \(significant\)/);
  // --args reaches both sides' benchmark.
  const scaled = runCompare(base, benchTree(root, 'double', 200), ['--args=--times 3']);
  assert.match(scaled.text, /sleep --times 3: 5 alternating pairs/);
  assert.match(scaled.text, /sleptMs\s+300\s+600\s+2\.00\s+\S+\s+HIGHER \(significant\)/);
});
