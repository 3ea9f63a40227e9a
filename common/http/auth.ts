/**
 * --metrics-auth kubernetes: who may read /metrics, /api/v1/* and /maps.
 * As controller-runtime's metrics filters and kube-rbac-proxy do, the
 * bearer token is checked by a TokenReview (authentication.k8s.io/v1) and
 * its user authorised by a SubjectAccessReview (authorization.k8s.io/v1)
 * for verb get on the request's path as a non-resource URL, so a
 * ClusterRole with nonResourceURLs ["/metrics"] lets Prometheus in. The
 * agent's JSON API is authorised as /podmeter/api/v1/... (authorizationPath).
 *
 * Decisions are cached by SHA-256(token) and path (allowed for 60 s, denied
 * for 10 s), so a scrape costs no API round trip; concurrent requests with
 * the same token and path share one review. When the API cannot be
 * reached the answer is 503 (never cached), except that a cached allow
 * keeps working for the rest of its TTL.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { KubeConnection } from '../kube/connection.ts';
import type { Logger } from '../log.ts';
import { ConfigError } from '../flags/parse.ts';
import type { MetricsSecurity } from '../flags/sets.ts';
import { describe, KubeApi } from '../kube/api.ts';
import { text, type Gate, type Reply } from './server.ts';
import { servingTls, type ServingTls } from './tls.ts';

export interface GateOptions {
  allowTtlMs?: number;
  denyTtlMs?: number;
  /** Cached decisions kept at most (oldest dropped first): bounds memory under a flood of distinct tokens. */
  maxEntries?: number;
  /** Per review request. */
  timeoutMs?: number;
}

interface TokenReview {
  status?: { authenticated?: boolean; error?: string; user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> } };
}

interface SubjectAccessReview {
  status?: { allowed?: boolean; denied?: boolean; reason?: string; evaluationError?: string };
}

/**
 * The HTTPS certificate and the Gate for --metrics-auth kubernetes; loaded
 * (with the client library) only then. Without a Kubernetes API there is
 * nobody to review tokens: a ConfigError before anything is listening.
 */
export function kubernetesSecurity(options: {
  config: MetricsSecurity;
  connection: KubeConnection | undefined;
  /** Certificate common name: podmeter-agent, podmeter-operator. */
  commonName: string;
  /** More subjectAltNames for a self-signed certificate (the node name, the listen address). */
  names: readonly string[];
  log: Logger;
}): { tls: ServingTls; gate: KubernetesGate } {
  const { config, connection, log } = options;
  if (connection === undefined) {
    throw new ConfigError('--metrics-auth kubernetes needs a Kubernetes API to review tokens (--kubeconfig or an in-cluster service account); without one use --metrics-auth none', '--metrics-auth');
  }
  const tls = servingTls({ ...(config.tls ? { files: config.tls } : {}), commonName: options.commonName, names: options.names, log });
  log.info({ source: tls.source, fingerprint: tls.fingerprint }, 'HTTPS with Kubernetes token review: /healthz and /readyz open, every other path needs a bearer token allowed to get it');
  return { tls, gate: new KubernetesGate(new KubeApi(connection), log) };
}

const CHALLENGE = { 'www-authenticate': 'Bearer realm="podmeter"' };

export class KubernetesGate implements Gate {
  readonly #api: KubeApi;
  readonly #log: Logger;
  readonly #allowTtlMs: number;
  readonly #denyTtlMs: number;
  readonly #maxEntries: number;
  readonly #timeoutMs: number;
  /** key -> decision (undefined: allowed) and when it expires. */
  readonly #cache = new Map<string, { until: number; reply: Reply | undefined }>();
  readonly #pending = new Map<string, Promise<Reply | undefined>>();
  /** The API failed on the last review: logged once per outage, not per request. */
  #unreachable = false;

