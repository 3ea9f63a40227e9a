/**
 * `podmeter agent`: wires the parts together. Order matters for bad input:
 * everything that can be checked (cgroup2 root, state dir, listen address,
 * bpffs) is checked before the first program is attached, so a failed start
 * leaves nothing half-made.
 */
import { readdirSync } from 'node:fs';
import type { AgentConfig } from './config.ts';
import { createLogger, stopOnSignals, type Logger, type StopStep } from '../common/log.ts';
import { findCgroup2Root } from './cgroups/mount.ts';
import { detectMode, type DiscoverMode } from './cgroups/units.ts';
import { CgroupWatcher } from './cgroups/watcher.ts';
import { Meter } from './counting/meter.ts';
import { LinkRepair } from './counting/relink.ts';
import { StateStore } from './counting/state.ts';
import { Tracker } from './counting/tracker.ts';
import { createAgentMetrics, type AgentMetrics } from './http/metrics.ts';
import { HttpServer, json, text } from '../common/http/server.ts';
import { cgroupsView } from './http/api.ts';
import { startMapInventory } from './maps/watcher.ts';
import { addMapMetrics } from './maps/metrics.ts';
import { mapRoutes } from './maps/routes.ts';
import { loadConnection, type KubeConnection } from '../common/kube/connection.ts';
import type { KubeSide } from './kube/kube.ts';
import { PeerTable } from './peers/table.ts';
import { PeerTrie } from './peers/trie.ts';
import type { Conntrack } from './kernel/conntrack.ts';
import { openConntrack, startServiceFlows } from './services/start.ts';

export interface RunningAgent {
  mode: DiscoverMode;
  root: string;
  address: { host: string; port: number };
  stop(step?: StopStep): Promise<void>;
}

export async function startAgent(config: AgentConfig, log: Logger): Promise<RunningAgent> {
  const inputs = checkLocalInputs(config);
  const conntrack = openConntrack(config.conntrackNetns, log.child({ module: 'services' }));
  try {
    return await startCounting(config, inputs, conntrack, log);
  } catch (err) {
    conntrack?.close();
    throw err;
  }
}

async function startCounting(
  config: AgentConfig,
  { root, mode, store }: ReturnType<typeof checkLocalInputs>,
  conntrack: Conntrack | undefined,
  log: Logger,
): Promise<RunningAgent> {
  const connection = await loadConnection(config.kubeconfig);

  const { server, address } = await listen(config, connection, log.child({ module: 'http' }));

  const { meter, peers } = await openMeter(config, connection !== undefined, server, log);
  const tracker = new Tracker({
    meter,
    root,
    store,
    log: log.child({ module: 'tracker' }),
    retentionMs: config.retentionMs,
  });
  const { flowsDrained } = tracker.restore();
  let kube: KubeSide | undefined;
  const metrics = createAgentMetrics({ tracker, mode, podNamer: () => kube?.podNamer });
  const services = startServiceFlows({
    meter,
    tracker,
    drained: flowsDrained,
    conntrack,
    exposition: metrics.exposition,
    log: log.child({ module: 'services' }),
  });
  const maps = inventoryMaps(config, root, meter, tracker, metrics, log);
  addMapMetrics(metrics.exposition, maps.latest, () => kube?.podNamer);
  metrics.exposition.add(server.rejectedMetric('podmeter_http_rejected_total'));
  let ready = false;
  const watcher = watchCgroups(root, mode, tracker, metrics, log, () => {
    // /api/v1/maps and the map metrics answer from the first scrape on; maps.first never rejects (a failed
    // enumeration is logged and counted), so nothing waits on this chain.
    void maps.first.then(() => {
      ready = true;
      log.info(
        { root, mode, counted: tracker.liveCount(), listen: `${address.host}:${address.port}`, scheme: server.scheme },
        'agent ready',
      );
    });
  });

  serveAgent(server, {
    metrics,
    ready: () => ready,
    cgroups: () => ({ node: config.nodeName, mode, ...cgroupsView(tracker, kube?.podNamer) }),
    mapRoutes: mapRoutes(maps.latest, () => kube?.podNamer),
  });

  watcher.start();
  kube = await startKubeSide(connection, {
    config,
    tracker,
    metrics,
    maps: maps.latest,
    onPeers: (view) => peers.setCluster(view),
    log,
  });
  const links = new LinkRepair({
    meter,
    tracker,
    log: log.child({ module: 'links' }),
    onError: (op, err) => metrics.countError(op, err),
  });
  const timer = setInterval(() => {
    meter.checkPins();
    links.check();
    watcher.resync();
    tracker.tick();
  }, config.intervalMs);

  const parts = { timer, kube, maps, watcher, services, tracker, meter, server };
  return { mode, root, address, stop: (step = () => {}) => stopAgent(parts, step, log) };
}

