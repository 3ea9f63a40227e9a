/**
 * Configuration of `podmeter operator`: parsed once from argv and the
 * environment, validated, frozen and passed down. Nothing else in the
 * operator reads process.env.
 */
import { hostname } from 'node:os';
import { defineFlags, formatHelp, invalid, parseOnlyFlags, type ParseContext } from '../common/flags/parse.ts';
import { decimal, duration, hostPort, pathValue, type HostPort } from '../common/flags/values.ts';
import {
  logFlags,
  metricsAuthFlags,
  metricsSecurity,
  namespaceFlag,
  type MetricsSecurity,
} from '../common/flags/sets.ts';
import type { LogFormat, LogLevel } from '../common/log.ts';

export interface OperatorConfig extends MetricsSecurity {
  /** Absolute; undefined means the in-cluster service account. */
  readonly kubeconfig?: string;
  readonly listen: HostPort;
  /** Where the Lease and the budget ConfigMap live. */
  readonly namespace: string;
  readonly maxAnnotationWritesPerSecond: number;
  readonly maxStatusWritesPerSecond: number;
  /** How long a WorkloadUsage or NodeUsage is kept after its workload or node is gone (ms). */
  readonly usageRetentionMs: number;
  readonly identity: string;
  /** Name of the ValidatingAdmissionPolicy (and binding) that guards podmeter.io/ annotations; checked, never written. */
  readonly admissionPolicy: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
}

const operatorFlags = defineFlags({
  kubeconfig: {
    metavar: 'PATH',
    help: 'kubeconfig file; without it the in-cluster service account is used',
    parse: pathValue,
  },
  listen: {
    metavar: 'HOST:PORT',
    help: 'Address of the HTTP server (/metrics, /healthz, /readyz); IPv6 in brackets: [::]:9472',
    parse: hostPort,
    default: { host: '0.0.0.0', port: 9472 },
    defaultHelp: '0.0.0.0:9472',
  },
  ...metricsAuthFlags,
  namespace: namespaceFlag('Namespace of the leader-election Lease and the podmeter-budget ConfigMap'),
  'max-annotation-writes-per-second': {
    metavar: 'N',
    help: 'Pod annotation writes per second for the whole cluster, split evenly over nodes and published for the agents',
    parse: decimal('writes per second', 0, true),
    default: 50,
  },
  'max-status-writes-per-second': {
    metavar: 'N',
    help: "Status writes per second of the operator's own custom resources (NamespaceUsage, WorkloadUsage, NodeUsage)",
    parse: decimal('writes per second', 0, true),
    default: 50,
  },
  'usage-retention': {
    metavar: 'DURATION',
    help: 'How long a WorkloadUsage or NodeUsage is kept after its last pod (and for a node, its Node) went; then it is deleted, its bytes kept in its NamespaceUsage. 30d, 12h, 90m, 600s',
    parse: duration('a retention'),
    default: 30 * 24 * 3_600_000,
    defaultHelp: '30d',
  },
  identity: {
    metavar: 'NAME',
    help: "This replica's name in the Lease",
    parse: (raw: string) => (raw.trim() === '' ? invalid('is empty') : raw),
    defaultFrom: (ctx: ParseContext) =>
      ctx.env.POD_NAME ? { raw: ctx.env.POD_NAME, from: 'POD_NAME' } : { raw: hostname(), from: 'the host name' },
    defaultHelp: '$POD_NAME, else the host name',
  },
  'admission-policy': {
    metavar: 'NAME',
    help: "ValidatingAdmissionPolicy and binding that let only the agents write podmeter.io/ annotations (the chart's admission.enabled); without them the operator warns and podmeter_admission_policy_enforced is 0",
    parse: (raw: string) => (raw.trim() === '' ? invalid('is empty') : raw),
    default: 'podmeter-annotations',
  },
  ...logFlags,
});

export const operatorHelp: string = formatHelp(operatorFlags, {
  usage: 'podmeter operator [flags]',
  summary:
    "Cluster-wide rollups of the agents' per-pod counts (NamespaceUsage, WorkloadUsage, NodeUsage custom resources and metrics), " +
    'leader-elected (run two replicas), and the per-node annotation write budget.',
  notes: 'A flag wins over its environment variable; an empty environment variable counts as unset.',
});

/** `argv` is what follows `podmeter operator`; `env` is usually process.env. */
export function parseOperatorConfig(argv: string[], env: Record<string, string | undefined>): OperatorConfig {
  const values = parseOnlyFlags(operatorFlags, argv, env, 'podmeter operator');
  return Object.freeze({
    kubeconfig: values.kubeconfig,
    listen: Object.freeze({ ...values.listen }),
    ...metricsSecurity(values),
    namespace: values.namespace,
    maxAnnotationWritesPerSecond: values['max-annotation-writes-per-second'],
    maxStatusWritesPerSecond: values['max-status-writes-per-second'],
    usageRetentionMs: values['usage-retention'],
    identity: values.identity,
    admissionPolicy: values['admission-policy'],
    logLevel: values['log-level'],
    logFormat: values['log-format'],
  });
}