  constructor(api: KubeApi, log: Logger, options: GateOptions = {}) {
    this.#api = api;
    this.#log = log;
    this.#allowTtlMs = options.allowTtlMs ?? 60_000;
    this.#denyTtlMs = options.denyTtlMs ?? 10_000;
    this.#maxEntries = options.maxEntries ?? 4096;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
  }

  check(req: IncomingMessage, path: string): Reply | undefined | Promise<Reply | undefined> {
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) {
      return { ...text('Unauthorized: send Authorization: Bearer <token> (a Kubernetes token allowed to get this path)\n', 401), headers: CHALLENGE };
    }
    const key = `${createHash('sha256').update(token).digest('base64')} ${path}`;
    const cached = this.#cache.get(key);
    if (cached !== undefined && cached.until > Date.now()) return cached.reply;
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#decide(token, path, key).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  async #decide(token: string, path: string, key: string): Promise<Reply | undefined> {
    let reply: Reply | undefined;
    try {
      reply = await this.#review(token, path);
    } catch (err) {
      if (!this.#unreachable) this.#log.error({ err: describe(err) }, 'cannot review tokens with the Kubernetes API: answering 503 until it can');
      this.#unreachable = true;
      return text(`Service Unavailable: cannot check the token with the Kubernetes API (${describe(err)})\n`, 503);
    }
    if (this.#unreachable) this.#log.info('token reviews work again');
    this.#unreachable = false;
    this.#remember(key, reply);
    return reply;
  }

  async #review(token: string, path: string): Promise<Reply | undefined> {
    const opts = { timeoutMs: this.#timeoutMs };
    const review = await this.#api.request<TokenReview>('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      ...opts,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } },
    });
    const user = review.status?.user;
    if (review.status?.authenticated !== true || user === undefined) {
      const why = review.status?.error ? ` (${review.status.error})` : '';
      return { ...text(`Unauthorized: the token is not valid${why}\n`, 401), headers: CHALLENGE };
    }
    const asked = authorizationPath(path);
    const access = await this.#api.request<SubjectAccessReview>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
      ...opts,
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: { user: user.username, uid: user.uid, groups: user.groups, extra: user.extra, nonResourceAttributes: { path: asked, verb: 'get' } },
      },
    });
    if (access.status?.allowed === true) return undefined;
    const why = access.status?.reason || access.status?.evaluationError;
    const as = asked === path ? '' : ` (authorised as the non-resource URL ${asked})`;
    return text(`Forbidden: user "${user.username ?? ''}" may not get ${path}${as}${why ? ` (${why})` : ''}; grant it a ClusterRole with nonResourceURLs ["${asked}"], verbs ["get"]\n`, 403);
  }

  #remember(key: string, reply: Reply | undefined): void {
    const now = Date.now();
    if (this.#cache.size >= this.#maxEntries) {
      for (const [k, entry] of this.#cache) if (entry.until <= now) this.#cache.delete(k);
      // Still full: drop the oldest (a Map iterates in insertion order).
      for (const k of this.#cache.keys()) {
        if (this.#cache.size < this.#maxEntries) break;
        this.#cache.delete(k);
      }
    }
    this.#cache.delete(key); // re-inserted last: the oldest are dropped first
    this.#cache.set(key, { until: now + (reply === undefined ? this.#allowTtlMs : this.#denyTtlMs), reply });
  }
}

/**
 * The non-resource URL a request path is authorised as. Kubernetes' default
 * ClusterRole system:discovery lets every authenticated user get /api/* and
 * /apis/* (the apiserver's own discovery documents), so the agent's JSON API
 * under /api/v1/ would be open to any ServiceAccount token: it is authorised
 * as /podmeter/api/v1/..., which no default role grants. Other paths (/metrics,
 * /maps) are authorised as they are.
 */
export function authorizationPath(path: string): string {
  return /^\/apis?(\/|$)/.test(path) ? `/podmeter${path}` : path;
}

/** The token of `Authorization: Bearer <token>`, or undefined (no header, another scheme, empty). */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}
