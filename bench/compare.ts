/**
 * `make bench-compare`: paired runs of benchmarks, a base tree against this
 * one. Runs each benchmark alternately in the base tree and in this tree
 * (base, head, base, head, ...: both sides see the same stretch of a noisy
 * machine), reads every figure of each run's final JSON line, and prints for
 * each figure both medians, their ratio, and whether they differ beyond the
 * run-to-run noise (Mann-Whitney U, p < 0.05, as benchstat).
 *
 *   node bench/compare.ts --base DIR [--head DIR] [--pairs N] [--args='ARGS'] BENCH...
 *
 * DIR is a built tree (bench/base-tree makes one for a revision); BENCH a
 * name of bench/<name>.bench.ts, run as `node bench/<name>.bench.ts ARGS` in
 * each tree, with that tree's own benchmark and product (ARGS split at
 * spaces, e.g. a smaller scale: --args='--nodes 100'). Ends with a JSON line of
 * every comparison. Needs what the benchmarks need (root, usually).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ALPHA, compare, figures, resultLine, type Comparison } from './stats.ts';

const { values, positionals } = parseArgs({
  options: {
    base: { type: 'string' },
    head: { type: 'string' },
    pairs: { type: 'string', default: '5' },
    args: { type: 'string', default: '' },
  },
  allowPositionals: true,
});
const usage = "usage: node bench/compare.ts --base DIR [--head DIR] [--pairs N] [--args='ARGS'] BENCH...";
if (!values.base || positionals.length === 0) {
  console.error(usage);
  process.exit(2);
}
const pairs = Number(values.pairs);
if (!Number.isInteger(pairs) || pairs < 2) {
  console.error(`--pairs must be an integer of at least 2 (got '${values.pairs}'): ${usage}`);
  process.exit(2);
}
const trees = { base: resolve(values.base), head: resolve(values.head ?? '.') };
const benchArgs = values.args.split(' ').filter((a) => a !== '');
for (const bench of positionals) {
  for (const [side, dir] of Object.entries(trees)) {
    if (!existsSync(`${dir}/bench/${bench}.bench.ts`)) {
      console.error(`bench-compare: ${side} tree ${dir} has no bench/${bench}.bench.ts`);
      process.exit(2);
    }
  }
}

/** Runs one benchmark in one tree; resolves its figures. Its output goes to stderr, indented. */
function runOnce(dir: string, bench: string, label: string): Promise<Map<string, number>> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [`bench/${bench}.bench.ts`, ...benchArgs], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const forward = (d: Buffer) => process.stderr.write(d.toString().replace(/^(?=.)/gm, `  ${label} | `));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      forward(d);
    });
    child.stderr.on('data', forward);
    child.on('error', fail);
    child.on('close', (code) => {
      if (code !== 0) return fail(new Error(`${label}: bench/${bench}.bench.ts in ${dir} exited ${code}`));
      try {
        done(figures(resultLine(out)));
      } catch (err) {
        fail(new Error(`${label}: ${(err as Error).message}`));
      }
    });
  });
}

const fmt = (x: number) =>
  Number.isNaN(x) ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(3);

function verdict(c: Comparison): string {
  if (c.baseMedian === c.headMedian) return 'same';
  if (!c.significant) return '~ (within noise)';
  return c.headMedian > c.baseMedian ? 'HIGHER (significant)' : 'LOWER (significant)';
}

function print(bench: string, comparisons: Comparison[]): void {
  const rows = [
    ['figure', 'base median', 'head median', 'head/base', 'p', 'verdict'],
    ...comparisons.map((c) => [
      c.figure,
      fmt(c.baseMedian),
      fmt(c.headMedian),
      fmt(c.ratio),
      c.p.toFixed(3),
      verdict(c),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  console.log(
    `\n${bench}${benchArgs.length ? ` ${benchArgs.join(' ')}` : ''}: ${pairs} alternating pairs, base ${trees.base}, head ${trees.head} (Mann-Whitney U, significant at p < ${ALPHA})`,
  );
  for (const r of rows)
    console.log(
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
}

const all: Record<string, Comparison[]> = {};
for (const bench of positionals) {
  const runs = { base: [] as Map<string, number>[], head: [] as Map<string, number>[] };
  for (let i = 1; i <= pairs; i++) {
    // Alternate which side goes first, so neither always runs on a machine the other warmed.
    const order = i % 2 ? (['base', 'head'] as const) : (['head', 'base'] as const);
    for (const side of order) {
      console.error(`bench-compare: ${bench} pair ${i}/${pairs}: ${side}`);
      runs[side].push(await runOnce(trees[side], bench, `${side} ${i}`));
    }
  }
  all[bench] = compare(runs.base, runs.head);
  print(bench, all[bench]);
}
console.log(JSON.stringify({ pairs, args: benchArgs, base: trees.base, head: trees.head, comparisons: all }));
