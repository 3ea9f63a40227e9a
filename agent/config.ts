/**
 * Configuration of `podmeter agent`: parsed once from argv and environment,
 * validated, frozen, and passed down. Nothing else in the agent reads
 * process.env or process.argv.
 */
import { hostname } from 'node:os';
import {
  ConfigError,
  defineFlags,
  formatHelp,
  invalid,
  parseOnlyFlags,
  type ParseContext,
} from '../common/flags/parse.ts';
import {
  decimal,
  hostPort,
  kubernetesName,
  oneOf,
  pathValue,
  seconds,
  switchFlag,
  type HostPort,
} from '../common/flags/values.ts';
import {
  logFlags,
  metricsAuthFlags,
  metricsSecurity,
  namespaceFlag,
  type MetricsSecurity,
} from '../common/flags/sets.ts';
import type { LogFormat, LogLevel } from '../common/log.ts';
import { DISCOVER_MODES, type DiscoverMode } from './cgroups/units.ts';
import { parsePrefix, type Prefix } from './peers/cidr.ts';
import { mergePeerClasses, parsePeerClassEntries, readPeerClassesFile, type PeerClassSpec } from './peers/config.ts';

export interface AgentConfig extends MetricsSecurity {
  /** `auto`: pods when a kubepods tree exists under the cgroup root, else children. */
  readonly discover: DiscoverMode | 'auto';
  /** Absolute; undefined means "find the cgroup2 mount" (agent/cgroups/mount.ts). */
  readonly cgroupRoot?: string;
  readonly bpffs: string;
  readonly stateDir: string;
  /** host is '0.0.0.0' for an empty host (`:9471`); port 0 picks a free port. */
  readonly listen: HostPort;
  readonly intervalMs: number;
  readonly mapsIntervalMs: number;
  /** How long counters of terminated cgroups stay visible; 0 drops them at once. */
  /** --pod-watch-idle-timeout: the pod watch's watchdog. */
  readonly podWatchIdleMs: number;
  readonly retentionMs: number;
  readonly nodeName: string;
  /** Absolute; undefined means in-cluster config, or standalone when there is none. */
  readonly kubeconfig?: string;
  /** Minimum time between two annotation writes to the same pod. */
  readonly annotateIntervalMs: number;
  /**
   * Annotation writes per second for this node until the operator publishes
   * one (ConfigMap podmeter-budget in `namespace`); 0 turns annotation writes
   * off, whatever the operator publishes.
   */
  readonly annotateBudget: number;
  /** Where the operator publishes the write budget. */
  readonly namespace: string;
  /** Configured named peer classes (--peer-class, --peer-classes-file); at most MAX_NAMED_CLASSES; absent when none. */
  readonly peerClasses?: readonly PeerClassSpec[];
  /** --service-cidr: Service address ranges besides the cluster's ServiceCIDRs (standalone: the only ones). */
  readonly serviceCidrs: readonly Prefix[];
  /** --conntrack-netns: the netns whose conntrack table has the Service flows' backends; undefined: the agent's own. */
  readonly conntrackNetns?: string;
  readonly logLevel: LogLevel;
  /** `auto` is left to the logger (common/log.ts), which knows whether stderr is a terminal. */
  readonly logFormat: LogFormat;
  readonly help: boolean;
}

