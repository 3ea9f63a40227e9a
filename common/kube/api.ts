/**
 * podmeter's one client for the Kubernetes API: JSON over node:https with
 * the connection's TLS and credentials (connection.ts), choosing the
 * response shape with an Accept header (PartialObjectMetadata, Table rows)
 * for lists and watches, and sending objects as plain JSON (Lease MicroTime
 * fields, CR status) without a model class in between. Paged lists are in
 * list.ts, list+watch in reflector.ts. An error status is an ApiError
 * (`.code` ERR_PODMETER_KUBE_API, the HTTP status as `.status`).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { ErrorCodes } from '../errors.ts';
import type { KubeConnection } from './connection.ts';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Only the metadata of each object (one list item, or one watch event object). */
export const ACCEPT_METADATA_LIST =
  'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json';
export const ACCEPT_METADATA = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json';
/** Server-side printed rows (kubectl's columns) with each object's metadata: how a metadata-only pod watch also learns the node. */
export const ACCEPT_TABLE = 'application/json;as=Table;g=meta.k8s.io;v=v1, application/json';

export class ApiError extends Error {
  readonly code = ErrorCodes.kubeApi;
  /** The HTTP status (404, 409, 410, ...). */
  readonly status: number;
  /** The Status object's reason ('NotFound', 'Conflict', 'Expired', ...). */
  readonly reason: string;
  /** The server's Retry-After (429, 503), in milliseconds: do not retry sooner. */
  readonly retryAfterMs: number | undefined;
  /** The fields the Status's causes name (422 Invalid: `status.checkpoint[3].ingressBytes`). */
  readonly fields: readonly string[];
  constructor(status: number, reason: string, message: string, retryAfterMs?: number, fields: readonly string[] = []) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
    this.fields = fields;
  }
}

/** How long to wait before retrying after `err`: the server's Retry-After when it gave one, else `backoffMs`. */
export function retryDelay(err: unknown, backoffMs: number): number {
  return err instanceof ApiError && err.retryAfterMs !== undefined ? Math.max(err.retryAfterMs, backoffMs) : backoffMs;
}

/** True when `err` is an API answer with one of these HTTP statuses. */
export function isStatus(err: unknown, ...statuses: number[]): err is ApiError {
  return err instanceof ApiError && statuses.includes(err.status);
}

/**
 * True when the API server refused this request for what it asked of this
 * one object (a 4xx other than 401, 403, 408 and 429: 400, 404, 409, 413,
 * 422, ...): the same request for another object may well succeed, so it is
 * the object's problem, not an outage. Credentials refused, a timeout, rate
 * limiting, 5xx and no answer at all are the API server's (or this client's).
 */
export function isRefusal(err: unknown): err is ApiError {
  return err instanceof ApiError && err.status >= 400 && err.status < 500 && ![401, 403, 408, 429].includes(err.status);
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion?: string; kind?: string; name?: string; uid?: string; controller?: boolean }[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [key: string]: unknown;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  accept?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KubeObject;
}

export class KubeApi {
  readonly #conn: KubeConnection;

  constructor(connection: KubeConnection) {
    this.#conn = connection;
  }

  get server(): string {
    return this.#conn.server;
  }

  async get<T = KubeObject>(path: string, opts: RequestOptions = {}): Promise<T> {
    return this.request<T>('GET', path, opts);
  }

  /** GET that answers undefined for 404. */
  async find<T = KubeObject>(path: string, opts: RequestOptions = {}): Promise<T | undefined> {
    try {
      return await this.get<T>(path, opts);
    } catch (err) {
      if (isStatus(err, 404)) return undefined;
      throw err;
    }
  }

  async request<T = KubeObject>(method: HttpMethod, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.#send(method, path, opts);
    const text = await readText(res);
    const status = res.statusCode ?? 0;
    if (status >= 400) throw apiError(status, text, method, path, res.headers['retry-after']);
    return (text === '' ? {} : JSON.parse(text)) as T;
  }

