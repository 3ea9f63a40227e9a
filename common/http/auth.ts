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
 *
 * Each uncached decision costs the API server a review, and a peer can send
 * a new random token with every request: reviews for tokens that were never
 * allowed here take a token from a bucket (tokenBucket.ts); with none left
 * the answer is 429 with Retry-After. A reader whose token was allowed (the
 * last `readerTtlMs`) is never limited, whatever the bucket holds.
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
import { TokenBucket } from './tokenBucket.ts';

export interface GateOptions {
  allowTtlMs?: number;
  denyTtlMs?: number;
  /** Cached decisions kept at most (oldest dropped first): bounds memory under a flood of distinct tokens. */
  maxEntries?: number;
  /** Per review request. */
  timeoutMs?: number;
  /** Reviews per second (after `reviewBurst` at once) for tokens never allowed here: what a token spray costs the API server. */
  reviewsPerSecond?: number;
  reviewBurst?: number;
  /** How long a token once allowed bypasses that limit. */
  readerTtlMs?: number;
}

interface TokenReview {
  status?: {
    authenticated?: boolean;
    error?: string;
    user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  };
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
    throw new ConfigError(
      '--metrics-auth kubernetes needs a Kubernetes API to review tokens (--kubeconfig or an in-cluster service account); without one use --metrics-auth none',
      '--metrics-auth',
    );
  }
  const tls = servingTls({
    ...(config.tls ? { files: config.tls } : {}),
    commonName: options.commonName,
    names: options.names,
    log,
  });
  log.info(
    { source: tls.source, fingerprint: tls.fingerprint },
    'HTTPS with Kubernetes token review: /healthz and /readyz open, every other path needs a bearer token allowed to get it',
  );
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
  /** SHA-256 of tokens allowed recently -> until when their reviews skip the bucket; bounded like the cache. */
  readonly #readers = new Map<string, number>();
  readonly #readerTtlMs: number;
  readonly #bucket: TokenBucket;
  /** The API failed on the last review: logged once per outage, not per request. */
  #unreachable = false;

  constructor(api: KubeApi, log: Logger, options: GateOptions = {}) {
    this.#api = api;
    this.#log = log;
    this.#allowTtlMs = options.allowTtlMs ?? 60_000;
    this.#denyTtlMs = options.denyTtlMs ?? 10_000;
    this.#maxEntries = options.maxEntries ?? 4096;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#readerTtlMs = options.readerTtlMs ?? 15 * 60_000;
    // A new reader's first scrapes (a few paths) fit in the burst; a spray gets 1 review a second.
    this.#bucket = new TokenBucket({ ratePerSecond: options.reviewsPerSecond ?? 1, burst: options.reviewBurst ?? 10 });
  }

  check(req: IncomingMessage, path: string): Reply | undefined | Promise<Reply | undefined> {
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) {
      return {
        ...text(
          'Unauthorized: send Authorization: Bearer <token> (a Kubernetes token allowed to get this path)\n',
          401,
        ),
        headers: CHALLENGE,
      };
    }
    const hash = createHash('sha256').update(token).digest('base64');
    const key = `${hash} ${path}`;
    const cached = this.#cache.get(key);
    if (cached !== undefined && cached.until > Date.now()) return cached.reply;
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      if (!this.#isReader(hash) && !this.#bucket.take()) {
        const retryAfter = Math.max(1, this.#bucket.retryAfterSeconds());
        return {
          ...text(`Too Many Requests: too many tokens not seen before; retry in ${retryAfter} s\n`, 429),
          headers: { 'retry-after': String(retryAfter) },
        };
      }
      pending = this.#decide(token, path, key, hash).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  #isReader(hash: string): boolean {
    const until = this.#readers.get(hash);
    return until !== undefined && until > Date.now();
  }

  async #decide(token: string, path: string, key: string, hash: string): Promise<Reply | undefined> {
    let reply: Reply | undefined;
    try {
      reply = await this.#review(token, path);
    } catch (err) {
      if (!this.#unreachable)
        this.#log.error(
          { err: describe(err) },
          'cannot review tokens with the Kubernetes API: answering 503 until it can',
        );
      this.#unreachable = true;
      return text(`Service Unavailable: cannot check the token with the Kubernetes API (${describe(err)})\n`, 503);
    }
    if (this.#unreachable) this.#log.info('token reviews work again');
    this.#unreachable = false;
    this.#remember(key, reply);
    if (reply === undefined) bounded(this.#readers, hash, Date.now() + this.#readerTtlMs, this.#maxEntries);
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
    const access = await this.#api.request<SubjectAccessReview>(
      'POST',
      '/apis/authorization.k8s.io/v1/subjectaccessreviews',
      {
        ...opts,
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: user.username,
            uid: user.uid,
            groups: user.groups,
            extra: user.extra,
            nonResourceAttributes: { path: asked, verb: 'get' },
          },
        },
      },
    );
    if (access.status?.allowed === true) return undefined;
    const why = access.status?.reason || access.status?.evaluationError;
    const as = asked === path ? '' : ` (authorised as the non-resource URL ${asked})`;
    return text(
      `Forbidden: user "${user.username ?? ''}" may not get ${path}${as}${why ? ` (${why})` : ''}; grant it a ClusterRole with nonResourceURLs ["${asked}"], verbs ["get"]\n`,
      403,
    );
  }

  #remember(key: string, reply: Reply | undefined): void {
    const until = Date.now() + (reply === undefined ? this.#allowTtlMs : this.#denyTtlMs);
    bounded(this.#cache, key, { until, reply }, this.#maxEntries);
  }
}

/** Sets `key` as the newest entry of `map`, first dropping expired entries, then the oldest, to stay under `max`. */
function bounded<V extends number | { until: number }>(map: Map<string, V>, key: string, value: V, max: number): void {
  const now = Date.now();
  if (map.size >= max) {
    for (const [k, v] of map) if ((typeof v === 'number' ? v : v.until) <= now) map.delete(k);
    // Still full: drop the oldest (a Map iterates in insertion order).
    for (const k of map.keys()) {
      if (map.size < max) break;
      map.delete(k);
    }
  }
  map.delete(key); // re-inserted last: the oldest are dropped first
  map.set(key, value);
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
