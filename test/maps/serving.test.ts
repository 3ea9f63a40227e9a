/**
 * What the agent and the CLI make of an inventory: the HTTP routes, the
 * Prometheus metrics, the refresh timer, and `podmeter maps` (standalone and
 * --agent), on the real kernel with maps held by a process in a pod cgroup.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { release } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { HttpServer } from '../../common/http/server.ts';
import { possibleCpus } from '../../agent/kernel/bpf.ts';
import { Meter } from '../../agent/counting/meter.ts';
import { CGROUP_STORAGE_ELEMENT_OVERHEAD, kernelChargesMemlock } from '../../agent/maps/estimate.ts';
import { takeInventory, type MapInventory } from '../../agent/maps/inventory.ts';
import { addMapMetrics } from '../../agent/maps/metrics.ts';
import { Exposition } from '../../common/http/exposition.ts';
import { mapRoutes, type MapsView } from '../../agent/maps/routes.ts';
import { startMapInventory } from '../../agent/maps/watcher.ts';
import { attachMeter } from '../helpers/bpf.ts';
import { makeTestCgroup, type TestCgroup } from '../helpers/cgroups.ts';
import { afterOrSignal, randomSuffix, TEST_PREFIX, type AfterHook } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/poll.ts';
import { samples } from '../helpers/samples.ts';
import { MAP_TYPE, startHolder, uniqueComm, type Created, type Holder } from '../helpers/mapHolder.ts';

const silent = pino({ level: 'silent' });

interface PodMaps {
  uid: string;
  tree: TestCgroup;
  holder: Holder;
  a: Created;
  b: Created;
  shared: Created;
}

/** A pod-shaped cgroup whose process holds two maps named alike (pmt_srv_dup) and one more. */
async function podWithMaps(t: AfterHook): Promise<PodMaps> {
  const uid = randomUUID();
  const tree = makeTestCgroup(
    t,
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll('-', '_')}.slice`,
  );
  const holder = await startHolder(t, { comm: uniqueComm('srv'), cgroup: tree });
  const a = await holder.create({ name: 'pmt_srv_dup', type: MAP_TYPE.array, key: 4, value: 8, max: 100 });
  const b = await holder.create({ name: 'pmt_srv_dup', type: MAP_TYPE.array, key: 4, value: 8, max: 300 });
  const shared = await holder.create({ name: 'pmt_srv_lru', type: MAP_TYPE.lruHash, key: 8, value: 8, max: 1000 });
  return { uid, tree, holder, a, b, shared };
}

async function serve(t: AfterHook, getInventory: () => MapInventory | undefined): Promise<string> {
  const server = new HttpServer(silent);
  for (const [path, route] of Object.entries(mapRoutes(getInventory))) server.route(path, route);
  const { port } = await server.listen('127.0.0.1', 0);
  t.after(() => server.close());
  return `http://127.0.0.1:${port}`;
}

/** The value of the series with exactly these labels (none more). */
function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  const found = samples(text, name).find((s) => isDeepStrictEqual(s.labels, labels));
  return found && Number(found.value);
}

