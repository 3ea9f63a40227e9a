/**
 * The statistics of `make bench-compare` (bench/compare.ts), pure: a
 * benchmark's figures from its final JSON line, medians, and the
 * Mann-Whitney U test (as benchstat uses) of whether two sets of runs differ
 * beyond their run-to-run noise.
 */

/** Every numeric leaf of a benchmark's JSON result, by its dotted path: {attachMs: {p99: 71}} -> attachMs.p99. */
export function figures(value: unknown, prefix = ''): Map<string, number> {
  const out = new Map<string, number>();
  if (typeof value === 'number' && Number.isFinite(value)) out.set(prefix, value);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value))
      for (const [path, x] of figures(v, prefix ? `${prefix}.${k}` : k)) out.set(path, x);
  }
  return out;
}

/** The last line of a benchmark's output that parses as a JSON object (its result). */
export function resultLine(output: string): unknown {
  for (const line of output.trimEnd().split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    try {
      return JSON.parse(line);
    } catch {
      // a line that only looks like JSON
    }
  }
  throw new Error('the benchmark printed no JSON result line');
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Ranks of all values together (1-based; ties get their mean rank) and whether any tie occurred. */
function ranks(all: readonly number[]): { rank: number[]; tieSizes: number[] } {
  const order = all.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]);
  const rank = new Array<number>(all.length);
  const tieSizes: number[] = [];
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    for (let k = i; k <= j; k++) rank[order[k]![1]] = (i + j) / 2 + 1;
    if (j > i) tieSizes.push(j - i + 1);
    i = j + 1;
  }
  return { rank, tieSizes };
}

/** Number of arrangements of m and n items giving each U (0..m*n): the exact null distribution without ties. */
function uCounts(m: number, n: number): number[] {
  // f[i][j][u]: arrangements of i items of A and j of B with statistic u, built one item at a time.
  let prev: number[][] = Array.from({ length: n + 1 }, () => [1]);
  for (let i = 1; i <= m; i++) {
    const cur: number[][] = [[1]];
    for (let j = 1; j <= n; j++) {
      const size = i * j + 1;
      const row = new Array<number>(size).fill(0);
      // The largest item is from A (it beats all j of B: +j) or from B (+0).
      prev[j]!.forEach((c, u) => (row[u + j]! += c));
      cur[j - 1]!.forEach((c, u) => (row[u]! += c));
      cur.push(row);
    }
    prev = cur;
  }
  return prev[n]!;
}

function normalTail(z: number): number {
  // 1 - Phi(z) for z >= 0 (Abramowitz-Stegun 26.2.17; error < 7.5e-8).
  const t = 1 / (1 + 0.2316419 * z);
  const poly = t * (0.31938153 + t * (-0.356563782 + t * (1.781477937 + t * (-1.821255978 + t * 1.330274429))));
  return (Math.exp((-z * z) / 2) / Math.sqrt(2 * Math.PI)) * poly;
}

/**
 * Two-sided p-value of the Mann-Whitney U test that a and b come from the
 * same distribution: exact for small samples without ties, else the normal
 * approximation with tie and continuity corrections.
 */
export function mannWhitney(a: readonly number[], b: readonly number[]): { u: number; p: number } {
  const m = a.length;
  const n = b.length;
  if (m === 0 || n === 0) return { u: 0, p: 1 };
  const { rank, tieSizes } = ranks([...a, ...b]);
  const rankSumA = rank.slice(0, m).reduce((s, r) => s + r, 0);
  const uA = rankSumA - (m * (m + 1)) / 2;
  const u = Math.min(uA, m * n - uA);
  if (tieSizes.length === 0 && m <= 20 && n <= 20) {
    const counts = uCounts(m, n);
    const total = counts.reduce((s, c) => s + c, 0);
    const tail = counts.slice(0, Math.floor(u) + 1).reduce((s, c) => s + c, 0);
    return { u, p: Math.min(1, (2 * tail) / total) };
  }
  const N = m + n;
  const tieTerm = tieSizes.reduce((s, t) => s + t * t * t - t, 0);
  const variance = ((m * n) / 12) * (N + 1 - tieTerm / (N * (N - 1)));
  if (variance <= 0) return { u, p: 1 };
  const z = Math.max(0, Math.abs(uA - (m * n) / 2) - 0.5) / Math.sqrt(variance);
  return { u, p: Math.min(1, 2 * normalTail(z)) };
}

export interface Comparison {
  figure: string;
  base: number[];
  head: number[];
  baseMedian: number;
  headMedian: number;
  /** head median / base median (NaN when the base median is 0). */
  ratio: number;
  p: number;
  /** p below ALPHA: the two differ beyond run-to-run noise. */
  significant: boolean;
}

export const ALPHA = 0.05;

/** Compares every figure found in both sides' runs. */
export function compare(
  baseRuns: readonly Map<string, number>[],
  headRuns: readonly Map<string, number>[],
): Comparison[] {
  const names = [...new Set(baseRuns.flatMap((r) => [...r.keys()]))].filter((f) => headRuns.some((r) => r.has(f)));
  return names.map((figure) => {
    const base = baseRuns.flatMap((r) => (r.has(figure) ? [r.get(figure)!] : []));
    const head = headRuns.flatMap((r) => (r.has(figure) ? [r.get(figure)!] : []));
    const baseMedian = median(base);
    const headMedian = median(head);
    const { p } = mannWhitney(base, head);
    return {
      figure,
      base,
      head,
      baseMedian,
      headMedian,
      ratio: baseMedian === 0 ? Number.NaN : headMedian / baseMedian,
      p,
      significant: p < ALPHA,
    };
  });
}
