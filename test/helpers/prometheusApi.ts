// Reads a real Prometheus's HTTP API (/api/v1/query, /api/v1/targets): the
// answers as Prometheus gives them, values as its decimal strings, so a test
// compares them with a counter's exact digits. See
// https://prometheus.io/docs/prometheus/latest/querying/api/.

/** One series of an instant vector: its labels and the [time, value] Prometheus evaluated. */
export interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** One active target of /api/v1/targets. */
export interface Target {
  scrapePool: string;
  scrapeUrl: string;
  health: 'up' | 'down' | 'unknown';
  lastError: string;
  lastScrape: string;
  labels: Record<string, string>;
  discoveredLabels: Record<string, string>;
}

async function get<T>(base: string, path: string, params: Record<string, string>): Promise<T> {
  const url = `${base}${path}?${new URLSearchParams(params).toString()}`;
  const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (!res.ok || body.status !== 'success')
    throw new Error(`GET ${url}: HTTP ${res.status}: ${body.error ?? JSON.stringify(body)}`);
  return body.data;
}

/** An instant query evaluated at `time` (Unix seconds; Prometheus's now if omitted); only vector results. */
export async function instantQuery(base: string, query: string, time?: number): Promise<VectorSample[]> {
  const data = await get<{ resultType: string; result: VectorSample[] }>(base, '/api/v1/query', {
    query,
    ...(time !== undefined ? { time: time.toFixed(3) } : {}),
  });
  if (data.resultType !== 'vector') throw new Error(`${query}: a ${data.resultType}, not a vector`);
  return data.result;
}

/** Prometheus's own clock now (Unix seconds): `time()`, evaluated by it. */
export async function prometheusNow(base: string): Promise<number> {
  const data = await get<{ resultType: string; result: [number, string] }>(base, '/api/v1/query', { query: 'time()' });
  return data.result[0];
}

/** The active targets. */
export async function activeTargets(base: string): Promise<Target[]> {
  return (await get<{ activeTargets: Target[] }>(base, '/api/v1/targets', { state: 'active' })).activeTargets;
}

/** One rule of /api/v1/rules: `health` is `unknown` until its first evaluation, `ok` or `err` (with lastError) after. */
export interface Rule {
  name: string;
  type: 'alerting' | 'recording';
  query: string;
  health: 'ok' | 'err' | 'unknown';
  lastError?: string;
  /** The labels the rule sets on what it records or alerts. */
  labels?: Record<string, string>;
}

/** The rule groups Prometheus has loaded, with the file each came from. */
export async function ruleGroups(base: string): Promise<{ name: string; file: string; rules: Rule[] }[]> {
  return (await get<{ groups: { name: string; file: string; rules: Rule[] }[] }>(base, '/api/v1/rules', {})).groups;
}

/** One series of a range vector or a range query: its labels and its [time, value] samples. */
export interface MatrixSeries {
  metric: Record<string, string>;
  values: [number, string][];
}

/** An instant query whose result is a range vector (`x[5m]`): the raw samples Prometheus holds in that range. */
export async function rawSamples(base: string, query: string, time: number): Promise<MatrixSeries[]> {
  const data = await get<{ resultType: string; result: MatrixSeries[] }>(base, '/api/v1/query', {
    query,
    time: time.toFixed(3),
  });
  if (data.resultType !== 'matrix') throw new Error(`${query}: a ${data.resultType}, not a matrix`);
  return data.result;
}

/** A range query (as Grafana's time series panels make): from `start` to `end` every `step` seconds. */
export async function rangeQuery(
  base: string,
  query: string,
  start: number,
  end: number,
  step: number,
): Promise<MatrixSeries[]> {
  const data = await get<{ resultType: string; result: MatrixSeries[] }>(base, '/api/v1/query_range', {
    query,
    start: start.toFixed(3),
    end: end.toFixed(3),
    step: String(step),
  });
  return data.result;
}

/** One alert of /api/v1/alerts: `pending` until its `for` has passed, then `firing`. */
export interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  activeAt: string;
  value: string;
}

/** The alerts now pending or firing. */
export async function activeAlerts(base: string): Promise<Alert[]> {
  return (await get<{ alerts: Alert[] }>(base, '/api/v1/alerts', {})).alerts;
}

/** The values of a label on the series matching `match` (what Grafana's label_values(metric, label) lists). */
export async function labelValues(base: string, label: string, match: string): Promise<string[]> {
  return get<string[]>(base, `/api/v1/label/${encodeURIComponent(label)}/values`, { 'match[]': match });
}
