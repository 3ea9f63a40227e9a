/** The flags several commands share, one definition each. */
import { ConfigError, type ParseContext } from './parse.ts';
import { kubernetesName, oneOf, pathValue } from './values.ts';
import { LOG_FORMATS, LOG_LEVELS } from '../log.ts';

/** `--namespace`: where podmeter's own objects live (the Downward API's POD_NAMESPACE in the chart). */
export function namespaceFlag(help: string) {
  return {
    metavar: 'NAMESPACE',
    help,
    parse: kubernetesName,
    defaultFrom: (ctx: ParseContext) =>
      ctx.env.POD_NAMESPACE
        ? { raw: ctx.env.POD_NAMESPACE, from: 'POD_NAMESPACE' }
        : { raw: 'podmeter', from: 'the default' },
    defaultHelp: '$POD_NAMESPACE, else podmeter',
  };
}

/** --log-level and --log-format, the same for every long-running command. */
export const logFlags = {
  'log-level': {
    metavar: 'trace|debug|info|warn|error',
    help: 'Least severe level that is logged',
    parse: oneOf(LOG_LEVELS),
    default: 'info',
  },
  'log-format': {
    metavar: 'json|pretty|auto',
    help: 'Log line format; auto is pretty when stderr is a terminal, else json',
    parse: oneOf(LOG_FORMATS),
    default: 'auto',
  },
} as const;

export const METRICS_AUTH_MODES = ['none', 'kubernetes'] as const;
export type MetricsAuth = (typeof METRICS_AUTH_MODES)[number];

/** How the HTTP server is secured (common/http/auth.ts, tls.ts); one shape for the agent and the operator. */
export interface MetricsSecurity {
  /** `kubernetes`: HTTPS, and a bearer token allowed by the API for every path but /healthz and /readyz. */
  readonly metricsAuth: MetricsAuth;
  /** Absent: a self-signed certificate made at start. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/** --metrics-auth, --tls-cert-file, --tls-key-file: the same for the agent and the operator. */
export const metricsAuthFlags = {
  'metrics-auth': {
    metavar: 'none|kubernetes',
    help: 'Who may read /metrics and the API: none (anyone, plain HTTP) or kubernetes (HTTPS; a bearer token the Kubernetes API authenticates (TokenReview) and allows to get the path (SubjectAccessReview); /healthz and /readyz stay open)',
    parse: oneOf(METRICS_AUTH_MODES),
    default: 'none',
  },
  'tls-cert-file': {
    metavar: 'PATH',
    help: 'PEM certificate (chain) served with --metrics-auth kubernetes; reloaded when it changes',
    parse: pathValue,
    defaultHelp: 'a self-signed certificate made at start',
  },
  'tls-key-file': {
    metavar: 'PATH',
    help: 'PEM private key of --tls-cert-file',
    parse: pathValue,
  },
} as const;

/** Checks the three flags together. */
export function metricsSecurity(values: {
  'metrics-auth': MetricsAuth;
  'tls-cert-file': string | undefined;
  'tls-key-file': string | undefined;
}): MetricsSecurity {
  const cert = values['tls-cert-file'];
  const key = values['tls-key-file'];
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(
      `${cert === undefined ? '--tls-key-file' : '--tls-cert-file'} needs ${cert === undefined ? '--tls-cert-file' : '--tls-key-file'} too`,
      cert === undefined ? '--tls-key-file' : '--tls-cert-file',
    );
  }
  if (cert !== undefined && values['metrics-auth'] !== 'kubernetes') {
    throw new ConfigError(
      '--tls-cert-file and --tls-key-file are for HTTPS, which comes with --metrics-auth kubernetes',
      '--tls-cert-file',
    );
  }
  return Object.freeze({
    metricsAuth: values['metrics-auth'],
    ...(cert !== undefined && key !== undefined ? { tls: Object.freeze({ certFile: cert, keyFile: key }) } : {}),
  });
}