const agentFlags = defineFlags({
  discover: {
    metavar: 'pods|children|auto',
    help: 'Which cgroups to count: pod cgroups of the kubepods tree, every direct child of --cgroup-root, or pods when a kubepods tree exists',
    parse: oneOf([...DISCOVER_MODES, 'auto']),
    default: 'auto',
  },
  'cgroup-root': {
    metavar: 'PATH',
    help: 'cgroup2 directory to work under',
    parse: pathValue,
    defaultHelp: 'the cgroup2 mount: /sys/fs/cgroup, else /sys/fs/cgroup/unified, else any other',
  },
  bpffs: {
    metavar: 'PATH',
    help: 'Directory in a bpf filesystem where links are pinned, so counters survive agent restarts',
    parse: pathValue,
    default: '/sys/fs/bpf/podmeter',
  },
  'state-dir': {
    metavar: 'PATH',
    help: 'Directory for state kept across restarts',
    parse: pathValue,
    default: '/var/lib/podmeter',
  },
  listen: {
    metavar: 'HOST:PORT',
    help: 'Address of the HTTP server (/metrics, /healthz, /api/v1/...); IPv6 in brackets: [::]:9471',
    parse: hostPort,
    default: { host: '0.0.0.0', port: 9471 },
    defaultHelp: '0.0.0.0:9471',
  },
  ...metricsAuthFlags,
  interval: {
    metavar: 'SECONDS',
    help: 'How often counters are read',
    parse: seconds({ allowZero: false }),
    default: 10_000,
    defaultHelp: '10',
  },
  'maps-interval': {
    metavar: 'SECONDS',
    help: 'How often all BPF maps and their owners are enumerated (costs ~100 ms of CPU at 2,000 maps)',
    parse: seconds({ allowZero: false }),
    default: 30_000,
    defaultHelp: '30',
  },
  retention: {
    metavar: 'SECONDS',
    help: 'How long final counters of terminated cgroups stay visible',
    parse: seconds({ allowZero: true }),
    default: 600_000,
    defaultHelp: '600',
  },
  'node-name': {
    metavar: 'NAME',
    help: 'Name of this Kubernetes node',
    parse: kubernetesName,
    defaultFrom: defaultNodeName,
    defaultHelp: '$NODE_NAME, else the host name',
  },
  kubeconfig: {
    metavar: 'PATH',
    help: 'kubeconfig file; without it the in-cluster config is used, and without that the agent runs standalone',
    parse: pathValue,
  },
  'annotate-interval': {
    metavar: 'SECONDS',
    help: 'Minimum time between two annotation writes to the same pod',
    parse: seconds({ allowZero: false }),
    default: 60_000,
    defaultHelp: '60',
  },
  'pod-watch-idle-timeout': {
    metavar: 'SECONDS',
    help: "Drop and resume the watch of this node's pods when it brings nothing, not even a bookmark, for this long (a stalled proxy or half-open connection sends no reset; the API server sends a bookmark about every minute)",
    parse: seconds({ allowZero: false }),
    default: 330_000,
    defaultHelp: '330',
  },
  'annotate-budget': {
    metavar: 'WRITES_PER_SECOND',
    help: "Pod annotation writes per second for this node until the operator publishes this node's share of the cluster budget (0 turns annotations off)",
    parse: decimal('writes per second', 0, false),
    default: 1,
  },
  namespace: namespaceFlag(
    "Namespace of the operator's podmeter-budget ConfigMap, which sets the annotation write budget",
  ),
  'peer-class': {
    metavar: 'NAME=CIDR[,CIDR...]',
    help: 'A named peer class: traffic to and from these prefixes is counted as NAME (repeatable, at most 8 classes; in the environment, entries separated by ;)',
    parse: (raw: string) => guard(() => parsePeerClassEntries(raw)),
    repeatable: true,
    default: [] as PeerClassSpec[],
    defaultHelp: 'none',
  },
  'peer-classes-file': {
    metavar: 'PATH',
    help: 'A file of named peer classes, one NAME=CIDR[,CIDR...] per line (# comments)',
    parse: (raw: string, ctx: ParseContext) => guard(() => readPeerClassesFile(pathValue(raw, ctx))),
    default: [] as PeerClassSpec[],
    defaultHelp: 'none',
  },
  'service-cidr': {
    metavar: 'CIDR[,CIDR...]',
    help: "Service address ranges: traffic to them is counted in the class of the backend that the node's conntrack table names (repeatable)",
    parse: (raw: string) =>
      guard(() =>
        raw
          .split(/[\n,]/)
          .filter((s) => s.trim() !== '')
          .map((s) => parsePrefix(s.trim())),
      ),
    repeatable: true,
    default: [] as Prefix[],
    defaultHelp: "none besides the cluster's ServiceCIDR objects",
  },
  'conntrack-netns': {
    metavar: 'PATH',
    help: 'Network namespace (/proc/PID/ns/net, /run/netns/NAME) whose conntrack table names the backends of Service flows',
    parse: pathValue,
    defaultHelp: "the agent's own (the node's: the agent runs with hostNetwork)",
  },
  ...logFlags,
  help: switchFlag('Show this help', { env: false, short: 'h' }),
});

export const agentHelp: string = formatHelp(agentFlags, {
  usage: 'podmeter agent [flags]',
  summary:
    'Counts the network bytes and packets of every pod (or cgroup) on this node and serves them as metrics and pod annotations.',
  notes:
    'SECONDS accept decimals (0.5) or a unit (500ms, 30s, 5m, 1h).\n' +
    'A flag wins over its environment variable; an empty environment variable counts as unset.',
});

/** `argv` is what follows `podmeter agent`; `env` is usually process.env. */
export function parseAgentConfig(argv: string[], env: Record<string, string | undefined>): AgentConfig {
  const values = parseOnlyFlags(agentFlags, argv, env, 'podmeter agent');
  const classes = peerClasses(values['peer-class'], values['peer-classes-file']);
  return Object.freeze({
    ...(classes.length > 0 ? { peerClasses: Object.freeze(classes) } : {}),
    serviceCidrs: Object.freeze(values['service-cidr']),
    ...(values['conntrack-netns'] === undefined ? {} : { conntrackNetns: values['conntrack-netns'] }),
    discover: values.discover,
    cgroupRoot: values['cgroup-root'],
    bpffs: values.bpffs,
    stateDir: values['state-dir'],
    listen: Object.freeze({ ...values.listen }),
    ...metricsSecurity(values),
    intervalMs: values.interval,
    mapsIntervalMs: values['maps-interval'],
    retentionMs: values.retention,
    nodeName: values['node-name'],
    kubeconfig: values.kubeconfig,
    annotateIntervalMs: values['annotate-interval'],
    annotateBudget: values['annotate-budget'],
    podWatchIdleMs: values['pod-watch-idle-timeout'],
    namespace: values.namespace,
    logLevel: values['log-level'],
    logFormat: values['log-format'],
    help: values.help,
  });
}

/**
 * The Downward API's NODE_NAME (what the DaemonSet sets), else the host name
 * lower cased, as the kubelet names its node by default.
 */
function defaultNodeName(ctx: ParseContext): { raw: string; from: string } {
  const fromEnv = ctx.env.NODE_NAME;
  return fromEnv ? { raw: fromEnv, from: 'NODE_NAME' } : { raw: hostname().toLowerCase(), from: 'the host name' };
}

/** Value parsers report through invalid(): turn an Error from the peer-class parsers into one. */
function guard<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    return invalid((err as Error).message);
  }
}

function peerClasses(fromFlag: readonly PeerClassSpec[], fromFile: readonly PeerClassSpec[]): PeerClassSpec[] {
  try {
    return mergePeerClasses(fromFlag, fromFile);
  } catch (err) {
    throw new ConfigError(`--peer-class / --peer-classes-file: ${(err as Error).message}`, '--peer-class');
  }
}
