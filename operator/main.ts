/**
 * `podmeter operator`: wires the parts together (the timer's work is rounds.ts). Every replica watches
 * (pod metadata as Table rows, ReplicaSet/Job/Node metadata) and serves
 * /metrics and health; the replica holding the Lease also loads the ledger
 * from the custom resources, writes their status and publishes the
 * per-node annotation write budget.
 */
import { createLogger, stopOnSignals, type Logger, type StopStep } from '../common/log.ts';
import { loadConnection, type KubeConnection } from '../common/kube/connection.ts';
import { WriteBudget } from '../common/writeBudget.ts';
import { HttpServer, text } from '../common/http/server.ts';
import { wantsHelp } from '../common/flags/parse.ts';
import { parseOperatorConfig, operatorHelp, type OperatorConfig } from './config.ts';
import { KubeApi } from '../common/kube/api.ts';
import { Interner, OwnerIndex } from './owners.ts';
import { PodStore } from './pods.ts';
import { Ledger } from './ledger/ledger.ts';
import { LeaderElector } from './election.ts';
import { BudgetPublisher } from './budget.ts';
import { createOperatorMetrics, type OperatorMetrics } from './metrics.ts';
import type { OperatorErrorOp } from './errors.ts';
import { NodeStore } from './nodes.ts';
import { startRounds, writeLastStatus } from './rounds.ts';
import { AdmissionCheck } from './admission.ts';
import { startWatches } from './watches.ts';
import { checkUsageCrds } from './crds.ts';

export const LEASE_NAME = 'podmeter-operator';

export interface RunningOperator {
  address: { host: string; port: number };
  stop(step?: StopStep): Promise<void>;
}

export async function startOperator(
  config: OperatorConfig,
  log: Logger,
  options: { lease?: { leaseMs: number; renewMs: number; retryMs: number } } = {},
): Promise<RunningOperator> {
  const connection = await loadConnection(config.kubeconfig);
  if (connection === undefined)
    throw new Error('no --kubeconfig and no in-cluster service account: the operator needs a Kubernetes API');
  const api = new KubeApi(connection);
  // Before anything is written: an older schema would silently drop fields the ledger relies on.
  await checkUsageCrds(api, log);
  let metrics: OperatorMetrics | undefined;
  const countError = (op: OperatorErrorOp) => metrics?.errors.inc({ op });
  const { owners, pods, admission, ledger } = bookkeeping(config, api, log, countError);
  const election = new LeaderElector({
    api,
    namespace: config.namespace,
    name: LEASE_NAME,
    identity: config.identity,
    log: log.child({ module: 'election' }),
    onError: () => countError('lease'),
    ...options.lease,
  });
  metrics = createOperatorMetrics({ ledger, isLeader: () => election.isLeader, pods: () => pods.size });
  const budget = new BudgetPublisher({
    api,
    namespace: config.namespace,
    maxWritesPerSecond: config.maxAnnotationWritesPerSecond,
    log: log.child({ module: 'budget' }),
  });

  let ready = false;
  const { server, address } = await serveOperator({
    config,
    connection,
    metrics,
    readiness: () => (ready ? (election.isLeader ? 'ready (leader)' : 'ready (standby)') : undefined),
    log: log.child({ module: 'http' }),
  });
  metrics.exposition.add(admission.metric());

  const nodes = new NodeStore({ listener: ledger, log: log.child({ module: 'nodes' }), onError: countError });
  const watches = startWatches({ api, owners, nodes, pods, budget, log, countError });
  const rounds = startRounds({ election, ledger, budget, pods, metrics, countError, log });

  // Owners first, so pods resolve to their workloads from the start; the admission policy read before leading.
  void (async () => {
    await Promise.all([watches.owners(), admission.start()]);
    await watches.pods();
    ready = true;
    log.info(
      {
        pods: pods.size,
        owners: owners.size,
        nodes: nodes.size,
        listen: `${address.host}:${address.port}`,
        scheme: server.scheme,
        identity: config.identity,
      },
      'operator ready',
    );
    election.start();
  })();

  return {
    address,
    async stop(step = () => {}) {
      rounds.stop();
      admission.stop();
      step('last status writes and the lease release');
      await election.stop(() => writeLastStatus({ ledger, countError, log }));
      ledger.deactivate();
      step('watches');
      await watches.stop();
      step('HTTP server');
      await server.close();
      log.info('operator stopped');
    },
  };
}

/** The stores the ledger is kept from: pod owners, pods (the ledger listens to them), the admission policy's state. */
function bookkeeping(config: OperatorConfig, api: KubeApi, log: Logger, countError: (op: OperatorErrorOp) => void) {
  const intern = new Interner();
  const owners = new OwnerIndex(log.child({ module: 'owners' }), intern);
  const pods = new PodStore({
    owners,
    intern,
    log: log.child({ module: 'pods' }),
    onMalformed: () => countError('annotation'),
  });
  const admission = new AdmissionCheck({ api, name: config.admissionPolicy, log: log.child({ module: 'admission' }) });
  const ledger = new Ledger({
    api,
    pods,
    identity: config.identity,
    log: log.child({ module: 'ledger' }),
    budget: new WriteBudget(config.maxStatusWritesPerSecond),
    retentionMs: config.usageRetentionMs,
    finalsTrusted: () => admission.enforced,
    onError: countError,
  });
  pods.listener = ledger;
  return { owners, pods, admission, ledger };
}

/**
 * The operator's HTTP server (plain, or HTTPS with `--metrics-auth kubernetes`): /metrics, /healthz, and
 * /readyz, which answers 503 until `readiness` says the initial lists are in.
 */
async function serveOperator(parts: {
  config: OperatorConfig;
  connection: KubeConnection;
  metrics: OperatorMetrics;
  readiness: () => string | undefined;
  log: Logger;
}): Promise<{ server: HttpServer; address: { host: string; port: number } }> {
  const { config, metrics, log } = parts;
  const secure =
    config.metricsAuth === 'kubernetes'
      ? (await import('../common/http/auth.ts')).kubernetesSecurity({
          config,
          connection: parts.connection,
          commonName: 'podmeter-operator',
          names: [config.identity, config.listen.host],
          log,
        })
      : undefined;
  const server = new HttpServer(log, secure);
  metrics.exposition.add(server.rejectedMetric('podmeter_operator_http_rejected_total'));
  server
    .route('/metrics', async () => ({ type: metrics.exposition.contentType, body: await metrics.exposition.text() }))
    .route('/healthz', () => text('ok\n'))
    .route('/readyz', () => {
      const state = parts.readiness();
      return state === undefined
        ? text('initial list of pods, owners and nodes in progress\n', 503)
        : text(`${state}\n`);
    });
  return { server, address: await server.listen(config.listen.host, config.listen.port) };
}

/** Entry point of `podmeter operator`: runs until SIGINT/SIGTERM. */
export async function runOperator(argv: string[]): Promise<void> {
  if (wantsHelp(argv)) return void process.stdout.write(operatorHelp);
  const config = parseOperatorConfig(argv, process.env);
  const log = createLogger({ level: config.logLevel, format: config.logFormat, name: 'podmeter-operator' });
  const operator = await startOperator(config, log);
  stopOnSignals(log, (step) => operator.stop(step));
}