/** Stops the parts in order, the Kubernetes side first; the links stay pinned. */
async function stopAgent(
  parts: {
    timer: NodeJS.Timeout;
    kube: KubeSide | undefined;
    maps: { stop(): void };
    watcher: CgroupWatcher;
    services: { stop(): Promise<void> };
    tracker: Tracker;
    meter: Meter;
    server: HttpServer;
  },
  step: StopStep,
  log: Logger,
): Promise<void> {
  clearInterval(parts.timer);
  step('pod watch and annotation writes');
  await parts.kube?.stop();
  parts.maps.stop();
  step('cgroup watcher');
  await parts.watcher.close();
  step('last counter read and state file');
  await parts.services.stop();
  await parts.tracker.stop();
  parts.meter.close();
  step('HTTP server');
  await parts.server.close();
  log.info('agent stopped; links stay pinned, counting continues until the next start');
}

/**
 * podmeter's programs and maps (adopted from pins or loaded) and the peer
 * table that keeps their classes current; the server is closed when they
 * cannot be opened.
 */
async function openMeter(
  config: AgentConfig,
  inCluster: boolean,
  server: HttpServer,
  log: Logger,
): Promise<{ meter: Meter; peers: PeerTable }> {
  let meter: Meter;
  try {
    meter = Meter.open(
      config.bpffs,
      log.child({ module: 'meter' }),
      (config.peerClasses ?? []).map((c) => c.name),
    );
  } catch (err) {
    await server.close();
    throw err;
  }

  const peers = new PeerTable({
    trie: new PeerTrie(meter.maps.peers, meter.maps.gen),
    slots: meter.slots,
    configured: config.peerClasses ?? [],
    services: config.serviceCidrs,
    log: log.child({ module: 'peers' }),
  });
  peers.start({ keepCluster: inCluster });
  return { meter, peers };
}

/** The Kubernetes side (pod watch, annotations, peer classes from Nodes), when there is an API to talk to. */
async function startKubeSide(
  connection: KubeConnection | undefined,
  parts: Omit<Parameters<typeof import('./kube/kube.ts').startKubernetes>[0], 'connection'>,
): Promise<KubeSide | undefined> {
  const { log } = parts;
  if (connection === undefined) {
    log.info('no kubeconfig and no in-cluster service account: standalone (counting and metrics only)');
    return undefined;
  }
  const { startKubernetes } = await import('./kube/kube.ts'); // standalone agents never load the Kubernetes side
  log.info({ server: connection.server, credentials: connection.source }, 'Kubernetes API');
  return startKubernetes({ ...parts, connection, log: log.child({ module: 'kube' }) });
}

/** The node's BPF map inventory, every --maps-interval, knowing podmeter's own storage map and link fds. */
function inventoryMaps(
  config: AgentConfig,
  root: string,
  meter: Meter,
  tracker: Tracker,
  metrics: AgentMetrics,
  log: Logger,
): ReturnType<typeof startMapInventory> {
  return startMapInventory({
    intervalMs: config.mapsIntervalMs,
    cgroupRoot: root,
    // Two storage elements (ingress, egress) per counted cgroup: known without walking the map's keys.
    ownStorage: { mapId: meter.maps.stats.info().id, entries: () => 2 * tracker.liveCount() },
    ownNonMapFds: () => meter.heldLinkFds(),
    log: log.child({ module: 'maps' }),
    onError: () => metrics.errors.inc({ op: 'maps' }),
  });
}

