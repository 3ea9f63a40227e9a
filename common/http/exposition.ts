/**
 * /metrics: prom-client's registry for the few self metrics, followed by
 * the metrics whose samples are computed whole at each scrape (per-pod
 * traffic, rollups), written straight as Prometheus text. Those can be
 * thousands of series: prom-client would build a label object per sample,
 * hash and re-escape it on every scrape, and print counters through
 * Number (inexact above 2^53); here a caller keeps its escaped label text
 * between scrapes and values are printed exactly.
 */
import { readdirSync, statSync } from 'node:fs';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** A prom-client Counter whose one label only takes the values of a union (so emitters and help text share one list). */
export interface LabelledCounter<L extends string, V extends string> {
  inc(labels: Record<L, V>, value?: number): void;
}

/** Writes one sample: `labels` is from labelText() (or ''), `value` is printed exactly. */
export type Emit = (labels: string, value: bigint | number) => void;

export interface TextMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples(emit: Emit): void;
}

/** `{a="x",b="y"}` with Prometheus escaping; '' for no labels. */
export function labelText(labels: Record<string, string>): string {
  let out = '';
  for (const key in labels) out += `${out === '' ? '{' : ','}${key}="${escapeValue(labels[key]!)}"`;
  return out === '' ? '' : `${out}}`;
}

function escapeValue(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : value;
}

/**
 * prom-client's process_open_fds lists /proc/self/fd at every scrape: an
 * agent holds two link fds per pod, and at 500 pods that listing was about
 * a tenth of a scrape's time (a CPU profile of bench/agent.bench.ts's
 * scrapes). Since Linux 6.2 the directory's size is the number of open fds,
 * one stat; older kernels report 0 there and get the listing.
 */
function countOpenFdsCheaply(registry: Registry): void {
  const name = 'process_open_fds';
  if (registry.getSingleMetric(name) === undefined) return; // not Linux: prom-client has none either
  registry.removeSingleMetric(name);
  new Gauge({
    name,
    help: 'Number of open file descriptors.',
    registers: [registry],
    collect() {
      try {
        const size = statSync('/proc/self/fd').size;
        // readdirSync holds one fd of its own while it lists: not counted.
        this.set(size > 0 ? size : readdirSync('/proc/self/fd').length - 1);
      } catch {
        // /proc not mounted: left at its last value, as prom-client does
      }
    },
  });
}

function formatNumber(value: number): string {
  if (Number.isFinite(value)) return String(value);
  return Number.isNaN(value) ? 'NaN' : value > 0 ? '+Inf' : '-Inf';
}

export class Exposition {
  /** The self metrics (prom-client's metric classes register here). */
  readonly registry: Registry;
  readonly #metrics: TextMetric[] = [];
  readonly #beforeScrape: (() => void)[] = [];

  /** Without a registry: a new one with the process's default metrics. */
  constructor(registry?: Registry) {
    if (registry === undefined) {
      registry = new Registry();
      // prom-client samples event-loop delay with a 10 ms timer by default:
      // 100 wake-ups a second, most of an idle agent's CPU. 100 ms is enough
      // to see a blocked loop.
      collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
      countOpenFdsCheaply(registry);
    }
    this.registry = registry;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  add(metric: TextMetric): void {
    this.#metrics.push(metric);
  }

  /** Runs `hook` at the start of every scrape, before any metric's samples (e.g. one read that several metrics share). */
  beforeScrape(hook: () => void): void {
    this.#beforeScrape.push(hook);
  }

  async text(): Promise<string> {
    for (const hook of this.#beforeScrape) hook();
    let out = await this.registry.metrics();
    for (const m of this.#metrics) {
      out += `# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${m.name} ${m.type}\n`;
      m.samples((labels, value) => {
        out += `${m.name}${labels} ${typeof value === 'number' ? formatNumber(value) : value}\n`;
      });
    }
    return out;
  }
}