test('metrics: node total, per map (same labels summed) and per pod, read at scrape time', async (t) => {
  const pod = await podWithMaps(t);
  let inv: MapInventory | undefined;
  const exposition = new Exposition(new Registry());
  let names = false;
  addMapMetrics(
    exposition,
    () => inv,
    () => (names ? (uid) => (uid === pod.uid ? { namespace: 'ns1', pod: 'web-0' } : undefined) : undefined),
  );

  // Before the first inventory: no per-map or per-pod series.
  assert.equal(
    metricValue(await exposition.text(), 'podmeter_pod_bpf_map_memory_bytes', { namespace: '', pod: '', uid: pod.uid }),
    undefined,
  );

  inv = await takeInventory({ cgroupRoot: pod.tree.top });
  let text = await exposition.text();
  assert.equal(metricValue(text, 'podmeter_node_bpf_map_memory_bytes', {}), inv.totalBytes);
  // Two maps with equal labels: one series, their sum. Without a pod name the pod label is the uid.
  assert.equal(
    metricValue(text, 'podmeter_bpf_map_memory_bytes', {
      map_name: 'pmt_srv_dup',
      map_type: 'array',
      owner: pod.holder.comm,
      namespace: '',
      pod: pod.uid,
    }),
    pod.a.memlock + pod.b.memlock,
  );
  assert.equal(
    metricValue(text, 'podmeter_bpf_map_memory_bytes', {
      map_name: 'pmt_srv_lru',
      map_type: 'lru_hash',
      owner: pod.holder.comm,
      namespace: '',
      pod: pod.uid,
    }),
    pod.shared.memlock,
  );
  const podBytes = pod.a.memlock + pod.b.memlock + pod.shared.memlock;
  assert.equal(
    metricValue(text, 'podmeter_pod_bpf_map_memory_bytes', { namespace: '', pod: '', uid: pod.uid }),
    podBytes,
  );

  // Once the pod's name is known, the labels carry it.
  names = true;
  text = await exposition.text();
  assert.equal(
    metricValue(text, 'podmeter_pod_bpf_map_memory_bytes', { namespace: 'ns1', pod: 'web-0', uid: pod.uid }),
    podBytes,
  );
  assert.equal(
    metricValue(text, 'podmeter_bpf_map_memory_bytes', {
      map_name: 'pmt_srv_dup',
      map_type: 'array',
      owner: pod.holder.comm,
      namespace: 'ns1',
      pod: 'web-0',
    }),
    pod.a.memlock + pod.b.memlock,
  );
  // Series are bounded by distinct label sets, not by maps.
  const series = text.split('\n').filter((l) => l.startsWith('podmeter_bpf_map_memory_bytes{'));
  assert.equal(new Set(series.map((l) => l.slice(0, l.lastIndexOf(' ')))).size, series.length);
});

