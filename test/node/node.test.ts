/**
 * podmeter as users run it: `helm install` of the unchanged chart on a real
 * node (test/node: a qemu VM with systemd, containerd, runc, bridge CNI and a
 * kubelet with the systemd cgroup driver, joined to a test control plane), the
 * agent inside its container with the chart's securityContext and mounts.
 * One VM boot serves every check below, in order.
 * Needs root, qemu, debootstrap and socat; the first run on a machine builds
 * the node's tools, root filesystem and images (cached).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CHART } from '../helm/chart.ts';
import { sample, sampleAt, samples, sampleText } from '../helpers/samples.ts';
import { sleep } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/poll.ts';
import { HOLDER_SCRIPT } from '../helpers/mapHolder.ts';
import {
  activeAlerts,
  activeTargets,
  instantQuery,
  labelValues,
  prometheusNow,
  rangeQuery,
  rawSamples,
  ruleGroups,
  type Alert,
} from '../helpers/prometheusApi.ts';
import type { MapsView } from '../../agent/maps/routes.ts';
import { ANNOTATIONS } from '../../common/contract/annotations.ts';
import { fillVariables, OPENCOST_NETWORK_QUERIES, opencostQuery, panelQueries, queryVariables } from './monitoring.ts';
import { startNode, type TestNode } from './node.ts';
import {
  assertNeighbourFrames,
  assertPhase,
  counterDelta,
  ETH0_STATISTICS,
  NEIGHBOUR_FRAMES_MAX,
  podCounters,
  PROBE,
  SEND,
  SINK,
  SINK_LISTENING,
  SINK_PORT,
  sinkEndpointSlice,
  sinkService,
  POD_GATEWAY,
  VM_NODE_IP,
  ZONE_B,
} from './services.ts';

const RELEASE = 'podmeter';
const SYSTEM_NS = 'podmeter-system';
const WORKLOAD_IMAGE = 'localhost/podmeter-workload:test';
const UDP_PORT = 9000;
/** The label kube-prometheus-stack's Prometheus selects monitors and rules by (test/node/kube-prometheus-stack.yaml). */
const KPS_RELEASE = 'kube-prometheus-stack';

/** Check 8: addresses of the peer classes the Nodes it adds (zone b of region r1, region r2) and nothing else give. */
const OTHER_ZONES = {
  zoneLabel: 'topology.kubernetes.io/zone',
  regionLabel: 'topology.kubernetes.io/region',
  crossZone: '10.250.0.10',
  crossRegion: '10.251.0.10',
  // TEST-NET-1 (RFC 5737): no Node, Service or configured class has it.
  external: '192.0.2.10',
};
/** The alerts check 8 provokes, with `for: 0s` (values: monitoring.prometheusRule.for). */
const SHORT_FOR = [
  'PodmeterAgentDown',
  'PodmeterBpfMapMemoryHigh',
  'PodmeterAnnotationWritesRejected',
  'PodmeterNamespaceCrossZoneEgressHigh',
];
/** Prices per GiB that check 8 multiplies OpenCost's GiB by (its custom pricing's zone, region and internet egress). */
const OPENCOST_PRICES = { zone: 0.01, region: 0.02, internet: 0.12 };
/**
 * Sends argv[2] (STOP or CONT) to every process of the pod with uid argv[1]
 * but its pause container, seen from the node's PID namespace (hostPID);
 * prints their pids.
 */
const FREEZE = [
  'import os, signal, sys',
  'slice = "pod" + sys.argv[1].replace("-", "_") + ".slice"',
  'pids = []',
  'for p in filter(str.isdigit, os.listdir("/proc")):',
  '    try:',
  '        if slice in open(f"/proc/{p}/cgroup").read() and open(f"/proc/{p}/comm").read().strip() != "pause":',
  '            pids.append(int(p))',
  '    except OSError:',
  '        pass',
  'for p in pids:',
  '    try:',
  '        os.kill(p, getattr(signal, "SIG" + sys.argv[2]))',
  '    except ProcessLookupError:',
  '        pass',
  'print(" ".join(map(str, pids)))',
];

/** What the tests read of a Pod. */
interface PodJson {
  metadata: { uid: string };
  status: { podIP: string; podIPs?: { ip: string }[] };
}

async function podJson(node: TestNode, ns: string, name: string): Promise<PodJson> {
  return JSON.parse(await node.must(['get', 'pod', name, '-n', ns, '-o', 'json'])) as PodJson;
}

async function podAnnotations(node: TestNode, ns: string, name: string): Promise<Record<string, string>> {
  const out = (await node.must(['get', 'pod', name, '-n', ns, '-o', 'jsonpath={.metadata.annotations}'])).trim();
  return out === '' ? {} : (JSON.parse(out) as Record<string, string>);
}

/** Name of the one Running pod matching a label selector. */
async function podBySelector(node: TestNode, ns: string, selector: string): Promise<string> {
  return waitFor(
    `a Running pod with ${selector} in ${ns}`,
    async () => {
      const out = await node.must([
        'get',
        'pods',
        '-n',
        ns,
        '-l',
        selector,
        '--field-selector=status.phase=Running',
        '-o',
        'jsonpath={.items[*].metadata.name}',
      ]);
      const names = out.trim().split(/\s+/).filter(Boolean);
      return names.length === 1 ? names[0] : undefined;
    },
    120_000,
  );
}

/** The namespace, ServiceAccount and pod that read the agent's HTTPS endpoints as a scraper does. */
const SCRAPER = { ns: 'scrape', name: 'scraper' };

/**
 * GETs argv[1] over HTTPS (the agent's self-signed certificate) with this
 * pod's ServiceAccount token when argv[2] is `token`; prints the body, or
 * `HTTP <status>` on stderr and exits 2.
 */
const FETCH = [
  'import ssl, sys, urllib.request, urllib.error',
  'headers = {}',
  'if sys.argv[2] == "token":',
  '    headers["Authorization"] = "Bearer " + open("/var/run/secrets/kubernetes.io/serviceaccount/token").read().strip()',
  'try:',
  '    sys.stdout.write(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers=headers), context=ssl._create_unverified_context(), timeout=120).read().decode())',
  'except urllib.error.HTTPError as e:',
  '    sys.stderr.write(f"HTTP {e.code}\\n")',
  '    sys.exit(2)',
].join('\n');

/**
 * A path of the agent's HTTPS server (/metrics, /api/v1/...) as a scraper on
 * the pod network reads it (metricsAuth kubernetes, the chart's default): from
 * the scraper pod, with its token (`anonymous`: without one).
 */
async function agentGet(
  node: TestNode,
  path: string,
  as: 'token' | 'anonymous' = 'token',
): Promise<{ code: number; body: string; stderr: string }> {
  const pod = await podBySelector(node, SYSTEM_NS, 'app.kubernetes.io/component=agent');
  const ip = (await podJson(node, SYSTEM_NS, pod)).status.podIP;
  const url = `https://${ip.includes(':') ? `[${ip}]` : ip}:9471${path}`;
  const r = await node.kubectl(['exec', SCRAPER.name, '-n', SCRAPER.ns, '--', 'python3', '-c', FETCH, url, as]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

/** The body of agentGet with the scraper's token; throws on any failure, saying what became of the agent. */
async function agentRead(node: TestNode, path: string): Promise<string> {
  const r = await agentGet(node, path);
  if (r.code !== 0)
    throw new Error(`GET ${path} from the agent: exit ${r.code}: ${r.stderr}\n${await agentState(node)}`);
  return r.body;
}

/** The agent container's restarts and last termination, and the end of its previous run's log (why it is not answering). */
async function agentState(node: TestNode): Promise<string> {
  const selector = ['-n', SYSTEM_NS, '-l', 'app.kubernetes.io/component=agent'];
  const state = await node.kubectl([
    'get',
    'pods',
    ...selector,
    '-o',
    'jsonpath={range .items[*]}{.metadata.name}: restarts {.status.containerStatuses[0].restartCount}, last {.status.containerStatuses[0].lastState}{"\\n"}{end}',
  ]);
  const previous = await node.kubectl(['logs', ...selector, '--previous', '--tail', '30']);
  return `agent pods: ${state.stdout.trim() || state.stderr.trim()}\nits previous run's log: ${previous.stdout.trim() || previous.stderr.trim()}`;
}

const agentMetrics = (node: TestNode) => agentRead(node, '/metrics');

/** The kubelet's own /metrics/cadvisor, through the apiserver's node proxy. */
async function cadvisorMetrics(node: TestNode): Promise<string> {
  return node.must(['get', '--raw', `/api/v1/nodes/${node.name}/proxy/metrics/cadvisor`]);
}

/** The status of a NamespaceUsage (the operator's cluster-wide totals). */
async function namespaceUsage(node: TestNode, ns: string): Promise<Record<string, unknown> | undefined> {
  const r = await node.kubectl(['get', 'namespaceusage', ns, '-o', 'jsonpath={.status}']);
  return r.code === 0 && r.stdout.trim() !== '' ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
}

type UsageKind = 'namespaceusage' | 'workloadusage' | 'nodeusage';

/** The status of a usage object (NamespaceUsage, WorkloadUsage, NodeUsage), if there is one. */
async function usageStatus(node: TestNode, kind: UsageKind, name: string): Promise<UsageJson | undefined> {
  const r = await node.kubectl(['get', kind, name, '-o', 'jsonpath={.status}']);
  return r.code === 0 && r.stdout.trim() !== '' ? (JSON.parse(r.stdout) as UsageJson) : undefined;
}

/** What the tests read of a usage object's status: its counts as strings (common/contract/usage.ts). */
type UsageJson = Record<string, unknown> & {
  checkpoint?: (Record<string, string> & { uid: string })[];
  retiring?: (Record<string, string> & { uid: string })[];
  retired?: Record<string, string>;
};

/** The count fields of the contract (annotations, usage status, NodeUsage entries), absent = 0. */
const COUNT_FIELDS = [
  'ingressBytes',
  'egressBytes',
  'ingressPackets',
  'egressPackets',
  'egressCrossZoneBytes',
  'egressCrossRegionBytes',
  'egressExternalBytes',
] as const;
const countsOfAnnotations = (a: Record<string, string>) =>
  Object.fromEntries(COUNT_FIELDS.map((f) => [f, a[ANNOTATIONS[f]] ?? '0']));
const countsOfStatus = (s: Record<string, unknown> | undefined) =>
  Object.fromEntries(COUNT_FIELDS.map((f) => [f, typeof s?.[f] === 'string' ? s[f] : '0']));

/** A NodeUsage's totals are its live pods' checkpointed counts plus its retired ones, field by field (operator/ledger/ledger.ts). */
function assertNodeUsageSums(u: UsageJson): void {
  for (const f of COUNT_FIELDS) {
    const parts = [...(u.checkpoint ?? []), u.retired ?? {}].reduce((n, e) => n + BigInt(e[f] ?? '0'), 0n);
    assert.equal(countsOfStatus(u)[f], String(parts), `NodeUsage ${f}: the checkpoint and retired add up to the total`);
  }
}

/** Waits until what `read` gives is the same twice, `gapMs` apart (counters settled), and returns the last read. */
async function settled<T>(what: string, gapMs: number, read: () => Promise<T>): Promise<T> {
  let last = JSON.stringify(await read());
  return waitFor(
    `${what} to settle`,
    async () => {
      await sleep(gapMs);
      const v = await read();
      const now = JSON.stringify(v);
      const same = now === last;
      last = now;
      return same ? v : undefined;
    },
    600_000,
  );
}

/** A python3 program for the workload image, run as `python3 -c`. */
function py(lines: string[]): string[] {
  return ['python3', '-u', '-c', lines.join('\n')];
}

/** The receiver's first log line, once its socket is bound. */
const RECEIVER_BOUND = 'bound';

/** Waits until no IPv6 address of this pod is tentative (DAD done), so sends and receives succeed. */
const WAIT_DAD = [
  'import time',
  'while any(int(l.split()[4], 16) & 0x40 for l in open("/proc/net/if_inet6")): time.sleep(0.2)',
];

function receiverPod(ns: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'receiver', namespace: ns, labels: { app: 'receiver' } },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'udp',
          image: WORKLOAD_IMAGE,
          imagePullPolicy: 'Never',
          // One dual-stack socket; it counts what it received and says so on stdout.
          command: py([
            ...WAIT_DAD,
            'import socket',
            's = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)',
            's.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)',
            `s.bind(("::", ${UDP_PORT}))`,
            // No readiness probe: a TCP probe would be traffic of this pod, an exec probe costs a runc exec each time under TCG.
            `print("${RECEIVER_BOUND}", flush=True)`,
            'n = 0',
            'while True:',
            '    d, a = s.recvfrom(65536)',
            '    n += 1',
            '    print("received", n, len(d), a[0], flush=True)',
          ]),
        },
      ],
    },
  };
}

