/**
 * What the HTTP server (server.ts) accepts of a peer: its limits, the
 * reasons it turns a request or connection away, and the checks of a
 * request's target, Host header and body.
 */
import type { IncomingMessage } from 'node:http';

export interface ServerLimits {
  /** The request line and headers must arrive within this (slow senders). */
  headersTimeoutMs: number;
  /** The whole request. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection with no bytes moving either way (a peer that stops reading its answer) is closed after this. */
  idleTimeoutMs: number;
  /** TLS only: the handshake must be done within this (node's default is 120 s). */
  handshakeTimeoutMs: number;
  /** Request line and headers, bytes: more is a 431. */
  maxHeaderSize: number;
  /** Requests on one keep-alive connection; then it is closed (bounds what one pipelining peer queues). */
  maxRequestsPerSocket: number;
  /** Connections at once from one peer address: more are closed at once. */
  maxConnectionsPerAddress: number;
  /** Connections at once in all: a new one then closes the oldest that has no request in progress. */
  maxConnections: number;
  /** After this many connections closed, malloc's free pages are given back to the kernel (common/memory.ts)... */
  trimAfterClosed: number;
  /** ...at most once in this time (a second after the connection that made the count at the earliest). */
  trimEveryMs: number;
}

/**
 * Prometheus and the kubelet send one small request per connection or per
 * keep-alive period; these leave them plenty and a slow or hostile peer
 * little. The kubelet probes from the node's address, never one pod's; a
 * connection that sends headers slowly costs about 14 KiB (measured), so
 * 512 cost about 7 MiB.
 */
export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  handshakeTimeoutMs: 10_000,
  maxHeaderSize: 16 * 1024,
  maxRequestsPerSocket: 100,
  maxConnectionsPerAddress: 64,
  maxConnections: 512,
  trimAfterClosed: 64,
  trimEveryMs: 2_000,
});

/** Why a request or connection was turned away: podmeter_http_rejected_total{reason}. */
export const REJECT_REASONS = [
  'malformed',
  'headers_too_large',
  'timeout',
  'method',
  'not_found',
  'unauthorized',
  'forbidden',
  'rate_limited',
  'auth_unavailable',
  'connections',
  'tls',
  'internal',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** Node's parser errors (the 'clientError' event) that have their own status; any other is a 400. */
export const CLIENT_ERROR_STATUS: Readonly<Record<string, number>> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/** A Gate's or the server's own status, as a reason. */
export const REASON_OF_STATUS: Readonly<Record<number, RejectReason>> = {
  400: 'malformed',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method',
  429: 'rate_limited',
  503: 'auth_unavailable',
};

/** Host header values (RFC 9110 uri-host [":" port]); anything else is a 400. */
const HOST = /^[A-Za-z0-9\-._~!$&'()*+,;=%:[\]]*$/;

/**
 * The request target as a URL, or why it is not one. Origin-form (`/path?q`)
 * is read against a fixed base, so `//x` stays a path (not a host); an
 * absolute-form target (`http://host/path`, which servers must accept) gives
 * its path. Percent-encoding is checked, not decoded: the Gate and the routes
 * see the same path.
 */
export function requestUrl(req: IncomingMessage): URL | string {
  const target = req.url ?? '';
  if (/%(?![0-9A-Fa-f]{2})/.test(target)) return 'bad percent-encoding in the request target';
  const url = target.startsWith('/')
    ? URL.parse(`http://agent${target}`)
    : /^https?:\/\//i.test(target)
      ? URL.parse(target)
      : null;
  return url ?? 'the request target is not a path (/...) nor an http URL';
}

/** Why the Host header is unacceptable, if it is: HTTP/1.1 needs exactly one, any version a well-formed one. */
export function hostError(req: IncomingMessage): string | undefined {
  const hosts = req.headersDistinct.host ?? [];
  if (hosts.length > 1) return 'more than one Host header';
  if (hosts.length === 0 && req.httpVersion !== '1.0') return 'no Host header';
  if (hosts.length === 1 && !HOST.test(hosts[0]!)) return 'a malformed Host header';
  return undefined;
}

/** Whether the request has a body (chunked, or a non-zero length). */
export function hasBody(req: IncomingMessage): boolean {
  return (
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')
  );
}