test('HTTP: /api/v1/maps, /maps and /maps/chart.js; 503 before the first inventory', async (t) => {
  const pod = await podWithMaps(t);
  let inv: MapInventory | undefined;
  const base = await serve(t, () => inv);

  let res = await fetch(`${base}/api/v1/maps`);
  assert.equal(res.status, 503);
  await res.text();
  res = await fetch(`${base}/maps`);
  assert.equal(res.status, 503);
  await res.text();

  inv = await takeInventory({ cgroupRoot: pod.tree.top });
  res = await fetch(`${base}/api/v1/maps`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const view = (await res.json()) as MapsView;
  assert.equal(view.totalBytes, inv.totalBytes);
  assert.equal(view.time, new Date(inv.takenAt).toISOString());
  assert.deepEqual(view.maps.find((m) => m.id === pod.a.id)?.podUids, [pod.uid]);
  assert.equal(view.byPod.find((p) => p.uid === pod.uid)?.maps, 3);

  res = await fetch(`${base}/maps`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  const html = await res.text();
  assert.match(html, /<script src="maps\/chart\.js"><\/script>/);
  assert.ok(html.includes('pmt_srv_lru'), 'the inventory is embedded');

  res = await fetch(`${base}/maps/chart.js`);
  assert.match(res.headers.get('content-type') ?? '', /javascript/);
  assert.ok((await res.text()).includes('createElementNS'));
});

test('startMapInventory refreshes on its interval, never throws, counts failures', async (t) => {
  const ok = startMapInventory({ intervalMs: 50, log: silent });
  t.after(() => ok.stop());
  await ok.first;
  const first = ok.latest();
  assert.ok(first !== undefined, 'the first enumeration runs at start');
  assert.ok(first.longestSliceMs > 0 && first.longestSliceMs <= first.durationMs);
  const a = ok.refresh();
  assert.equal(ok.refresh(), a, 'a refresh under way is joined, not doubled');
  await a;
  await waitFor('refreshed on the timer', () => ((ok.latest()?.takenAt ?? 0) > first.takenAt ? true : undefined));
  assert.equal(ok.errors(), 0);

  const seen: unknown[] = [];
  const failing = startMapInventory({
    intervalMs: 30,
    procRoot: '/nonexistent-podmeter-test',
    log: silent,
    onError: (err) => seen.push(err),
  });
  t.after(() => failing.stop());
  await waitFor('two failures counted', () => (failing.errors() >= 2 ? true : undefined));
  assert.equal(failing.latest(), undefined);
  assert.equal(seen.length, failing.errors());
  failing.stop();
  const after = failing.errors();
  // Twenty intervals: a timer left running would have failed again.
  await new Promise((r) => setTimeout(r, 20 * 30));
  assert.equal(failing.errors(), after, 'stopped');
});

const RUN_MAPS = `const { runMaps } = await import(${JSON.stringify(new URL('../../cli/maps.ts', import.meta.url).href)}); await runMaps(process.argv.slice(1));`;

function podmeterMaps(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', RUN_MAPS, '--', ...args],
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 1 << 26, cwd: fileURLToPath(new URL('../..', import.meta.url)) },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('podmeter maps: the four views standalone, --json, and --agent', async (t) => {
  const pod = await podWithMaps(t);

  const human = await podmeterMaps(['--cgroup-root', pod.tree.top, '-n', '0']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^BPF map memory: .+ in \d+ maps \(each map once\)$/m);
  for (const heading of ['By map name', 'By owner process', 'By pod', 'Largest maps'])
    assert.ok(human.stdout.includes(heading), heading);
  assert.match(human.stdout, /pmt_srv_dup\s+array\s+2\s/, 'by name: two maps named alike');
  assert.match(
    human.stdout,
    new RegExp(`${pod.holder.comm}\\s+${pod.holder.pid}\\s+3\\s`),
    'by owner: pid and map count',
  );
  assert.match(human.stdout, new RegExp(`-\\s+${pod.uid}\\s+3\\s`), 'by pod');

  const json = await podmeterMaps(['--json', '--cgroup-root', pod.tree.top]);
  assert.equal(json.code, 0, json.stderr);
  const view = JSON.parse(json.stdout) as MapsView;
  assert.equal(view.byPod.find((p) => p.uid === pod.uid)?.bytes, pod.a.memlock + pod.b.memlock + pod.shared.memlock);
  assert.equal(view.maps.find((m) => m.id === pod.shared.id)?.owners[0], pod.holder.comm);

  const inv = await takeInventory({ cgroupRoot: pod.tree.top });
  const base = await serve(t, () => inv);
  const remote = await podmeterMaps(['--json', '--agent', base]);
  assert.equal(remote.code, 0, remote.stderr);
  assert.deepEqual(
    JSON.parse(remote.stdout),
    JSON.parse(JSON.stringify({ ...inv, time: new Date(inv.takenAt).toISOString() })),
  );

  const down = await podmeterMaps(['--agent', 'http://127.0.0.1:1']);
  assert.notEqual(down.code, 0);
  assert.match(down.stderr, /cannot reach the agent at http:\/\/127\.0\.0\.1:1/);
});

test('podmeter maps standalone estimates the pinned podmeter counter map found under --bpffs', async (t) => {
  const bpffs = join('/sys/fs/bpf', `${TEST_PREFIX}${randomSuffix()}`);
  const meter = Meter.open(bpffs, silent);
  afterOrSignal(t, () => {
    for (const pin of meter.pins.listLinks()) meter.release(pin.cgroupId);
    meter.close();
    meter.pins.removeAll();
  });
  const tree = makeTestCgroup(t);
  const cgroups = [tree.child('a'), tree.child('b')];
  for (const cg of cgroups) attachMeter(meter, cg);
  const info = meter.maps.stats.info();

  const run = await podmeterMaps(['--json', '--bpffs', bpffs]);
  assert.equal(run.code, 0, run.stderr);
  const own = (JSON.parse(run.stdout) as MapsView).maps.find((m) => m.id === info.id);
  assert.equal(own?.entries, 4);
  if (kernelChargesMemlock(release())) {
    // Before 5.11 the kernel's memlock (read after the attaches) already charges the elements.
    assert.equal(own?.estimated, false);
    assert.equal(own?.bytes, info.memlock);
    return;
  }
  assert.equal(own?.estimated, true);
  const element = Math.ceil(info.valueSize / 8) * 8 * possibleCpus() + CGROUP_STORAGE_ELEMENT_OVERHEAD;
  assert.equal(own?.bytes, info.memlock + 4 * element);
});