  /**
   * One watch connection: calls onEvent for each event until the server ends
   * the stream (resolves), the signal aborts (resolves), or the connection
   * fails (rejects). `idleMs` ends a silent connection (a stalled socket).
   */
  async watch(
    path: string,
    opts: RequestOptions & { idleMs: number },
    onEvent: (event: WatchEvent) => void,
  ): Promise<void> {
    const controller = new AbortController();
    const outer = opts.signal;
    const abort = () => controller.abort();
    outer?.addEventListener('abort', abort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(new Error(`watch ${path}: no data for ${opts.idleMs} ms`)), opts.idleMs);
      idle.unref();
    };
    try {
      touch();
      const res = await this.#send('GET', path, {
        ...opts,
        query: { ...opts.query, watch: true },
        signal: controller.signal,
      });
      const status = res.statusCode ?? 0;
      if (status >= 400) throw apiError(status, await readText(res), 'WATCH', path, res.headers['retry-after']);
      res.setEncoding('utf8');
      let buffered = '';
      for await (const chunk of res as AsyncIterable<string>) {
        touch();
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.trim() !== '') onEvent(JSON.parse(line) as WatchEvent);
        }
      }
    } catch (err) {
      if (outer?.aborted) return;
      if (controller.signal.aborted && controller.signal.reason instanceof Error) throw controller.signal.reason;
      throw err;
    } finally {
      clearTimeout(idle);
      outer?.removeEventListener('abort', abort);
      controller.abort();
    }
  }

  /** Sends one request; resolves with the response (its body unread) once the headers are in. */
  async #send(method: HttpMethod, path: string, opts: RequestOptions): Promise<IncomingMessage> {
    const url = new URL(this.#conn.server + path);
    for (const [key, value] of Object.entries(opts.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const { agent, headers } = await this.#conn.request();
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const timeout = opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs);
    const signals = [opts.signal, timeout].filter((s) => s !== undefined);
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, {
        method,
        agent,
        headers: {
          ...headers,
          Accept: opts.accept ?? 'application/json',
          ...(body === undefined
            ? {}
            : { 'Content-Type': opts.contentType ?? 'application/json', 'Content-Length': Buffer.byteLength(body) }),
        },
        ...(signal ? { signal } : {}),
      });
      req.once('response', resolve);
      req.once('error', (err) =>
        reject(
          timeout?.aborted
            ? Object.assign(new Error(`${method} ${path}: no answer within ${opts.timeoutMs} ms`, { cause: err }), {
                code: 'ETIMEDOUT',
              })
            : err,
        ),
      );
      req.end(body);
    });
  }
}

/** The whole body of a response as text. */
async function readText(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res as AsyncIterable<string>) text += chunk;
  return text;
}

function apiError(status: number, text: string, method: string, path: string, retryAfter?: string): ApiError {
  let reason = '';
  let message = text.slice(0, 500);
  let fields: string[] = [];
  try {
    const status = JSON.parse(text) as {
      reason?: string;
      message?: string;
      details?: { causes?: { field?: unknown }[] };
    };
    reason = status.reason ?? '';
    message = status.message ?? message;
    const causes = status.details?.causes;
    if (Array.isArray(causes)) fields = causes.map((c) => c?.field).filter((f): f is string => typeof f === 'string');
  } catch {
    // not a Status object
  }
  // Retry-After in seconds (the apiserver's form; an HTTP date is not used by it).
  const seconds = retryAfter !== undefined && /^\d+$/.test(retryAfter) ? Number(retryAfter) : undefined;
  return new ApiError(
    status,
    reason,
    `${method} ${path}: HTTP ${status}${reason ? ` ${reason}` : ''}: ${message}`,
    seconds === undefined ? undefined : seconds * 1000,
    fields,
  );
}

/** A short description of any error for logs. */
export function describe(err: unknown): string {
  if (err instanceof ApiError) return err.message.split('\n')[0] ?? err.message;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const cause = e?.cause ? ` (${e.cause.code ?? e.cause.message ?? ''})` : '';
  return `${e?.code ? `${e.code} ` : ''}${(e?.message ?? String(err)).split('\n')[0]}${cause}`;
}