/** A container command that sends `count` datagrams of `size` bytes to dst, then sleeps. */
function udpSender(family: 'AF_INET' | 'AF_INET6', dst: string, count: number, size: number): string[] {
  return py([
    ...WAIT_DAD,
    'import socket, time',
    `s = socket.socket(socket.${family}, socket.SOCK_DGRAM)`,
    'sent = 0',
    `while sent < ${count}:`,
    '    try:',
    `        s.sendto(b"x" * ${size}, ("${dst}", ${UDP_PORT}))`,
    '        sent += 1',
    '        time.sleep(0.01)',
    '    except OSError as e:',
    '        print("retrying:", e, flush=True)',
    '        time.sleep(0.2)',
    'print("sent", sent, flush=True)',
    'while True: time.sleep(3600)',
  ]);
}

/** Two containers: one sends `count` datagrams of `size` bytes over IPv4, the other over IPv6. */
function senderPod(ns: string, dst4: string, dst6: string, count: number, size: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'sender', namespace: ns, labels: { app: 'sender' } },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'v4',
          image: WORKLOAD_IMAGE,
          imagePullPolicy: 'Never',
          command: udpSender('AF_INET', dst4, count, size),
        },
        {
          name: 'v6',
          image: WORKLOAD_IMAGE,
          imagePullPolicy: 'Never',
          command: udpSender('AF_INET6', dst6, count, size),
        },
      ],
    },
  };
}

/** A pod of the workload image running `command`; hostNetwork on request; `spec` and `container` add fields. */
function workloadPod(
  ns: string,
  name: string,
  command: string[],
  opts: { hostNetwork?: boolean; spec?: object; container?: object } = {},
): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: name } },
    spec: {
      terminationGracePeriodSeconds: 1,
      ...(opts.hostNetwork ? { hostNetwork: true } : {}),
      ...opts.spec,
      containers: [{ name: 'main', image: WORKLOAD_IMAGE, imagePullPolicy: 'Never', command, ...opts.container }],
    },
  };
}

/** A shell loop that waits for a file to appear (the test makes it with kubectl exec). */
const waitFile = (f: string) => `while [ ! -e ${f} ]; do sleep 0.5; done`;

// Part of `make test` (its VM lane, beside the host's files): one VM boot and
// checks 1-8, after building what this machine has not cached (the node's
// tools, root filesystem and images). PODMETER_TEST_NODE=full adds 5c (a
// reboot of the VM: 4-7 minutes under TCG); =off skips the VM test.
const MODE = process.env.PODMETER_TEST_NODE ?? 'default';
if (!['default', 'full', 'off'].includes(MODE))
  throw new Error(`PODMETER_TEST_NODE=${MODE}: expected full, off or unset`);
const SKIP = MODE === 'off' ? 'PODMETER_TEST_NODE=off' : false;
const FULL_ONLY = MODE === 'full' ? {} : { skip: 'PODMETER_TEST_NODE=full runs it' };
/**
 * Check 9 in each of kube-proxy's modes the run has: the node's own (test/node/up's PODMETER_NODE_KUBE_PROXY_MODE,
 * iptables by default) in `make test`, then the other two (nftables, IPVS) in the full run.
 */
const NODE_KUBE_PROXY_MODE = process.env.PODMETER_NODE_KUBE_PROXY_MODE ?? 'iptables';
const KUBE_PROXY_MODES = [
  NODE_KUBE_PROXY_MODE,
  ...(MODE === 'full' ? ['iptables', 'nftables', 'ipvs'].filter((m) => m !== NODE_KUBE_PROXY_MODE) : []),
];
/**
 * Check 9: where a pod's bytes to and from a ClusterIP Service are expected. `backend` (the default): in the
 * class of the endpoint that served them (`node`, `cross-zone`), nothing in `service` (issue 26). `service`:
 * all of them in `service`, as podmeter counted them before it resolved Services (kube-proxy's DNAT happens in
 * the node's network namespace; the pod's packets carry the ClusterIP).
 */
const SERVICE_CLASSES = process.env.PODMETER_TEST_SERVICE_CLASSES ?? 'backend';
if (!['backend', 'service'].includes(SERVICE_CLASSES))
  throw new Error(`PODMETER_TEST_SERVICE_CLASSES=${SERVICE_CLASSES}: expected backend or service`);
/** Check 9's bound for each kube-proxy mode. */
const CHECK_9_MODE_MS = 35 * 60_000;
/** How long counts must stay as they are once they read what a check expects: three of the agent's 2 s intervals. */
const STAY_MS = 6_000;

