/**
 * The one reader of Prometheus text expositions (the agent's, the operator's,
 * the apiserver's, cAdvisor's /metrics) in the tests and benchmarks.
 *
 *   samples(text, name) -> Sample[]             every sample of a metric
 *   sampleAt(text, name, labels) -> Sample       the first whose labels include `labels`
 *   sample(...) -> number, sampleText(...) -> string   its value
 *   sumOf(text, name, labels) -> number          the sum over every matching sample
 */

export interface Sample {
  labels: Record<string, string>;
  /** As written: exact beyond 2^53 (compare counters with BigInt(value)). */
  value: string;
  /** When the exposition has one (cAdvisor's have: when it read them). */
  timestampMs?: number;
}

export function samples(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries(
      [...(m[1] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]),
    );
    out.push(m[3] === undefined ? { labels, value: m[2]! } : { labels, value: m[2]!, timestampMs: Number(m[3]) });
  }
  return out;
}

function matching(text: string, name: string, labels: Record<string, string>): Sample[] {
  return samples(text, name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The first sample of `name` whose labels include `labels`, e.g. sampleAt(text, 'podmeter_x', {direction: 'egress'}). */
export function sampleAt(text: string, name: string, labels: Record<string, string>): Sample | undefined {
  return matching(text, name, labels)[0];
}

export function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const value = sampleAt(text, name, labels)?.value;
  return value === undefined ? undefined : Number(value);
}

export function sampleText(text: string, name: string, labels: Record<string, string>): string | undefined {
  return sampleAt(text, name, labels)?.value;
}

/** The sum over every sample of `name` whose labels include `labels` (0 when none does). */
export function sumOf(text: string, name: string, labels: Record<string, string>): number {
  return matching(text, name, labels).reduce((sum, s) => sum + Number(s.value), 0);
}