/** The cgroup watcher feeding the tracker; `onReady` after the initial scan (and the leftovers of the last run settled). */
function watchCgroups(
  root: string,
  mode: DiscoverMode,
  tracker: Tracker,
  metrics: AgentMetrics,
  log: Logger,
  onReady: () => void,
): CgroupWatcher {
  return new CgroupWatcher(root, mode)
    .on('unit', (unit, seenAt) => tracker.onUnit(unit, seenAt))
    .on('populated', (relPath, populated) => tracker.onPopulated(relPath, populated))
    .on('gone', (relPath) => tracker.onGone(relPath))
    .on('error', (err) => {
      metrics.errors.inc({ op: 'watch' });
      log.warn({ err }, 'cgroup watcher error');
    })
    .once('ready', () => {
      tracker.settleLeftovers();
      onReady();
    });
}

/**
 * What can be checked on the host before anything is made: the cgroup2 root
 * (readable), the discovery mode, the state directory (writable).
 */
function checkLocalInputs(config: AgentConfig): { root: string; mode: DiscoverMode; store: StateStore } {
  const root = findCgroup2Root(config.cgroupRoot === undefined ? {} : { override: config.cgroupRoot });
  try {
    readdirSync(root);
  } catch (err) {
    throw new Error(`cgroup root '${root}' is not readable: ${(err as Error).message} (run the agent as root)`, {
      cause: err,
    });
  }
  const mode: DiscoverMode = config.discover === 'auto' ? detectMode(root) : config.discover;
  const store = new StateStore(config.stateDir);
  try {
    store.ensure();
  } catch (err) {
    throw new Error(`--state-dir '${config.stateDir}' is not a writable directory: ${(err as Error).message}`, {
      cause: err,
    });
  }

  return { root, mode, store };
}

/** The agent's HTTP server (HTTPS with `--metrics-auth kubernetes`), listening. */
async function listen(
  config: AgentConfig,
  connection: KubeConnection | undefined,
  log: Logger,
): Promise<{ server: HttpServer; address: { host: string; port: number } }> {
  const secure =
    config.metricsAuth === 'kubernetes'
      ? (await import('../common/http/auth.ts')).kubernetesSecurity({
          config,
          connection,
          commonName: 'podmeter-agent',
          names: [config.nodeName, config.listen.host],
          log,
        })
      : undefined;
  const server = new HttpServer(log, secure);
  return { server, address: await server.listen(config.listen.host, config.listen.port) };
}

/** The agent's routes: /metrics, health, the cgroups API and the map pages. */
function serveAgent(
  server: HttpServer,
  parts: {
    metrics: AgentMetrics;
    ready: () => boolean;
    cgroups: () => unknown;
    mapRoutes: ReturnType<typeof mapRoutes>;
  },
): void {
  const { metrics } = parts;
  server
    .route('/metrics', async () => ({ type: metrics.exposition.contentType, body: await metrics.exposition.text() }))
    .route('/healthz', () => text('ok\n'))
    .route('/readyz', () => (parts.ready() ? text('ready\n') : text('initial cgroup scan in progress\n', 503)))
    .route('/api/v1/cgroups', () => json(parts.cgroups()));
  for (const [path, route] of Object.entries(parts.mapRoutes)) server.route(path, route);
}

/** Entry point of `podmeter agent`: runs until SIGINT/SIGTERM. */
export async function runAgent(config: AgentConfig): Promise<void> {
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const agent = await startAgent(config, log);
  stopOnSignals(log, (step) => agent.stop(step));
}