test(
  'podmeter on a real node: helm install, exact per-pod bytes, cAdvisor, deletion, map attribution',
  { skip: SKIP, timeout: 90 * 60_000 + (KUBE_PROXY_MODES.length - 1) * CHECK_9_MODE_MS },
  async (t) => {
    const node = await startNode();
    t.after(() => node.down());
    // Each note says when (seconds since the node was up): where a slow check spends its time.
    const upAt = Date.now();
    const note = (m: string) => t.diagnostic(`${Math.round((Date.now() - upAt) / 1000)} s: ${m}`);
    const show = async (): Promise<string> =>
      (await node.kubectl(['get', 'pods', '-A', '-o', 'wide'])).stdout +
      (await node.kubectl(['get', 'events', '-A', '--sort-by=.lastTimestamp'])).stdout
        .split('\n')
        .slice(-25)
        .join('\n');
    const create = (o: object) => node.must(['create', '-f', '-'], { input: JSON.stringify(o) });
    const ready = async (ns: string, pod: string) => {
      const r = await node.kubectl(['wait', '--for=condition=Ready', `pod/${pod}`, '-n', ns, '--timeout=600s']);
      assert.equal(r.code, 0, `pod ${ns}/${pod} not Ready: ${r.stderr}\n${await show()}`);
    };
    /** Waits for the annotations to read `expected`, then reads them again STAY_MS later: a later over-count fails. */
    const annotationsReach = async (ns: string, pod: string, expected: Record<string, string>) => {
      await waitFor(
        `the annotations of ${ns}/${pod} to read ${JSON.stringify(expected)}`,
        async () => {
          const a = await podAnnotations(node, ns, pod);
          return Object.entries(expected).every(([k, v]) => a[k] === v) ? a : undefined;
        },
        600_000,
        async () => `annotations now: ${JSON.stringify(await podAnnotations(node, ns, pod))}\n${await show()}`,
      );
      await sleep(STAY_MS);
      const again = await podAnnotations(node, ns, pod);
      for (const [k, v] of Object.entries(expected))
        assert.equal(again[k], v, `${ns}/${pod} ${k}, ${STAY_MS} ms later`);
      return again;
    };
    /** The receiver is Running and its socket bound (its log says so). */
    const receiverBound = async (ns: string) => {
      await ready(ns, 'receiver');
      await waitFor(
        'the receiver to bind its socket',
        async () =>
          (await node.kubectl(['logs', 'receiver', '-n', ns])).stdout.split('\n').includes(RECEIVER_BOUND)
            ? true
            : undefined,
        300_000,
      );
    };
    const podIPs = async (ns: string, pod: string) => {
      const ips = (await podJson(node, ns, pod)).status.podIPs ?? [];
      return { v4: ips.find((x) => x.ip.includes('.'))?.ip, v6: ips.find((x) => x.ip.includes(':'))?.ip };
    };

    await t.test(
      '1. the agent DaemonSet and the operator Deployment become Ready; /metrics answers only a reader',
      async () => {
        // The scraper: a ServiceAccount the chart's api-reader role is bound to (readers.api), and a pod with its token.
        await node.must(['create', 'namespace', SCRAPER.ns]);
        await node.must(['create', 'serviceaccount', SCRAPER.name, '-n', SCRAPER.ns]);
        await create(
          workloadPod(SCRAPER.ns, SCRAPER.name, ['sleep', 'infinity'], { spec: { serviceAccountName: SCRAPER.name } }),
        );
        const r = await node.helm([
          'install',
          RELEASE,
          CHART,
          '--namespace',
          SYSTEM_NS,
          '--create-namespace',
          '--set',
          'image.repository=localhost/podmeter',
          '--set',
          'image.tag=test',
          '--set',
          'image.pullPolicy=Never',
          // Fast reads and annotation writes (the checks wait for final values); one operator replica on one node.
          '--set',
          'agent.interval=2',
          '--set',
          'agent.annotateInterval=2',
          '--set',
          'operator.replicas=1',
          // metricsAuth stays the chart's default (kubernetes: HTTPS probes, tokens reviewed by the apiserver).
          '--set',
          `readers.api[0].name=${SCRAPER.name}`,
          '--set',
          `readers.api[0].namespace=${SCRAPER.ns}`,
          // As a kube-prometheus-stack user turns monitoring on: the ServiceMonitor (not also the PodMonitor:
          // one or the other) and the rules, labelled for its Prometheus; the dashboard for its Grafana sidecar.
          '--set',
          'monitoring.serviceMonitor.enabled=true',
          '--set',
          `monitoring.serviceMonitor.labels.release=${KPS_RELEASE}`,
          '--set',
          'monitoring.prometheusRule.enabled=true',
          '--set',
          `monitoring.prometheusRule.labels.release=${KPS_RELEASE}`,
          '--set',
          'monitoring.grafanaDashboard.enabled=true',
        ]);
        assert.equal(r.code, 0, `helm install: ${r.stderr}`);
        for (const kind of ['daemonset', 'deployment']) {
          const names = (await node.must(['get', kind, '-n', SYSTEM_NS, '-o', 'name'])).trim().split('\n');
          assert.ok(names.length >= 1 && names[0], `no ${kind} in ${SYSTEM_NS}`);
          for (const name of names) {
            const s = await node.kubectl(['rollout', 'status', name, '-n', SYSTEM_NS, '--timeout=900s']);
            assert.equal(s.code, 0, `${name} did not become Ready: ${s.stderr}\n${await show()}`);
          }
        }
        await ready(SCRAPER.ns, SCRAPER.name);
        const anonymous = await agentGet(node, '/metrics', 'anonymous');
        assert.equal(anonymous.code, 2, `/metrics without a token: ${anonymous.stderr}`);
        assert.match(anonymous.stderr, /HTTP 401/);
        // The agent counts exactly the pods of this node (the chart's, the monitoring stack's, the scraper): one
        // attached cgroup each, and a series for each pod's uid, no more and no fewer.
        const nodePods = async () =>
          (
            JSON.parse(
              await node.must(['get', 'pods', '-A', '--field-selector', `spec.nodeName=${node.name}`, '-o', 'json']),
            ) as { items: { metadata: { uid: string; namespace: string; name: string }; status: { phase: string } }[] }
          ).items;
        const counted = async () => {
          const m = await agentMetrics(node);
          return {
            attached: sample(m, 'podmeter_attached_cgroups', {}),
            uids: samples(m, 'podmeter_pod_network_bytes_total')
              .filter((x) => x.labels.direction === 'egress')
              .map((x) => x.labels.uid)
              .sort(),
          };
        };
        await waitFor(
          'the agent to count exactly the pods of this node, all Running',
          async () => {
            const pods = await nodePods();
            const want = pods.map((p) => p.metadata.uid).sort();
            const got = await counted();
            return pods.every((p) => p.status.phase === 'Running') &&
              got.attached === want.length &&
              JSON.stringify(got.uids) === JSON.stringify(want)
              ? true
              : undefined;
          },
          600_000,
          async () =>
            `pods: ${JSON.stringify((await nodePods()).map((p) => [p.metadata.namespace, p.metadata.name, p.metadata.uid, p.status.phase]))}; agent: ${JSON.stringify(await counted())}`,
        );
        note(`attached cgroups: ${(await counted()).attached} (the node's pods)`);
      },
    );

    // IPv4: 20 (IP) + 8 (UDP) + payload; IPv6: 40 + 8 + payload.
    const udp = { ns: 'traffic', count: 100, size: 1000 };
    const udpBytes = udp.count * (28 + udp.size) + udp.count * (48 + udp.size);
    let receiver4 = '';
    await t.test(
      '2. UDP over IPv4 and IPv6 between two pods: exact bytes in the annotations and /metrics',
      async () => {
        const { ns, count, size } = udp;
        await node.must(['create', 'namespace', ns]);
        await create(receiverPod(ns));
        await receiverBound(ns);
        const { v4, v6 } = await podIPs(ns, 'receiver');
        assert.ok(
          v4 && v6,
          `the receiver has no IPv4 and IPv6 address: ${JSON.stringify(await podIPs(ns, 'receiver'))}`,
        );
        receiver4 = v4;
        await create(senderPod(ns, v4, v6, count, size));
        const packets = 2 * count;
        await annotationsReach(ns, 'sender', {
          'podmeter.io/egress-bytes': String(udpBytes),
          'podmeter.io/egress-packets': String(packets),
        });
        await annotationsReach(ns, 'receiver', {
          'podmeter.io/ingress-bytes': String(udpBytes),
          'podmeter.io/ingress-packets': String(packets),
        });
        const metrics = await agentMetrics(node);
        const m = (pod: string, metric: string, direction: string) =>
          sample(metrics, metric, { namespace: ns, pod, direction });
        assert.equal(m('sender', 'podmeter_pod_network_bytes_total', 'egress'), udpBytes);
        assert.equal(m('sender', 'podmeter_pod_network_packets_total', 'egress'), packets);
        assert.equal(m('receiver', 'podmeter_pod_network_bytes_total', 'ingress'), udpBytes);
        assert.equal(m('receiver', 'podmeter_pod_network_packets_total', 'ingress'), packets);
        // Where the bytes went: to a pod of this node (its Node's podCIDRs), so class `node`, not a billed class.
        assert.equal(
          sample(metrics, 'podmeter_pod_network_peer_bytes_total', {
            namespace: ns,
            pod: 'sender',
            direction: 'egress',
            peer: 'node',
          }),
          udpBytes,
        );
        const classes = Object.keys(await podAnnotations(node, ns, 'sender')).filter((k) =>
          /^podmeter\.io\/egress-(external|cross-zone|cross-region)-bytes$/.test(k),
        );
        assert.deepEqual(classes, [], 'pod-to-pod traffic on one node has no billed-class annotation');
        // The receiver's own count (its log, through kubectl logs) agrees: nothing was lost on the way.
        const log = await node.must(['logs', 'receiver', '-n', ns]);
        assert.match(log, new RegExp(`^received ${packets} `, 'm'));
      },
    );

    await t.test('3. a hostNetwork pod: its traffic counted once, for that pod only', async () => {
      const ns = 'hostnet';
      const count = 50;
      const size = 500;
      await node.must(['create', 'namespace', ns]);
      await create(workloadPod(ns, 'idle', ['sleep', 'infinity'], { hostNetwork: true }));
      await ready(ns, 'idle');
      await create(workloadPod(ns, 'sender', udpSender('AF_INET', receiver4, count, size), { hostNetwork: true }));
      const bytes = count * (28 + size);
      await annotationsReach(ns, 'sender', {
        'podmeter.io/egress-bytes': String(bytes),
        'podmeter.io/egress-packets': String(count),
      });
      await annotationsReach(udp.ns, 'receiver', { 'podmeter.io/ingress-bytes': String(udpBytes + bytes) });
      const metrics = await agentMetrics(node);
      assert.equal(
        sample(metrics, 'podmeter_pod_network_bytes_total', { namespace: ns, pod: 'sender', direction: 'egress' }),
        bytes,
      );
      // The idle pod is counted too: its series are there, at 0.
      for (const direction of ['ingress', 'egress']) {
        for (const unit of ['bytes', 'packets']) {
          const v = sampleText(metrics, `podmeter_pod_network_${unit}_total`, {
            namespace: ns,
            pod: 'idle',
            direction,
          });
          assert.equal(v, '0', `the idle hostNetwork pod's ${direction} ${unit} series`);
        }
      }
      // What cAdvisor says for the same two pods (the node's interfaces, for each: google/cadvisor#2615).
      const cadvisor = await cadvisorMetrics(node);
      for (const pod of ['sender', 'idle']) {
        const tx = cadvisor
          .split('\n')
          .filter(
            (l) =>
              l.startsWith('container_network_transmit_bytes_total{') &&
              l.includes(`pod="${pod}"`) &&
              l.includes(`namespace="${ns}"`),
          );
        note(`cAdvisor transmit bytes of hostNetwork pod ${pod}: ${tx.length ? tx.join(' | ') : '(none)'}`);
      }
    });

    await t.test(
      '4. TCP bulk: the pod eth0 tx bytes of the kubelet /metrics/cadvisor = podmeter egress bytes + 14 x packets + neighbour frames',
      async () => {
        const ns = 'tcp';
        await node.must(['create', 'namespace', ns]);
        // No readiness probe: the kubelet's TCP probe would connect to iperf3's control port and break its runs (the client retries until the server listens).
        await create(workloadPod(ns, 'server', ['iperf3', '-s', '-p', '5201']));
        // Both pods start at once (each takes 30-50 s under TCG); the client learns the server's address
        // from /tmp/server. A short first run resolves ARP before the measured window; the bulk run waits for /tmp/go.
        await create(
          workloadPod(ns, 'client', [
            'sh',
            '-c',
            `${waitFile('/tmp/server')}; s=$(cat /tmp/server); until iperf3 -c $s -p 5201 -n 64K >/dev/null; do sleep 1; done; echo warm; ${waitFile('/tmp/go')}; ` +
              'iperf3 -c $s -p 5201 -n 20M -J >/tmp/bulk.json && echo done; sleep infinity',
          ]),
        );
        await ready(ns, 'server');
        const { v4 } = await podIPs(ns, 'server');
        assert.ok(v4);
        await ready(ns, 'client');
        await node.must(['exec', 'client', '-n', ns, '--', 'sh', '-c', `echo ${v4} >/tmp/s && mv /tmp/s /tmp/server`]);
        /** When the client logged `line` (containerd's timestamp: the node's clock, ms). */
        const loggedAt = (line: string) =>
          waitFor(
            `the client to log "${line}"`,
            async () => {
              const hit = (await node.kubectl(['logs', 'client', '-n', ns, '--timestamps'])).stdout
                .split('\n')
                .find((l) => l.endsWith(` ${line}`));
              return hit === undefined ? undefined : Date.parse(hit.slice(0, hit.indexOf(' ')));
            },
            900_000,
          );
        // Both sides' counters once the pod has stopped sending. The agent reads the kernel at each scrape;
        // the kubelet's cAdvisor reads eth0 every 10-15 s and stamps each sample with when it did (the
        // node's clock), so a sample stamped after the client's log line has all the pod sent.
        const eth0 = { namespace: ns, pod: 'client', interface: 'eth0' };
        const counters = async (since: number) => {
          const tx = await waitFor(
            'a /metrics/cadvisor read of the client pod eth0 after it went quiet',
            async () => {
              const text = await cadvisorMetrics(node);
              const at = sampleAt(text, 'container_network_transmit_bytes_total', eth0)?.timestampMs;
              return at !== undefined && at > since ? text : undefined;
            },
            600_000,
            async () =>
              `its network series now:\n${
                (await cadvisorMetrics(node))
                  .split('\n')
                  .filter((l) => l.startsWith('container_network_') && l.includes('pod="client"'))
                  .join('\n') || '(none)'
              }`,
          );
          const m = await agentMetrics(node);
          const p = (metric: string, direction: string) =>
            sample(m, metric, { namespace: ns, pod: 'client', direction }) ?? 0;
          const c = (metric: string) => sample(tx, metric, eth0) ?? 0;
          return {
            egressBytes: p('podmeter_pod_network_bytes_total', 'egress'),
            egressPackets: p('podmeter_pod_network_packets_total', 'egress'),
            ingressBytes: p('podmeter_pod_network_bytes_total', 'ingress'),
            ingressPackets: p('podmeter_pod_network_packets_total', 'ingress'),
            txBytes: c('container_network_transmit_bytes_total'),
            txPackets: c('container_network_transmit_packets_total'),
            rxBytes: c('container_network_receive_bytes_total'),
            rxPackets: c('container_network_receive_packets_total'),
          };
        };
        const before = await counters(await loggedAt('warm'));
        await node.must(['exec', 'client', '-n', ns, '--', 'touch', '/tmp/go']);
        const after = await counters(await loggedAt('done'));
        const d = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]]));
        note(`TCP bulk, deltas: ${JSON.stringify(d)}`);
        // iperf3's server stops reading when the client ends the test: what was still in flight (1.6 MB of the
        // 20 MiB in one run, with the guest busy) never arrives, and the client's kernel drops it on the reset.
        // So the bound is what the server received, from the client's own report (its results exchange).
        const bulk = JSON.parse(await node.must(['exec', 'client', '-n', ns, '--', 'cat', '/tmp/bulk.json'])) as {
          end: { sum_sent: { bytes: number }; sum_received: { bytes: number } };
        };
        const received = bulk.end.sum_received.bytes;
        note(`iperf3: sent ${bulk.end.sum_sent.bytes} B into its socket, the server received ${received} B`);
        assert.ok(received > 1024 * 1024, `the bulk run delivered only ${received} bytes`);
        assert.ok(
          d.egressBytes! >= received,
          `podmeter counted ${d.egressBytes} egress bytes; the server received ${received} bytes of payload`,
        );
        // Every frame the pod's sockets sent is on eth0 with its 14-byte Ethernet header (both count GSO
        // super-packets, not wire segments). eth0 also carries the kernel's own neighbour frames, which no
        // socket sends and podmeter does not count: ARP (42 bytes), IPv6 router solicitations (70: the pod's
        // kernel repeats them with backoff as no router answers; the one frame of 70 B in most runs, its
        // Icmp6OutRouterSolicits counted 7 by then), neighbour solicitations (78-86) and MLD reports (90).
        // They are what remains, frame by frame.
        // The same holds the other way: eth0 rx bytes = podmeter ingress bytes + 14 x packets + neighbour frames.
        for (const [dir, frames, bytes] of [
          ['tx', d.txPackets! - d.egressPackets!, d.txBytes! - (d.egressBytes! + 14 * d.egressPackets!)],
          ['rx', d.rxPackets! - d.ingressPackets!, d.rxBytes! - (d.ingressBytes! + 14 * d.ingressPackets!)],
        ] as const) {
          note(`eth0 ${dir} = podmeter + 14 x packets + ${frames} neighbour frames of ${bytes} bytes`);
          assertNeighbourFrames(`eth0 ${dir}`, frames, bytes, d, NEIGHBOUR_FRAMES_MAX[dir]);
        }
      },
    );

    await t.test(
      "7. Prometheus through the Prometheus Operator: every target of the chart's monitors up, its rules evaluated, each test pod's series = its annotations",
      async () => {
        const prom = await node.prometheus();
        note(`Prometheus: ${prom}`);
        // The chart's ServiceMonitor's targets: one per agent and operator pod, each scraped over HTTPS with the
        // chart's scraper token (metricsAuth kubernetes) and up.
        const pods = (
          await node.must([
            'get',
            'pods',
            '-n',
            SYSTEM_NS,
            '-l',
            'app.kubernetes.io/component in (agent,operator)',
            '-o',
            'jsonpath={.items[*].metadata.name}',
          ])
        )
          .trim()
          .split(/\s+/)
          .sort();
        assert.equal(pods.length, 2, `agent and operator pods: ${pods.join(' ')}`);
        const pool = `serviceMonitor/${SYSTEM_NS}/${RELEASE}/0`;
        const targets = await waitFor(
          `Prometheus to scrape ${pods.join(' and ')} (${pool}), all up`,
          async () => {
            const ts = (await activeTargets(prom)).filter((x) => x.scrapePool === pool);
            const named = ts.map((x) => x.labels.pod ?? x.discoveredLabels.__meta_kubernetes_pod_name).sort();
            return JSON.stringify(named) === JSON.stringify(pods) && ts.every((x) => x.health === 'up')
              ? ts
              : undefined;
          },
          600_000,
          async () =>
            JSON.stringify(
              (await activeTargets(prom)).map((x) => ({
                pool: x.scrapePool,
                url: x.scrapeUrl,
                health: x.health,
                error: x.lastError,
              })),
            ),
        );
        for (const x of targets)
          assert.match(x.scrapeUrl, /^https:/, `${x.scrapeUrl}: metricsAuth kubernetes serves HTTPS`);
        const up = await instantQuery(prom, `up{job=~"${RELEASE}-(agent|operator)"}`);
        assert.deepEqual(up.map((x) => [x.metric.job, x.value[1]]).sort(), [
          [`${RELEASE}-agent`, '1'],
          [`${RELEASE}-operator`, '1'],
        ]);

        // The chart's PrometheusRule, as the operator hands it to Prometheus: every group and rule loaded, each
        // evaluated on these series without an error.
        const ruleObjects = (
          JSON.parse(await node.must(['get', 'prometheusrules', '-n', SYSTEM_NS, '-o', 'json'])) as {
            items: { spec: { groups: { name: string; rules: unknown[] }[] } }[];
          }
        ).items;
        const wanted = ruleObjects.flatMap((r) => r.spec.groups.map((g) => `${g.name}:${g.rules.length}`)).sort();
        assert.ok(wanted.length >= 1, 'the chart made no PrometheusRule group');
        await waitFor(
          `Prometheus to load and evaluate the rule groups ${wanted.join(', ')}`,
          async () => {
            const groups = (await ruleGroups(prom)).filter((g) => g.file.includes(`/${SYSTEM_NS}-${RELEASE}-`));
            const loaded = groups.map((g) => `${g.name}:${g.rules.length}`).sort();
            return JSON.stringify(loaded) === JSON.stringify(wanted) &&
              groups.every((g) => g.rules.every((r) => r.health === 'ok'))
              ? true
              : undefined;
          },
          300_000,
          async () =>
            JSON.stringify(
              (await ruleGroups(prom)).map((g) => ({
                file: g.file,
                name: g.name,
                rules: g.rules.map((r) => [r.name, r.health, r.lastError]),
              })),
            ),
        );

        // The test pods' traffic stopped with checks 2-4; their annotations hold the final counts.
        const pairs = [
          [udp.ns, 'sender'],
          [udp.ns, 'receiver'],
          ['hostnet', 'sender'],
          ['hostnet', 'idle'],
          ['tcp', 'client'],
          ['tcp', 'server'],
        ] as const;
        const annotations = await settled("the test pods' annotations", 5_000, async () =>
          Promise.all(pairs.map(async ([ns, pod]) => podAnnotations(node, ns, pod))),
        );
        // Prometheus's clock (the node's), now: every series must have a sample scraped after this.
        const stopped = await prometheusNow(prom);
        const namespaces = [...new Set(pairs.map(([ns]) => ns))].join('|');
        const at = await waitFor(
          "a scrape of every test pod's series after their traffic stopped",
          async () => {
            const now = await prometheusNow(prom);
            const oldest = await instantQuery(
              prom,
              `min(timestamp(podmeter_pod_network_bytes_total{job="${RELEASE}-agent",namespace=~"${namespaces}"}))`,
              now,
            );
            return oldest.length === 1 && Number(oldest[0]!.value[1]) > stopped ? now : undefined;
          },
          300_000,
        );
        note(`traffic stopped by ${stopped}; series read at ${at}`);
        for (const [i, [ns, pod]] of pairs.entries()) {
          for (const direction of ['ingress', 'egress']) {
            for (const unit of ['bytes', 'packets']) {
              const series = await instantQuery(
                prom,
                `podmeter_pod_network_${unit}_total{job="${RELEASE}-agent",namespace="${ns}",pod="${pod}",direction="${direction}"}`,
                at,
              );
              const annotation = annotations[i]![`podmeter.io/${direction}-${unit}`];
              const what = `${ns}/${pod} ${direction} ${unit}: Prometheus ${JSON.stringify(series.map((x) => x.value[1]))}, annotation ${annotation}`;
              note(what);
              if (annotation === undefined) {
                // No annotation: nothing counted, so no series or a zero.
                assert.ok(series.length === 0 || (series.length === 1 && series[0]!.value[1] === '0'), what);
              } else {
                assert.equal(series.length, 1, what);
                assert.equal(series[0]!.value[1], annotation, what);
              }
            }
          }
        }
        // Prometheus read real traffic, not only zeros.
        assert.equal(annotations[0]!['podmeter.io/egress-bytes'], String(udpBytes));
        // The chart's other monitor, the PodMonitor, instead (one or the other, as values.yaml says): the operator
        // moves Prometheus to it, and it finds the same two pods, all up.
        const upgrade = await node.helm([
          'upgrade',
          RELEASE,
          CHART,
          '--namespace',
          SYSTEM_NS,
          '--reuse-values',
          '--set',
          'monitoring.serviceMonitor.enabled=false',
          '--set',
          'monitoring.podMonitor.enabled=true',
          '--set',
          `monitoring.podMonitor.labels.release=${KPS_RELEASE}`,
        ]);
        assert.equal(upgrade.code, 0, `helm upgrade to the PodMonitor: ${upgrade.stderr}`);
        const podPool = `podMonitor/${SYSTEM_NS}/${RELEASE}/0`;
        await waitFor(
          `Prometheus to scrape ${pods.join(' and ')} through ${podPool} only, all up`,
          async () => {
            const all = await activeTargets(prom);
            const ts = all.filter((x) => x.scrapePool === podPool);
            const named = ts.map((x) => x.labels.pod).sort();
            const jobs = ts.map((x) => x.labels.job).sort();
            return JSON.stringify(named) === JSON.stringify(pods) &&
              JSON.stringify(jobs) === JSON.stringify([`${RELEASE}-agent`, `${RELEASE}-operator`]) &&
              ts.every((x) => x.health === 'up') &&
              !all.some((x) => x.scrapePool === pool)
              ? true
              : undefined;
          },
          600_000,
          async () =>
            JSON.stringify(
              (await activeTargets(prom)).map((x) => ({
                pool: x.scrapePool,
                url: x.scrapeUrl,
                health: x.health,
                error: x.lastError,
                labels: x.labels,
              })),
            ),
        );
        // What the monitoring stack costs the node (the budget of a warm run): CPU seconds so far of each pod (cAdvisor's pod-level cgroup).
        const cadvisor = await cadvisorMetrics(node);
        for (const [ns, selector] of [
          ['monitoring', 'app.kubernetes.io/name=prometheus'],
          [SYSTEM_NS, 'app.kubernetes.io/component=agent'],
        ] as const) {
          const pod = await podBySelector(node, ns, selector);
          note(
            `CPU seconds of ${ns}/${pod} so far: ${sample(cadvisor, 'container_cpu_usage_seconds_total', { namespace: ns, pod, container: '', image: '' })}`,
          );
        }
      },
    );

    await t.test('5a. deleting a pod keeps its bytes in its NamespaceUsage, WorkloadUsage and NodeUsage', async () => {
      const before = await settled('the NamespaceUsage of traffic', 5_000, () => namespaceUsage(node, udp.ns));
      assert.ok(before, 'no NamespaceUsage traffic');
      assert.equal(before.egressBytes, String(udpBytes));
      // The sender's own counts, exactly, in its WorkloadUsage (a bare pod: its own workload) and in its node's
      // NodeUsage (its checkpoint entry; the node's totals are its entries plus its retired pods).
      const sender = countsOfAnnotations(await podAnnotations(node, udp.ns, 'sender'));
      assert.equal(sender.egressBytes, String(udpBytes));
      const senderUid = (await podJson(node, udp.ns, 'sender')).metadata.uid;
      const workload = `${udp.ns}.pod.sender`;
      assert.deepEqual(countsOfStatus(await usageStatus(node, 'workloadusage', workload)), sender, workload);
      const nodeUsage = await usageStatus(node, 'nodeusage', node.name);
      assert.ok(nodeUsage, `no NodeUsage ${node.name}`);
      const entry = nodeUsage.checkpoint?.find((e) => e.uid === senderUid);
      assert.deepEqual(countsOfStatus(entry), sender, `the sender's checkpoint entry in NodeUsage ${node.name}`);
      assertNodeUsageSums(nodeUsage);
      await node.must(['delete', 'pod', 'sender', '-n', udp.ns, '--wait=true', '--timeout=300s']);
      const after = await waitFor(
        'the NamespaceUsage to retire the sender',
        async () => {
          const u = await namespaceUsage(node, udp.ns);
          return u && Number(u.retiredPods) >= 1 && u.pods === 1 ? u : undefined;
        },
        600_000,
        async () => JSON.stringify(await namespaceUsage(node, udp.ns)),
      );
      assert.equal(after.egressBytes, before.egressBytes);
      assert.equal(after.egressPackets, before.egressPackets);
      // Retired: the workload keeps its counts; the NodeUsage holds them as retired (its retiring entry).
      const retired = await waitFor(
        `WorkloadUsage ${workload} and NodeUsage ${node.name} to retire the sender`,
        async () => {
          const w = await usageStatus(node, 'workloadusage', workload);
          const n = await usageStatus(node, 'nodeusage', node.name);
          return w?.pods === 0 && n && !n.checkpoint?.some((e) => e.uid === senderUid) ? { w, n } : undefined;
        },
        600_000,
      );
      assert.deepEqual(countsOfStatus(retired.w), sender, workload);
      const retiring = retired.n.retiring?.find((e) => e.uid === senderUid);
      assert.deepEqual(countsOfStatus(retiring), sender, `the sender's retiring entry in NodeUsage ${node.name}`);
      assertNodeUsageSums(retired.n);
    });

    const burst = { ns: 'agent-restart', count: 40, size: 300, bytes: 40 * (28 + 300) };
    await t.test('5b. deleting the agent pod loses no byte sent while no agent ran', async () => {
      const { ns, count, size, bytes } = burst;
      await node.must(['create', 'namespace', ns]);
      // Sends `count` datagrams once /tmp/one exists and `count` more once /tmp/two exists.
      const send = (f: string) =>
        `${waitFile(f)}; python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b"x" * ${size}, ("${receiver4}", ${UDP_PORT})) for _ in range(${count})]'`;
      await create(workloadPod(ns, 'burst', ['sh', '-c', `${send('/tmp/one')}; ${send('/tmp/two')}; sleep infinity`]));
      await ready(ns, 'burst');
      await node.must(['exec', 'burst', '-n', ns, '--', 'touch', '/tmp/one']);
      await annotationsReach(ns, 'burst', { 'podmeter.io/egress-bytes': String(bytes) });
      const agent = await podBySelector(node, SYSTEM_NS, 'app.kubernetes.io/component=agent');
      await node.must(['delete', 'pod', agent, '-n', SYSTEM_NS, '--wait=true', '--timeout=300s']);
      await node.must(['exec', 'burst', '-n', ns, '--', 'touch', '/tmp/two']);
      const ds = (await node.must(['get', 'daemonset', '-n', SYSTEM_NS, '-o', 'name'])).trim();
      const s = await node.kubectl(['rollout', 'status', ds, '-n', SYSTEM_NS, '--timeout=900s']);
      assert.equal(s.code, 0, s.stderr);
      await annotationsReach(ns, 'burst', {
        'podmeter.io/egress-bytes': String(2 * bytes),
        'podmeter.io/egress-packets': String(2 * count),
      });
    });

    await t.test('6. BPF maps a pod creates are attributed to that pod from inside the agent container', async () => {
      const ns = 'maps';
      await node.must(['create', 'namespace', ns]);
      await node.must(['create', 'configmap', 'mapholder', '-n', ns, `--from-file=mapholder.py=${HOLDER_SCRIPT}`]);
      // `hold` keeps its maps while its stdin stays open: a pipe from a sleep that never ends.
      await create(
        workloadPod(
          ns,
          'holder',
          ['sh', '-c', 'sleep infinity | python3 /holder/mapholder.py hold --groups 1 --per 2'],
          {
            spec: { volumes: [{ name: 'holder', configMap: { name: 'mapholder' } }] },
            // SYS_RESOURCE: before 5.11 its maps are charged to RLIMIT_MEMLOCK, 64 KiB from the runtime on Debian 11.
            container: {
              securityContext: { capabilities: { add: ['BPF', 'SYS_RESOURCE'] } },
              volumeMounts: [{ name: 'holder', mountPath: '/holder' }],
            },
          },
        ),
      );
      await ready(ns, 'holder');
      const ids = await waitFor(
        'the holder to make its maps',
        async () => {
          const line = (await node.kubectl(['logs', 'holder', '-n', ns])).stdout
            .split('\n')
            .find((l) => l.includes('"ready"'));
          return line === undefined ? undefined : (JSON.parse(line) as { ids: number[] }).ids;
        },
        300_000,
      );
      const uid = (await podJson(node, ns, 'holder')).metadata.uid;
      const maps = async () => JSON.parse(await agentRead(node, '/api/v1/maps')) as MapsView;
      const view = await waitFor(
        `the agent to attribute maps ${ids.join(', ')} to pod ${uid}`,
        async () => {
          const v = await maps();
          return ids.every((id) => v.maps.find((m) => m.id === id)?.podUids.includes(uid)) ? v : undefined;
        },
        300_000,
        async () =>
          JSON.stringify((await maps()).processes.filter((p) => p.comm === 'sleep' || p.comm.startsWith('python'))),
      );
      const pod = view.byPod.find((p) => p.uid === uid);
      assert.equal(pod?.namespace, ns);
      assert.equal(pod?.pod, 'holder');
      const memlock = ids.reduce((sum, id) => sum + view.maps.find((m) => m.id === id)!.memlock, 0);
      assert.ok(pod.bytes >= memlock, `pod bytes ${pod.bytes} < the maps' memlock ${memlock}`);
      assert.equal(
        sample(await agentMetrics(node), 'podmeter_pod_bpf_map_memory_bytes', { namespace: ns, pod: 'holder' }),
        pod.bytes,
      );
    });

    // After 6: it stops the agent for a while and adds Nodes in other zones.
    await t.test(
      "8. live data: every alert fires in its condition and only then; recording rules, dashboard panels, OpenCost's queries",
      async () => {
        const prom = await node.prometheus();
        const checkStart = await prometheusNow(prom);
        const podmeterAlerts = async () =>
          (await activeAlerts(prom)).filter((a) => a.labels.alertname?.startsWith('Podmeter'));
        const alertList = async () =>
          JSON.stringify((await podmeterAlerts()).map((a) => ({ ...a.labels, state: a.state, value: a.value })));
        // Checks 1-6 (traffic, a deleted agent pod, a pod holding maps) with the chart's defaults: silent, no alert
        // firing. One may be pending: a scrape that timed out on a starved guest makes `up` 0 for a moment (the
        // alert's `for:` is there for that), as a clean clone's run saw once for PodmeterAgentDown.
        const firing = (await podmeterAlerts()).filter((a) => a.state === 'firing');
        assert.deepEqual(
          firing,
          [],
          `an alert fires with the chart's defaults on a healthy node: ${await alertList()}`,
        );
        const pending = await alertList();
        if (pending !== '[]') note(`pending, not firing, with the chart's defaults: ${pending}`);

        // This node in zone a of region r1; two Nodes without a kubelet give the other classes their CIDRs.
        const { zoneLabel, regionLabel, crossZone, crossRegion, external } = OTHER_ZONES;
        await node.must(['label', 'node', node.name, `${zoneLabel}=a`, `${regionLabel}=r1`, '--overwrite']);
        for (const [name, zone, region, cidr] of [
          ['zone-b', 'b', 'r1', '10.250.0.0/24'],
          ['region-2', 'c', 'r2', '10.251.0.0/24'],
        ] as const)
          await create({
            apiVersion: 'v1',
            kind: 'Node',
            metadata: { name, labels: { [zoneLabel]: zone, [regionLabel]: region } },
            spec: { podCIDRs: [cidr] },
          });

        // `for`s and thresholds the test reaches, by values only (the rules are the chart's); OpenCost's series.
        const upgrade = await node.helm([
          'upgrade',
          RELEASE,
          CHART,
          '--namespace',
          SYSTEM_NS,
          '--reuse-values',
          ...SHORT_FOR.flatMap((a) => ['--set', `monitoring.prometheusRule.for.${a}=0s`]),
          '--set',
          'monitoring.prometheusRule.crossZoneEgressBytesPerSecond=1',
          '--set',
          'monitoring.prometheusRule.bpfMapMemoryBytesThreshold=1',
          '--set',
          'monitoring.opencost.enabled=true',
          '--set',
          `monitoring.opencost.labels.release=${KPS_RELEASE}`,
        ]);
        assert.equal(upgrade.code, 0, `helm upgrade: ${upgrade.stderr}`);

        // The namespace the dashboard is read for: one pod sends to a pod of this node and to each billed class,
        // a trickle until the agent knows the new Nodes, then, on a sign, a burst of 200 datagrams to each.
        const ns = 'zones';
        const burst = { count: 200, bytes: 200 * (28 + 1000) };
        const dests = [receiver4, crossZone, crossRegion, external];
        const sendAll = (n: number) =>
          `for d in ${JSON.stringify(dests)}: [s.sendto(b"x" * 1000, (d, ${UDP_PORT})) for _ in range(${n})]`;
        await node.must(['create', 'namespace', ns]);
        await create(
          workloadPod(
            ns,
            'zones',
            py([
              'import os, socket, time',
              's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
              'while not os.path.exists("/tmp/trickled"):',
              `    ${sendAll(1)}`,
              '    time.sleep(1)',
              'while not os.path.exists("/tmp/burst"): time.sleep(0.2)',
              sendAll(burst.count),
              'while True: time.sleep(3600)',
            ]),
            { spec: { nodeName: node.name } },
          ),
        );
        // A pod whose annotations the API server refuses (422): its own take all but 64 bytes of the 256 KiB limit.
        const refusedNs = 'refused';
        const fatKey = 'example.com/filler';
        await node.must(['create', 'namespace', refusedNs]);
        const fat = workloadPod(
          refusedNs,
          'fat',
          py([
            'import socket, time',
            `socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x" * 100, ("${receiver4}", ${UDP_PORT}))`,
            'while True: time.sleep(3600)',
          ]),
          { spec: { nodeName: node.name } },
        ) as { metadata: Record<string, unknown> };
        fat.metadata.annotations = { [fatKey]: 'x'.repeat(256 * 1024 - fatKey.length - 64) };
        await create(fat);
        await ready(ns, 'zones');
        await ready(refusedNs, 'fat');
        const counters = async () =>
          Object.fromEntries(
            Object.entries(await podAnnotations(node, ns, 'zones')).filter(
              ([k]) => k.startsWith('podmeter.io/') && k !== 'podmeter.io/updated',
            ),
          );
        await waitFor(
          'the agent to count the trickle as cross-zone and cross-region',
          async () => {
            const a = await counters();
            return a['podmeter.io/egress-cross-zone-bytes'] && a['podmeter.io/egress-cross-region-bytes']
              ? true
              : undefined;
          },
          600_000,
          async () => JSON.stringify(await counters()),
        );
        await node.must(['exec', 'zones', '-n', ns, '--', 'touch', '/tmp/trickled']);
        const before = await settled("the trickle's annotations", 5_000, counters);
        // t0: a scrape of the trickle's final counts, before the burst.
        const lastSample = async (selector: string) => {
          const now = await prometheusNow(prom);
          return (await rawSamples(prom, `${selector}[10m]`, now))[0]?.values.at(-1);
        };
        const egressTotal = `podmeter_pod_network_bytes_total{job="${RELEASE}-agent",namespace="${ns}",pod="zones",direction="egress"}`;
        const t0 = await waitFor(
          "a scrape of the trickle's final counts",
          async () => {
            const s = await lastSample(egressTotal);
            return s !== undefined && s[1] === before['podmeter.io/egress-bytes'] ? s[0] : undefined;
          },
          600_000,
        );
        await node.must(['exec', 'zones', '-n', ns, '--', 'touch', '/tmp/burst']);
        const plus = (key: string, n: number) => String(BigInt(before[key] ?? '0') + BigInt(n));
        const after = await annotationsReach(ns, 'zones', {
          'podmeter.io/egress-bytes': plus('podmeter.io/egress-bytes', 4 * burst.bytes),
          'podmeter.io/egress-packets': plus('podmeter.io/egress-packets', 4 * burst.count),
          'podmeter.io/egress-cross-zone-bytes': plus('podmeter.io/egress-cross-zone-bytes', burst.bytes),
          'podmeter.io/egress-cross-region-bytes': plus('podmeter.io/egress-cross-region-bytes', burst.bytes),
          'podmeter.io/egress-external-bytes': plus('podmeter.io/egress-external-bytes', burst.bytes),
        });
        const t1 = await waitFor(
          "a scrape of the burst's counts",
          async () => {
            const s = await lastSample(egressTotal);
            return s !== undefined && s[1] === after['podmeter.io/egress-bytes'] ? s[0] : undefined;
          },
          600_000,
        );
        note(`trickle ${JSON.stringify(before)} scraped at ${t0}; burst ${JSON.stringify(after)} at ${t1}`);
        const delta = (key: string) => Number(BigInt(after[key] ?? '0') - BigInt(before[key] ?? '0'));

        // The alerts: exactly these fire, each for what provoked it: the namespace over its cross-zone threshold
        // (not the other namespaces, which sent none), the refused pod's node, the map memory over 1 byte.
        const expected = [
          `PodmeterBpfMapMemoryHigh node=${node.name}`,
          `PodmeterAnnotationWritesRejected node=${node.name}`,
          `PodmeterNamespaceCrossZoneEgressHigh namespace=${ns}`,
        ].sort();
        const key = (a: Alert) =>
          `${a.labels.alertname} ${a.labels.namespace !== undefined ? `namespace=${a.labels.namespace}` : `node=${a.labels.node}`}`;
        const fired = await waitFor(
          `the alerts ${expected.join(', ')} to fire, and no other`,
          async () => {
            const as = await podmeterAlerts();
            return JSON.stringify(as.map((a) => `${key(a)} ${a.state}`).sort()) ===
              JSON.stringify(expected.map((e) => `${e} firing`))
              ? as
              : undefined;
          },
          600_000,
          alertList,
        );
        for (const a of fired) {
          note(`${key(a)}: ${a.annotations.summary}`);
          assert.ok(a.annotations.summary && a.annotations.description, `${key(a)} has no summary or description`);
        }
        // The refused pod: none of podmeter's annotations; the agent names it in its log.
        assert.deepEqual(
          Object.keys(await podAnnotations(node, refusedNs, 'fat')).filter((k) => k.startsWith('podmeter.io/')),
          [],
        );
        const agentPod = await podBySelector(node, SYSTEM_NS, 'app.kubernetes.io/component=agent');
        const logs = (await node.kubectl(['logs', agentPod, '-n', SYSTEM_NS])).stdout;
        assert.ok(
          logs.split('\n').some((l) => l.includes('annotation write refused') && l.includes('"pod":"fat"')),
          'the agent did not log the refused write',
        );

        // Recording rules (OpenCost's series): each produces series, and the burst pod's equal its annotations.
        const groups = (await ruleGroups(prom)).filter((g) => g.file.includes(`/${SYSTEM_NS}-${RELEASE}-opencost-`));
        const recording = groups.flatMap((g) => g.rules).filter((r) => r.type === 'recording');
        assert.equal(recording.length, 4, JSON.stringify(groups));
        const classBytes: Record<string, number> = {
          'false,false,true': Number(after['podmeter.io/egress-cross-zone-bytes']),
          'false,false,false': Number(after['podmeter.io/egress-cross-region-bytes']),
          'true,false,false': Number(after['podmeter.io/egress-external-bytes']),
        };
        classBytes['false,true,true'] =
          Number(after['podmeter.io/egress-bytes']) - Object.values(classBytes).reduce((x, y) => x + y, 0);
        const recorded = (l: Record<string, string>) =>
          `${recording[0]!.name}{namespace="${ns}",pod_name="zones",internet="${l.internet}",same_zone="${l.same_zone}",same_region="${l.same_region}"}`;
        const tr = await waitFor(
          "a rule evaluation after the burst's scrape",
          async () => {
            const s = await lastSample(recorded(recording[1]!.labels!));
            return s && s[0] >= t1 ? s[0] : undefined;
          },
          600_000,
        );
        for (const r of recording) {
          const l = r.labels!;
          const all = await instantQuery(
            prom,
            `count(${r.name}{internet="${l.internet}",same_zone="${l.same_zone}",same_region="${l.same_region}"})`,
            tr,
          );
          assert.ok(all.length === 1 && Number(all[0]!.value[1]) >= 1, `no series of ${r.name} ${JSON.stringify(l)}`);
          const mine = await instantQuery(prom, recorded(l), tr);
          const want = classBytes[`${l.internet},${l.same_zone},${l.same_region}`];
          note(`${recorded(l)}: ${mine.map((x) => x.value[1]).join(', ')}, annotations ${want}`);
          assert.equal(mine.length, 1, recorded(l));
          assert.equal(Number(mine[0]!.value[1]), want, recorded(l));
        }
        // OpenCost's queries (its source's text) over the burst's window: its bytes, in GiB. Prometheus's
        // increase() extrapolates its samples to the window's edges: the window starts 1 ms before the
        // trickle's last evaluation and ends at the burst's, so it is the burst's bytes times (w / sampled).
        // The last evaluation before the burst is the earliest of each class's last one at its trickle value:
        // a scrape in the middle of the burst (which sends to each class in turn) can see one class moved and
        // not yet another (a clean clone's run took the external class's, after cross-zone had moved: 0 GiB).
        const lastBeforeBurst = async (labels: Record<string, string>, annotation: string) =>
          (await rawSamples(prom, `${recorded(labels)}[10m]`, tr))[0]!.values
            .filter(([, v]) => v === before[`podmeter.io/egress-${annotation}-bytes`])
            .at(-1)![0];
        const r0 = Math.min(
          await lastBeforeBurst({ internet: 'false', same_zone: 'false', same_region: 'true' }, 'cross-zone'),
          await lastBeforeBurst({ internet: 'false', same_zone: 'false', same_region: 'false' }, 'cross-region'),
          await lastBeforeBurst({ internet: 'true', same_zone: 'false', same_region: 'false' }, 'external'),
        );
        const windowMs = Math.round((tr - r0) * 1000) + 1;
        const stretch = windowMs / 1000 / (tr - r0);
        const prices = OPENCOST_PRICES;
        for (const [cls, format] of Object.entries(OPENCOST_NETWORK_QUERIES)) {
          const q = opencostQuery(format, `${windowMs}ms`);
          const res = (await instantQuery(prom, q, tr)).filter((x) => x.metric.namespace === ns);
          const annotation = { zone: 'cross-zone', region: 'cross-region', internet: 'external' }[cls];
          const want = (delta(`podmeter.io/egress-${annotation}-bytes`) * stretch) / 1024 ** 3;
          note(
            `OpenCost ${cls}: ${q} -> ${JSON.stringify(res)}; burst ${want} GiB, ${want * prices[cls as keyof typeof prices]} at ${prices[cls as keyof typeof prices]}/GiB`,
          );
          assert.equal(res.length, 1, q);
          assert.equal(res[0]!.metric.pod_name, 'zones');
          assert.ok(
            Math.abs(Number(res[0]!.value[1]) / want - 1) < 1e-9,
            `${q}: ${res[0]!.value[1]} GiB, burst ${want}`,
          );
        }

        // The dashboard as installed (the ConfigMap): every panel's query returns data for this namespace and node;
        // the byte and packet panels of pods and namespaces over the burst equal the annotations.
        const configMaps = JSON.parse(
          await node.must(['get', 'configmap', '-n', SYSTEM_NS, '-l', 'grafana_dashboard=1', '-o', 'json']),
        ) as { items: { data: Record<string, string> }[] };
        const dashboard = Object.values(configMaps.items[0]!.data)[0]!;
        for (const v of queryVariables(dashboard)) {
          const values = await labelValues(prom, v.label, v.metric);
          assert.ok(values.includes(v.name === 'node' ? node.name : ns), `variable ${v.name}: ${values.join(', ')}`);
        }
        const vars = { node: node.name, namespace: ns, datasource: 'prometheus' };
        const end = await prometheusNow(prom);
        for (const p of panelQueries(dashboard)) {
          const q = fillVariables(p.expr, vars, '2m');
          const res = await rangeQuery(prom, q, checkStart, end, 15);
          note(`panel ${p.panel}: ${res.length} series`);
          if (res.length === 0 && p.panel === 'Errors') {
            // A healthy agent has counted no error: the counter has no series yet, so nothing to show.
            assert.deepEqual(await instantQuery(prom, `podmeter_errors_total{job="${RELEASE}-agent"}`), []);
            continue;
          }
          assert.ok(res.length >= 1, `panel ${p.panel}: no data from ${q}`);
        }
        const windowPanel = `${Math.round((t1 - t0) * 1000) + 1}ms`;
        const podPanels = panelQueries(dashboard).filter(
          (p) => p.expr.includes('podmeter_pod_network_') && p.expr.includes('namespace=~"$namespace"'),
        );
        assert.equal(podPanels.length, 5, 'the byte and packet panels of pods and namespaces');
        for (const p of podPanels) {
          const unit = p.expr.includes('packets') ? 'packets' : 'bytes';
          const res = await instantQuery(prom, fillVariables(p.expr, vars, windowPanel), t1);
          for (const x of res) {
            const { direction, peer } = x.metric;
            const billed = ['cross-zone', 'cross-region', 'external'];
            const want =
              peer === undefined
                ? delta(`podmeter.io/${direction}-${unit}`)
                : billed.includes(peer)
                  ? delta(`podmeter.io/egress-${peer}-bytes`)
                  : delta('podmeter.io/egress-bytes') -
                    billed.reduce((n, b) => n + delta(`podmeter.io/egress-${b}-bytes`), 0);
            const got = Number(x.value[1]) * (t1 - t0);
            note(`panel ${p.panel} ${JSON.stringify(x.metric)}: ${got} ${unit} over the burst, annotations ${want}`);
            assert.ok(
              Math.abs(got - want) < 1e-6 * Math.max(1, want),
              `panel ${p.panel} ${JSON.stringify(x.metric)}: ${got}, annotations ${want}`,
            );
          }
          assert.ok(res.length >= 1, `panel ${p.panel}: no series at the burst`);
        }

        // The agent down: its process stopped (SIGSTOP from the node's PID namespace), so scrapes time out.
        const agentUid = (await podJson(node, SYSTEM_NS, agentPod)).metadata.uid;
        await create(
          workloadPod(ns, 'freezer', ['sleep', 'infinity'], {
            spec: { nodeName: node.name, hostPID: true },
            container: { securityContext: { privileged: true } },
          }),
        );
        await ready(ns, 'freezer');
        const signal = (what: 'STOP' | 'CONT') =>
          node.must(['exec', 'freezer', '-n', ns, '--', ...py(FREEZE), agentUid, what]);
        const stopped = (await signal('STOP')).trim();
        note(`stopped the agent's processes ${stopped}`);
        assert.ok(stopped !== '', 'no process of the agent pod found');
        try {
          const down = await waitFor(
            'PodmeterAgentDown to fire',
            async () => {
              const as = await podmeterAlerts();
              return as.find((a) => a.labels.alertname === 'PodmeterAgentDown' && a.state === 'firing');
            },
            600_000,
            alertList,
          );
          assert.equal(down.labels.node, node.name);
          assert.equal(down.labels.job, `${RELEASE}-agent`);
        } finally {
          note(`continued ${(await signal('CONT')).trim()}`);
        }
        await waitFor(
          'the agent up again and PodmeterAgentDown resolved',
          async () => {
            const up = await instantQuery(prom, `up{job="${RELEASE}-agent"}`);
            const as = await podmeterAlerts();
            return up.length === 1 &&
              up[0]!.value[1] === '1' &&
              !as.some((a) => a.labels.alertname === 'PodmeterAgentDown')
              ? true
              : undefined;
          },
          600_000,
          alertList,
        );
        for (const gone of [ns, refusedNs]) await node.must(['delete', 'namespace', gone, '--wait=false']);
        await node.must(['delete', 'node', 'zone-b', 'region-2']);
      },
    );

    // After 8 (whose alert check expects cross-zone bytes from namespace `zones` only).
    await t.test(
      `9. ClusterIP Services through kube-proxy (${KUBE_PROXY_MODES.join(', ')}): a pod's bytes in its backend's class (${SERVICE_CLASSES}); NodePort`,
      // A mode's phases took 633 s alone, 1,274 s beside the host lane (node:test's default bound is 900 s).
      { timeout: KUBE_PROXY_MODES.length * CHECK_9_MODE_MS },
      async () => {
        const ns = 'svc';
        const clientNs = 'svc-client';
        const zoneBNode = ZONE_B.nodeName(node.name);
        await node.must(['create', 'namespace', ns]);
        await node.must(['create', 'namespace', clientNs]);
        // The backend on this node; the second zone's "pod", a sink in its network namespace (run from a privileged
        // hostPID pod, which also runs what must run on the node: probes, kube-proxy's mode, NodePort clients).
        await create(workloadPod(ns, 'backend', py(SINK), { spec: { nodeName: node.name } }));
        await create(
          workloadPod(ns, 'zone-b', ['nsenter', `--net=${ZONE_B.netns}`, ...py(SINK)], {
            spec: { nodeName: node.name, hostPID: true },
            container: { securityContext: { privileged: true } },
          }),
        );
        await create(workloadPod(clientNs, 'client', ['sleep', 'infinity'], { spec: { nodeName: node.name } }));
        await create(sinkService(ns, 'on-node', { selector: { app: 'backend' } }));
        await create(sinkService(ns, 'zone-b'));
        await create(sinkEndpointSlice(ns, 'zone-b', ZONE_B.podIP, zoneBNode, 'b'));
        await create(sinkService(ns, 'nodeport-cluster', { selector: { app: 'backend' }, nodePort: 'Cluster' }));
        await create(sinkService(ns, 'nodeport-local', { selector: { app: 'backend' }, nodePort: 'Local' }));
        const spec = async (name: string) =>
          (
            JSON.parse(await node.must(['get', 'service', name, '-n', ns, '-o', 'json'])) as {
              spec: { clusterIP: string; ports: { protocol: string; nodePort?: number }[] };
            }
          ).spec;
        const services = {
          onNode: await spec('on-node'),
          zoneB: await spec('zone-b'),
          cluster: await spec('nodeport-cluster'),
          localPolicy: await spec('nodeport-local'),
        };
        const nodePort = (s: typeof services.cluster) => s.ports.find((p) => p.protocol === 'UDP')!.nodePort!;
        for (const [n, pod] of [
          [ns, 'backend'],
          [ns, 'zone-b'],
          [clientNs, 'client'],
        ] as const)
          await ready(n, pod);
        const sinkLog = async (pod: string) => (await node.kubectl(['logs', pod, '-n', ns])).stdout.split('\n');
        for (const pod of ['backend', 'zone-b'])
          await waitFor(
            `the ${pod} sink to listen`,
            async () => ((await sinkLog(pod)).includes(SINK_LISTENING) ? true : undefined),
            300_000,
          );
        /** Datagrams each sink has logged (`udp <peer> <n>`: the last n). */
        const datagrams = async (pod: string) =>
          Number(
            (await sinkLog(pod))
              .filter((l) => l.startsWith('udp '))
              .at(-1)
              ?.split(' ')[2] ?? 0,
          );
        const onNode = (args: string[]) => node.must(['exec', 'zone-b', '-n', ns, '--', ...args]);
        /**
         * A pod's counters once they have settled (the same twice, 3 s apart): what the agent counts of a Service
         * flow may reach its class a drain later than its totals.
         */
        const counters = (n: string, pod: string) =>
          settled(`the counters of ${n}/${pod}`, 3_000, async () => {
            // Side by side: under TCG beside the host lane one exec takes 10-15 s.
            const [eth0, metrics] = await Promise.all([
              node.must(['exec', pod, '-n', n, '--', 'cat', ...ETH0_STATISTICS]),
              agentMetrics(node),
            ]);
            return podCounters(eth0, metrics, n, pod);
          });
        /** Datagrams sent to each sink so far. */
        const sent: Record<string, number> = { backend: 0, 'zone-b': 0 };
        const udp9 = { count: 100, size: 1000 };
        const tcpBytes = 2 * 1024 * 1024;
        /** The client's egress and ingress in each class, over every phase. */
        const classTotals: Record<string, number> = {};
        const classOf = (backendClass: string) => (SERVICE_CLASSES === 'service' ? 'service' : backendClass);

        for (const mode of KUBE_PROXY_MODES) {
          if (mode !== KUBE_PROXY_MODES[0])
            note(
              (
                await onNode(['nsenter', '-t', '1', '-m', '-u', '-i', '-n', '-p', '--', '/seed/kube-proxy-mode', mode])
              ).trim(),
            );
          // Every Service programmed (TCP answers from the node's namespace) before the client sends a byte.
          const started = Date.now();
          for (const x of Object.values(services))
            await onNode(['nsenter', '-t', '1', '-n', '--', 'python3', '-c', PROBE, x.clusterIP, String(SINK_PORT)]);
          note(`kube-proxy ${mode}: every Service answers (${Date.now() - started} ms)`);
          // The client to a ClusterIP whose backend is a pod of this node (`node`), then to one whose backend is
          // in zone b (`cross-zone`): TCP (2 MiB) and UDP (100 x 1000 B) each. A phase's counters (settled) are
          // where the next one starts: nothing else moves the client's between them.
          let clientAt: Record<string, number> | undefined;
          for (const [target, sink, backendClass] of [
            [services.onNode, 'backend', 'node'],
            [services.zoneB, 'zone-b', 'cross-zone'],
          ] as const) {
            for (const proto of ['tcp', 'udp'] as const) {
              const what = `${mode}: client -> ${proto} ClusterIP ${target.clusterIP} (backend ${sink})`;
              const before = clientAt ?? (await counters(clientNs, 'client'));
              const [count, size] = proto === 'tcp' ? [tcpBytes / 1024, 1024] : [udp9.count, udp9.size];
              const out = await node.must([
                'exec',
                'client',
                '-n',
                clientNs,
                '--',
                'python3',
                '-c',
                SEND,
                proto,
                target.clusterIP,
                String(SINK_PORT),
                String(count),
                String(size),
              ]);
              if (proto === 'tcp') assert.equal(out.trim(), String(tcpBytes), `${what}: what the sink read`);
              else {
                sent[sink] = (sent[sink] ?? 0) + count;
                await waitFor(
                  `${what}: the sink to receive ${sent[sink]} datagrams`,
                  async () => ((await datagrams(sink)) === sent[sink] ? true : undefined),
                  120_000,
                  async () => `it has ${await datagrams(sink)}`,
                );
              }
              const after = await counters(clientNs, 'client');
              clientAt = after;
              const d = counterDelta(before, after);
              note(`${what}: ${JSON.stringify(d)}`);
              if (proto === 'udp') {
                assert.equal(d.egressBytes, count * (28 + size), `${what}: egress bytes`);
                assert.equal(d.egressPackets, count, `${what}: egress packets`);
              } else
                assert.ok(
                  d.egressBytes! > tcpBytes,
                  `${what}: ${d.egressBytes} egress bytes for ${tcpBytes} of payload`,
                );
              assertPhase(what, d, classOf(backendClass));
              for (const [k, v] of Object.entries(d)) if (k.includes(' ')) classTotals[k] = (classTotals[k] ?? 0) + v;
            }
          }
          // NodePort from zone b (its network namespace, to this node's InternalIP): what the backend sees.
          // externalTrafficPolicy Cluster: kube-proxy masquerades, the source is this node's address on the pod
          // bridge (cni0, in its pod CIDR): `node`. Local: the client's address is kept, zone b's node: `cross-zone`.
          let backendAt: Record<string, number> | undefined;
          for (const [svc, policy, source, cls] of [
            [services.cluster, 'Cluster', POD_GATEWAY, 'node'],
            [services.localPolicy, 'Local', ZONE_B.nodeIP, 'cross-zone'],
          ] as const) {
            const what = `${mode}: zone b -> UDP NodePort ${VM_NODE_IP}:${nodePort(svc)} (externalTrafficPolicy ${policy})`;
            const before = backendAt ?? (await counters(ns, 'backend'));
            await onNode([
              'nsenter',
              `--net=${ZONE_B.netns}`,
              '--',
              'python3',
              '-c',
              SEND,
              'udp',
              VM_NODE_IP,
              String(nodePort(svc)),
              String(udp9.count),
              String(udp9.size),
            ]);
            sent.backend = (sent.backend ?? 0) + udp9.count;
            await waitFor(
              `${what}: the backend to receive ${sent.backend} datagrams`,
              async () => ((await datagrams('backend')) === sent.backend ? true : undefined),
              120_000,
              async () => `it has ${await datagrams('backend')}`,
            );
            backendAt = await counters(ns, 'backend');
            const d = counterDelta(before, backendAt);
            const last = (await sinkLog('backend')).filter((l) => l.startsWith('udp ')).at(-1);
            note(`${what}: backend ${JSON.stringify(d)}; its sink logged ${last}`);
            assert.equal(last?.split(' ')[1], source, `${what}: the source the backend sees`);
            assert.equal(d.ingressBytes, udp9.count * (28 + udp9.size), `${what}: the backend's ingress bytes`);
            assert.equal(d.ingressPackets, udp9.count, `${what}: the backend's ingress packets`);
            assertPhase(what, d, cls);
          }
        }

        // The client's totals, once they have settled: annotations, the agent's series, Prometheus's and the
        // operator's usage objects all say the same, exactly, and the classes are the backends' (or `service`).
        const annotations = await settled("the client's annotations", STAY_MS, () =>
          podAnnotations(node, clientNs, 'client'),
        );
        const metrics = await agentMetrics(node);
        const series = (unit: 'bytes' | 'packets', peer: boolean) =>
          samples(metrics, `podmeter_pod_network_${peer ? 'peer_' : ''}${unit}_total`)
            .filter((x) => x.labels.namespace === clientNs && x.labels.pod === 'client')
            .map((x) => [`${x.labels.direction}${peer ? ` ${x.labels.peer}` : ''}`, x.value] as const);
        const classes = Object.fromEntries(series('bytes', true));
        note(`client: annotations ${JSON.stringify(annotations)}; classes ${JSON.stringify(classes)}`);
        assert.deepEqual(
          classes,
          Object.fromEntries(
            Object.entries(classTotals)
              .filter(([, v]) => v !== 0)
              .map(([k, v]) => [k, String(v)] as const),
          ),
          "the client's bytes by class: the sum of its phases",
        );
        if (SERVICE_CLASSES === 'backend')
          for (const dir of ['egress', 'ingress'])
            assert.equal(classes[`${dir} service`], undefined, `nothing in service (${dir})`);
        const totals = Object.fromEntries([
          ...series('bytes', false).map(([k, v]) => [`${k}Bytes`, v] as const),
          ...series('packets', false).map(([k, v]) => [`${k}Packets`, v] as const),
        ]);
        const counts = countsOfAnnotations(annotations);
        for (const f of ['ingressBytes', 'egressBytes', 'ingressPackets', 'egressPackets'])
          assert.equal(counts[f], totals[f], `the client's ${f}: annotation and /metrics`);
        assert.equal(counts.egressCrossZoneBytes, classes['egress cross-zone'] ?? '0', 'the cross-zone annotation');
        assert.equal(counts.egressCrossRegionBytes, '0');
        assert.equal(counts.egressExternalBytes, '0');
        // The operator's totals: the client is its namespace's only pod and its own workload.
        const uid = (await podJson(node, clientNs, 'client')).metadata.uid;
        for (const [kind, name] of [
          ['namespaceusage', clientNs],
          ['workloadusage', `${clientNs}.pod.client`],
        ] as const) {
          await waitFor(
            `${kind} ${name} to equal the client's annotations`,
            async () =>
              JSON.stringify(countsOfStatus(await usageStatus(node, kind, name))) === JSON.stringify(counts)
                ? true
                : undefined,
            600_000,
            async () => JSON.stringify(await usageStatus(node, kind, name)),
          );
          await sleep(STAY_MS);
          assert.deepEqual(
            countsOfStatus(await usageStatus(node, kind, name)),
            counts,
            `${kind} ${name}, ${STAY_MS} ms later`,
          );
        }
        note("client: the operator's NamespaceUsage and WorkloadUsage equal its annotations");
        const nodeUsage = await usageStatus(node, 'nodeusage', node.name);
        assert.ok(nodeUsage);
        assert.deepEqual(
          countsOfStatus(nodeUsage.checkpoint?.find((e) => e.uid === uid)),
          counts,
          "the client's NodeUsage entry",
        );
        assertNodeUsageSums(nodeUsage);
        // Prometheus: each of the client's series, read once scraped after the last phase, equals the agent's.
        const prom = await node.prometheus();
        const quiet = await prometheusNow(prom);
        const selector = `{job="${RELEASE}-agent",namespace="${clientNs}",pod="client"}`;
        const at = await waitFor(
          "a scrape of the client's series after its last phase",
          async () => {
            const now = await prometheusNow(prom);
            const oldest = await instantQuery(
              prom,
              `min(timestamp(podmeter_pod_network_peer_bytes_total${selector}))`,
              now,
            );
            return oldest.length === 1 && Number(oldest[0]!.value[1]) > quiet ? now : undefined;
          },
          300_000,
        );
        for (const [unit, peer] of [
          ['bytes', true],
          ['bytes', false],
          ['packets', false],
        ] as const) {
          const name = `podmeter_pod_network_${peer ? 'peer_' : ''}${unit}_total`;
          const got = (await instantQuery(prom, `${name}${selector}`, at))
            .map((x) => [`${x.metric.direction}${peer ? ` ${x.metric.peer}` : ''}`, x.value[1]] as const)
            .sort();
          assert.deepEqual(got, [...series(unit, peer)].sort(), `Prometheus ${name} of the client`);
        }
      },
    );

    // Last: it restarts everything on the node.
    await t.test(
      '5c. a node reboot: the pods come back, count on from before, and the totals keep every byte',
      FULL_ONLY,
      async () => {
        const { ns, count, bytes } = burst;
        // Fewer pods restart sooner under TCG.
        for (const gone of ['hostnet', 'tcp', 'maps'])
          await node.must(['delete', 'namespace', gone, '--wait=false', '--ignore-not-found']);
        await waitFor(
          `the NamespaceUsage of ${ns} at ${2 * bytes} bytes`,
          async () => ((await namespaceUsage(node, ns))?.egressBytes === String(2 * bytes) ? true : undefined),
          600_000,
        );
        const bootId = () => node.must(['get', 'node', node.name, '-o', 'jsonpath={.status.nodeInfo.bootID}']);
        const before = await bootId();
        // A clean reboot, as an administrator's: systemd stops the pods (the agent saves its state on SIGTERM).
        await node.must(['create', 'namespace', 'reboot']);
        await create({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'reboot', namespace: 'reboot' },
          spec: {
            hostPID: true,
            restartPolicy: 'Never',
            containers: [
              {
                name: 'main',
                image: WORKLOAD_IMAGE,
                imagePullPolicy: 'Never',
                securityContext: { privileged: true },
                command: ['nsenter', '-t', '1', '-m', '-p', '--', 'systemctl', 'reboot'],
              },
            ],
          },
        });
        await waitFor(
          'the node to boot again',
          async () => {
            const now = (await node.kubectl(['get', 'node', node.name, '-o', 'jsonpath={.status.nodeInfo.bootID}']))
              .stdout;
            return now !== '' && now !== before ? now : undefined;
          },
          900_000,
        );
        const ds = (await node.must(['get', 'daemonset', '-n', SYSTEM_NS, '-o', 'name'])).trim();
        const s = await node.kubectl(['rollout', 'status', ds, '-n', SYSTEM_NS, '--timeout=900s']);
        assert.equal(s.code, 0, `the agent after the reboot: ${s.stderr}\n${await show()}`);
        await ready(ns, 'burst');
        await receiverBound(udp.ns);
        // One more burst of `count`, to the receiver's address after the reboot.
        const { v4 } = await podIPs(udp.ns, 'receiver');
        const more = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b"x" * ${burst.size}, ("${v4}", ${UDP_PORT})) for _ in range(${count})]`;
        await node.must(['exec', 'burst', '-n', ns, '--', 'python3', '-c', more]);
        await annotationsReach(ns, 'burst', {
          'podmeter.io/egress-bytes': String(3 * bytes),
          'podmeter.io/egress-packets': String(3 * count),
        });
        assert.equal(
          sample(await agentMetrics(node), 'podmeter_pod_network_bytes_total', {
            namespace: ns,
            pod: 'burst',
            direction: 'egress',
          }),
          3 * bytes,
        );
        await waitFor(
          `the NamespaceUsage of ${ns} at ${3 * bytes} bytes`,
          async () => ((await namespaceUsage(node, ns))?.egressBytes === String(3 * bytes) ? true : undefined),
          600_000,
          async () => JSON.stringify(await namespaceUsage(node, ns)),
        );
      },
    );
  },
);
